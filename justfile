# Warden's tasks. Install `just` with `cargo install just --locked`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# The bundled plugins directory `just run` serves.
plugins_dir := "plugins"

default: check

# Run Warden in development mode on the bundled plugins (admin token: dev-token).
run *flags: infra-up
    cargo build --release -p warden
    if [ -f infra/local.env ]; then set -a; source infra/local.env; set +a; fi; \
    ./target/release/warden serve --dev --plugins-dir {{plugins_dir}} {{flags}}

# Start `nodes` Warden nodes of one cluster on the local stack (admin ports 8080…, public
# 8180…); Ctrl-C stops them all.
cluster nodes="3": infra-up
    cargo build --release -p warden
    bash infra/cluster.sh {{nodes}}

# Tansu runs on memory storage here: every test makes its own topics, and SQLite is far
# slower on bursts. Cargo builds the `warden` binary the end-to-end tests start.
# Start the local stack the tests use, then run every test.
test: (infra-up "memory")
    cargo test --workspace --lib --bins --tests

# Formatting, lints (warnings are errors) and every test.
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    just test

# Measure against DESIGN.md's targets; results go in BENCHMARKS.md by hand. The public
# listener's part runs wrk against Warden and against Node 20 (tests/benches/http/).
bench: (infra-up "memory")
    cargo build --release -p warden
    cargo bench -p warden-tests --bench warden
    bash tests/benches/http/bench.sh

# Only the public listener's benchmark (wrk; Node 20 side when node is installed).
bench-http: (infra-up "memory")
    cargo build --release -p warden
    bash tests/benches/http/bench.sh

# Tansu keeps its log on SQLite unless `storage` (or INFRA_TANSU_STORAGE) says memory.
# Start the local stack (PostgreSQL, Tansu, Garage) and write infra/local.env; safe to rerun.
infra-up storage=env_var_or_default("INFRA_TANSU_STORAGE", "sqlite"):
    INFRA_TANSU_STORAGE={{storage}} bash infra/up.sh

# Stop what infra-up started (never the machine's own PostgreSQL server).
infra-down:
    bash infra/down.sh

# Stop the local stack and delete its state and infra/local.env.
infra-reset:
    bash infra/reset.sh
