# Warden's tasks. Install `just` with `cargo install just --locked`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# The bundled plugins directory `just run` serves.
plugins_dir := "plugins"

default: check

# Run Warden in development mode on the bundled plugins (admin token: dev-token).
run *flags:
    cargo build --release -p warden
    if [ -f infra/local.env ]; then set -a; source infra/local.env; set +a; fi; \
    ./target/release/warden serve --dev --plugins-dir {{plugins_dir}} {{flags}}

# Build the binary the end-to-end tests drive, then run every test.
test:
    cargo build -p warden
    cargo test --workspace --all-targets

# Formatting, lints (warnings are errors) and every test.
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    just test

# Measure against DESIGN.md's targets; results go in BENCHMARKS.md by hand.
bench:
    cargo build --release -p warden
    cargo bench -p warden-tests --bench warden
