#!/usr/bin/env bash
# Start Warden's local stack on loopback and write infra/local.env.
#
#   PostgreSQL  127.0.0.1:5432  (a server that answers, else the Debian cluster, else a private one)
#   Tansu       127.0.0.1:9092  (Kafka protocol, durable SQLite storage; INFRA_TANSU_STORAGE=memory:
#                               fast, keeps nothing; `just test` and `just bench` ask for it)
#   Garage      127.0.0.1:3900  (S3 API; RPC 3901, admin 3903)
#
# Idempotent: whatever already answers is left alone (except a Tansu this script started on
# the other storage, which is restarted on the one asked for), so it is safe to run again while
# the stack runs (`just infra-up`, `just run`). Installs what is missing (tansu and garage with
# `cargo install`, Debian packages with apt-get). State and logs live in infra/.state/.
set -euo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="$INFRA_DIR/.state"
ENV_FILE="$INFRA_DIR/local.env"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$CARGO_BIN:$PATH"

PG_HOST=127.0.0.1
PG_PORT=5432
PG_DB=warden
PG_USER=warden                    # Warden's own user: no superuser, CREATEROLE
PG_DIR="$STATE/postgres"          # private cluster (only when the machine has none)
PG_SOCK="$STATE/postgres-socket"
PG_LOG="$STATE/postgres.log"

# libsql: the durable SQLite storage engine (INFRA_TANSU_STORAGE=sqlite, and the local_stack test).
TANSU_FEATURES=dynostore,libsql
TANSU_INSTALL=(tansu --locked --features "$TANSU_FEATURES")
TANSU_ADDR=127.0.0.1:9092
TANSU_DIR="$STATE/tansu"
# sqlite (the default: keeps topics, messages, groups and offsets across a restart; about 70
# times slower on the cluster's event bursts) or memory (fast, loses everything on a restart);
# infra/README.md "Kafka that keeps its messages".
TANSU_STORAGE_KIND="${INFRA_TANSU_STORAGE:-sqlite}"
case "$TANSU_STORAGE_KIND" in
    # Tansu reads a sqlite:// path relative to its working directory: it is started in TANSU_DIR.
    sqlite) TANSU_STORAGE="sqlite://tansu.db" ;;
    memory) TANSU_STORAGE="memory://tansu/" ;;
    *) printf '[infra-up] error: INFRA_TANSU_STORAGE must be memory or sqlite, not %s\n' "$TANSU_STORAGE_KIND" >&2; exit 1 ;;
esac
TANSU_LOG="$STATE/tansu.log"
TANSU_PID="$STATE/tansu.pid"
# The storage the Tansu this script started runs on.
TANSU_STORAGE_RECORD="$STATE/tansu.storage"

GARAGE_INSTALL=(garage@2.5.0 --locked)
GARAGE_DIR="$STATE/garage"
GARAGE_CONF="$GARAGE_DIR/garage.toml"
GARAGE_LOG="$STATE/garage.log"
GARAGE_PID="$STATE/garage.pid"
GARAGE_S3_PORT=3900
GARAGE_ADMIN_PORT=3903
GARAGE_REGION=garage
GARAGE_KEY=warden

WAIT_SECONDS="${INFRA_WAIT_SECONDS:-60}"

log() { printf '[infra-up] %s\n' "$*"; }
die() { printf '[infra-up] error: %s\n' "$*" >&2; exit 1; }

# Print the end of a log and fail.
fail_with_log() {
    local what="$1" logfile="$2"
    printf '[infra-up] error: %s\n' "$what" >&2
    if [[ -f "$logfile" ]]; then
        printf '[infra-up] last lines of %s:\n' "$logfile" >&2
        tail -n 40 "$logfile" >&2 || true
    fi
    exit 1
}

port_open() { # host port
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

pid_alive() { # pidfile
    # A killed process whose parent is gone may linger as a zombie: that is not alive.
    [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null &&
        [[ "$(awk '{print $3}' "/proc/$(cat "$1")/stat" 2>/dev/null)" != Z ]]
}

# wait_for <description> <logfile> <command...>: poll until the command succeeds.
wait_for() {
    local what="$1" logfile="$2"
    shift 2
    local deadline=$((SECONDS + WAIT_SECONDS))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            fail_with_log "$what did not answer within ${WAIT_SECONDS}s" "$logfile"
        fi
        sleep 1
    done
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

APT_UPDATED=0
apt_install() {
    if ((APT_UPDATED == 0)); then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# Whether cargo's install record says the crate was installed with every one of these features.
installed_with_features() { # crate comma-separated-features
    local record="${CARGO_HOME:-$HOME/.cargo}/.crates2.json"
    [[ -f "$record" ]] || return 1
    python3 - "$record" "$1" "$2" <<'PY'
import json, sys
record, crate, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
installs = json.load(open(record)).get("installs", {})
ok = any(key.split(" ")[0] == crate and wanted <= set(info.get("features", []))
         for key, info in installs.items())
sys.exit(0 if ok else 1)
PY
}

# A tansu installed before the SQLite storage was chosen lacks the libsql engine: reinstall it.
ensure_tansu_features() {
    if command -v tansu >/dev/null && ! installed_with_features tansu "$TANSU_FEATURES"; then
        log "tansu: installed without features $TANSU_FEATURES; reinstalling"
        cargo install --force "${TANSU_INSTALL[@]}"
    fi
}

# Install a cargo binary unless it exists; if another process is installing it, wait for that.
ensure_cargo_bin() { # binary crate-args...
    local bin="$1"
    shift
    if command -v "$bin" >/dev/null; then
        log "$bin: found $(command -v "$bin")"
        return
    fi
    if pgrep -f "cargo install $bin" >/dev/null; then
        log "$bin: another 'cargo install $bin' is running; waiting for $CARGO_BIN/$bin"
        while [[ ! -x "$CARGO_BIN/$bin" ]] && pgrep -f "cargo install $bin" >/dev/null; do
            sleep 10
        done
        if [[ -x "$CARGO_BIN/$bin" ]]; then
            log "$bin: installed by the other process"
            return
        fi
        log "$bin: the other install ended without a binary; installing it here"
    fi
    command -v cargo >/dev/null || die "cargo not found (install Rust with rustup), needed for $bin"
    log "$bin: cargo install $* (takes several minutes the first time)"
    cargo install "$@"
    command -v "$bin" >/dev/null || die "$bin still missing after cargo install"
}

# ---------------------------------------------------------------- PostgreSQL

ensure_pg_client() {
    if ! command -v pg_isready >/dev/null || ! command -v psql >/dev/null; then
        apt_install postgresql-client
    fi
}

pg_answers() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

# Directory holding initdb/pg_ctl of the newest installed server, or nothing.
pg_bindir() {
    local dirs=(/usr/lib/postgresql/*/bin/pg_ctl)
    [[ -x "${dirs[0]}" ]] || return 0
    printf '%s\n' "${dirs[@]%/pg_ctl}" | sort -V | tail -n 1
}

# Version of the machine's (Debian) cluster "main", or nothing.
debian_cluster() {
    local confs=(/etc/postgresql/*/main/postgresql.conf)
    [[ -f "${confs[0]}" ]] || return 0
    local version="${confs[0]#/etc/postgresql/}"
    printf '%s\n' "${version%%/*}"
}

# Run a server command as the database owner (initdb and postgres refuse to run as root).
as_pg_owner() {
    if [[ $EUID -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_private_pg() {
    local bindir
    bindir="$(pg_bindir)"
    if [[ -z "$bindir" ]]; then
        # Keep Debian's package from creating (and starting) its own cluster on 5432.
        if [[ ! -f /etc/postgresql-common/createcluster.conf ]]; then
            apt_install postgresql-common
        fi
        if ! grep -q '^create_main_cluster *= *false' /etc/postgresql-common/createcluster.conf; then
            log "setting create_main_cluster = false in /etc/postgresql-common/createcluster.conf"
            as_root sed -i -E 's/^#? *create_main_cluster *=.*/create_main_cluster = false/' \
                /etc/postgresql-common/createcluster.conf
        fi
        apt_install postgresql
        bindir="$(pg_bindir)"
        [[ -n "$bindir" ]] || die "postgresql installed but no server binaries found"
    fi
    mkdir -p "$PG_SOCK"
    if [[ $EUID -eq 0 ]]; then
        mkdir -p "$PG_DIR"
        chown postgres: "$PG_DIR" "$PG_SOCK"
        chmod 700 "$PG_DIR"
    fi
    if [[ ! -f "$PG_DIR/PG_VERSION" ]]; then
        log "postgres: initdb private cluster in $PG_DIR (user postgres, trust auth)"
        as_pg_owner "$bindir/initdb" -D "$PG_DIR" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    touch "$PG_LOG"
    if [[ $EUID -eq 0 ]]; then
        chown postgres: "$PG_LOG"
    fi
    log "postgres: starting private cluster on $PG_HOST:$PG_PORT (log $PG_LOG)"
    as_pg_owner "$bindir/pg_ctl" -D "$PG_DIR" -l "$PG_LOG" -w -t "$WAIT_SECONDS" \
        -o "-c listen_addresses=$PG_HOST -c port=$PG_PORT -c unix_socket_directories=$PG_SOCK" \
        start 9>&- || fail_with_log "private PostgreSQL cluster did not start" "$PG_LOG"
}

up_postgres() {
    ensure_pg_client
    if pg_answers; then
        log "postgres: $PG_HOST:$PG_PORT answers; using it"
    elif [[ -f "$PG_DIR/PG_VERSION" ]]; then
        start_private_pg
    elif [[ -n "$(debian_cluster)" ]]; then
        local version
        version="$(debian_cluster)"
        log "postgres: starting the machine's cluster: pg_ctlcluster $version main start"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 9>&- ||
            fail_with_log "pg_ctlcluster $version main start failed" \
                "/var/log/postgresql/postgresql-$version-main.log"
    else
        start_private_pg
    fi
    wait_for "PostgreSQL on $PG_HOST:$PG_PORT" "$PG_LOG" pg_answers

    local psql=(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -Atq)
    local exists
    exists="$("${psql[@]}" -c "select 1 from pg_database where datname = '$PG_DB'")" ||
        die "cannot connect as postgres to $PG_HOST:$PG_PORT (the local stack expects trust auth)"
    if [[ "$exists" != 1 ]]; then
        log "postgres: create database $PG_DB"
        "${psql[@]}" -c "create database $PG_DB"
    else
        log "postgres: database $PG_DB exists"
    fi
    ensure_warden_user
}

# Warden connects as a non-superuser with CREATEROLE (each plugin gets a login role of its own),
# owning its database and the public schema; objects an earlier superuser-run Warden left in them
# are handed over, so nothing in the plugin path belongs to a superuser.
ensure_warden_user() {
    local psql=(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -Atq)
    if [[ "$("${psql[@]}" -d postgres -c "select 1 from pg_roles where rolname = '$PG_USER'")" != 1 ]]; then
        log "postgres: create role $PG_USER (login, createrole, no superuser)"
        "${psql[@]}" -d postgres -c "create role $PG_USER login createrole nosuperuser"
    fi
    "${psql[@]}" -d postgres -c "alter role $PG_USER with login createrole nosuperuser nocreatedb"
    # Warden's state lives in the schema `warden`, which "\$user" in the default search_path
    # would put first: plugin tables live in public, for Warden's user as for plugins.
    "${psql[@]}" -d postgres -c "alter role $PG_USER set search_path = public"
    "${psql[@]}" -d postgres -c "alter database $PG_DB owner to $PG_USER"
    "${psql[@]}" -d "$PG_DB" -c "alter schema public owner to $PG_USER"
    "${psql[@]}" -d "$PG_DB" <<SQL
do \$\$
declare item record;
begin
    if exists (select 1 from pg_namespace where nspname = 'warden') then
        alter schema warden owner to $PG_USER;
    end if;
    for item in
        select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname in ('public', 'warden') and c.relkind in ('r', 'p')
          and pg_get_userbyid(c.relowner) = 'postgres'
    loop
        execute format('alter table %I.%I owner to $PG_USER', item.nspname, item.relname);
    end loop;
end
\$\$;
SQL
    log "postgres: Warden connects as $PG_USER (createrole, no superuser)"
}

# ---------------------------------------------------------------- Tansu

tansu_answers() { port_open "${TANSU_ADDR%:*}" "${TANSU_ADDR#*:}"; }

# Stops the Tansu this script started (the pid file names it), and waits for its port to close.
stop_tansu() {
    local pid
    pid="$(cat "$TANSU_PID")"
    # Only the process this script started: a recycled pid is left alone.
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == tansu ]] || die "tansu: pid $pid is not tansu; stop it by hand"
    kill "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + WAIT_SECONDS))
    while kill -0 "$pid" 2>/dev/null || tansu_answers; do
        ((SECONDS < deadline)) || die "tansu: pid $pid did not stop within ${WAIT_SECONDS}s"
        sleep 0.2
    done
    rm -f "$TANSU_PID" "$TANSU_STORAGE_RECORD"
}

up_tansu() {
    if tansu_answers; then
        local running
        running="$(cat "$TANSU_STORAGE_RECORD" 2>/dev/null || true)"
        if ! pid_alive "$TANSU_PID" || [[ "$running" == "$TANSU_STORAGE_KIND" ]]; then
            log "tansu: $TANSU_ADDR answers; using it"
            return
        fi
        log "tansu: pid $(cat "$TANSU_PID") runs on ${running:-an unrecorded} storage; restarting it on $TANSU_STORAGE_KIND"
        stop_tansu
    fi
    if pid_alive "$TANSU_PID"; then
        log "tansu: pid $(cat "$TANSU_PID") is starting; waiting"
    else
        mkdir -p "$TANSU_DIR"
        log "tansu: starting broker on $TANSU_ADDR (storage $TANSU_STORAGE in $TANSU_DIR, log $TANSU_LOG)"
        printf '\n=== %s infra/up.sh starts tansu\n' "$(date -Is)" >>"$TANSU_LOG"
        (cd "$TANSU_DIR" && exec setsid nohup tansu broker \
            --listener-url "tcp://$TANSU_ADDR" \
            --advertised-listener-url "tcp://$TANSU_ADDR" \
            --storage-engine "$TANSU_STORAGE") \
            >>"$TANSU_LOG" 2>&1 </dev/null 9>&- &
        echo $! >"$TANSU_PID"
        echo "$TANSU_STORAGE_KIND" >"$TANSU_STORAGE_RECORD"
    fi
    local deadline=$((SECONDS + WAIT_SECONDS))
    until tansu_answers; do
        pid_alive "$TANSU_PID" || fail_with_log "tansu exited" "$TANSU_LOG"
        ((SECONDS < deadline)) || fail_with_log "tansu did not answer within ${WAIT_SECONDS}s" "$TANSU_LOG"
        sleep 1
    done
    log "tansu: answers on $TANSU_ADDR (pid $(cat "$TANSU_PID"))"
}

# A Kafka API round trip (metadata), beyond the TCP connect.
check_kafka_api() {
    wait_for "Kafka API on $TANSU_ADDR (tansu topic list)" "$TANSU_LOG" \
        timeout 10 tansu topic list --broker "tcp://$TANSU_ADDR"
    log "tansu: Kafka API answers (tansu topic list)"
}

# ---------------------------------------------------------------- Garage

garage_cli() { garage -c "$GARAGE_CONF" "$@"; }

write_garage_config() {
    mkdir -p "$GARAGE_DIR/meta" "$GARAGE_DIR/data"
    chmod 700 "$GARAGE_DIR"
    if [[ ! -s "$GARAGE_DIR/rpc_secret" ]]; then
        log "garage: generating rpc_secret"
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$GARAGE_DIR/rpc_secret")
    fi
    # The admin API token Warden uses to give each plugin its own S3 key.
    if [[ ! -s "$GARAGE_DIR/admin_token" ]]; then
        log "garage: generating admin_token"
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$GARAGE_DIR/admin_token")
    fi
    local tmp="$GARAGE_CONF.tmp"
    (umask 077 && cat >"$tmp" <<EOF
# Written by infra/up.sh; edits are overwritten.
metadata_dir = "$GARAGE_DIR/meta"
data_dir = "$GARAGE_DIR/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$(cat "$GARAGE_DIR/rpc_secret")"

[s3_api]
s3_region = "$GARAGE_REGION"
api_bind_addr = "127.0.0.1:$GARAGE_S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$GARAGE_ADMIN_PORT"
admin_token = "$(cat "$GARAGE_DIR/admin_token")"
EOF
    )
    GARAGE_CONF_CHANGED=0
    if cmp -s "$tmp" "$GARAGE_CONF"; then
        rm -f "$tmp"
    else
        log "garage: writing $GARAGE_CONF"
        mv "$tmp" "$GARAGE_CONF"
        GARAGE_CONF_CHANGED=1
    fi
}

# A Garage that up.sh started before its configuration changed (an earlier up.sh wrote no
# admin_token) reads the new one only when it starts again.
restart_garage_if_config_changed() {
    ((GARAGE_CONF_CHANGED)) || return 0
    pid_alive "$GARAGE_PID" || return 0
    log "garage: configuration changed; restarting pid $(cat "$GARAGE_PID")"
    kill "$(cat "$GARAGE_PID")" 2>/dev/null || true
    local deadline=$((SECONDS + WAIT_SECONDS))
    while pid_alive "$GARAGE_PID"; do
        ((SECONDS < deadline)) || fail_with_log "garage did not stop within ${WAIT_SECONDS}s" "$GARAGE_LOG"
        sleep 0.2
    done
    rm -f "$GARAGE_PID"
}

garage_answers() { garage_cli status >/dev/null 2>&1; }

up_garage() {
    write_garage_config
    restart_garage_if_config_changed
    if garage_answers; then
        log "garage: node answers; using it"
    else
        if pid_alive "$GARAGE_PID"; then
            log "garage: pid $(cat "$GARAGE_PID") is starting; waiting"
        else
            # Another checkout's Garage holds the ports; its keys live in that checkout's state.
            if port_open 127.0.0.1 "$GARAGE_S3_PORT"; then
                die "garage: 127.0.0.1:$GARAGE_S3_PORT answers, but not with this checkout's state ($GARAGE_DIR); stop the other stack (just infra-down in its checkout) first"
            fi
            log "garage: starting server (S3 127.0.0.1:$GARAGE_S3_PORT, log $GARAGE_LOG)"
            printf '\n=== %s infra/up.sh starts garage\n' "$(date -Is)" >>"$GARAGE_LOG"
            RUST_LOG="${RUST_LOG:-garage=info}" setsid nohup garage -c "$GARAGE_CONF" server \
                >>"$GARAGE_LOG" 2>&1 </dev/null 9>&- &
            echo $! >"$GARAGE_PID"
        fi
        local deadline=$((SECONDS + WAIT_SECONDS))
        until garage_answers; do
            pid_alive "$GARAGE_PID" || fail_with_log "garage exited" "$GARAGE_LOG"
            ((SECONDS < deadline)) || fail_with_log "garage did not answer within ${WAIT_SECONDS}s" "$GARAGE_LOG"
            sleep 1
        done
        log "garage: node answers (pid $(cat "$GARAGE_PID"))"
    fi

    # No role yet (or assigned but not applied when an earlier run was interrupted).
    if garage_cli status 2>/dev/null | grep -q -E 'NO ROLE ASSIGNED|pending\.\.\.'; then
        local node version
        node="$(garage_cli node id -q 2>/dev/null | cut -d@ -f1)" || true
        [[ -n "$node" ]] || fail_with_log "cannot read the garage node id" "$GARAGE_LOG"
        version="$(garage_cli layout show 2>/dev/null |
            sed -n -E 's/.*[Cc]urrent cluster layout version: *([0-9]+).*/\1/p' | head -n 1)" || true
        version=$((${version:-0} + 1))
        log "garage: layout assign -z dc1 -c 1G ${node:0:16}…; layout apply --version $version"
        garage_cli layout assign -z dc1 -c 1G "$node" >/dev/null
        garage_cli layout apply --version "$version" >/dev/null
    else
        log "garage: layout has a role for this node"
    fi

    if ! garage_cli key info "$GARAGE_KEY" >/dev/null 2>&1; then
        log "garage: key create $GARAGE_KEY"
        garage_cli key create "$GARAGE_KEY" >/dev/null
    else
        log "garage: key $GARAGE_KEY exists"
    fi
    garage_cli key allow --create-bucket "$GARAGE_KEY" >/dev/null

    local info
    info="$(garage_cli key info "$GARAGE_KEY" --show-secret)"
    S3_ACCESS_KEY="$(awk -F': *' 'tolower($1) == "key id" { print $2; exit }' <<<"$info" | tr -d ' ')"
    S3_SECRET_KEY="$(awk -F': *' 'tolower($1) == "secret key" { print $2; exit }' <<<"$info" | tr -d ' ')"
    if [[ -z "$S3_ACCESS_KEY" || -z "$S3_SECRET_KEY" ]]; then
        printf '%s\n' "$info" | sed -E 's/^(Secret key: *).*/\1<hidden>/I' >&2
        die "could not read the key id and secret from 'garage key info $GARAGE_KEY --show-secret'"
    fi

    # /health (admin API, no token) is 200 once the node can serve S3 requests.
    if command -v curl >/dev/null; then
        wait_for "Garage health (http://127.0.0.1:$GARAGE_ADMIN_PORT/health)" "$GARAGE_LOG" \
            curl -fsS "http://127.0.0.1:$GARAGE_ADMIN_PORT/health"
    fi
    wait_for "Garage S3 API on 127.0.0.1:$GARAGE_S3_PORT" "$GARAGE_LOG" port_open 127.0.0.1 "$GARAGE_S3_PORT"
    log "garage: S3 API answers on 127.0.0.1:$GARAGE_S3_PORT"
}

# ---------------------------------------------------------------- main

write_env() {
    local tmp="$ENV_FILE.tmp"
    cat >"$tmp" <<EOF
# Written by infra/up.sh: the local stack for \`warden serve\` (sourced by \`just run\`).
# No ksqlDB in the local stack: WARDEN_KSQLDB_URL is left unset.
WARDEN_DATABASE_URL=postgres://$PG_USER@$PG_HOST:$PG_PORT/$PG_DB
WARDEN_KAFKA_BROKERS=$TANSU_ADDR
WARDEN_S3_ENDPOINT=http://127.0.0.1:$GARAGE_S3_PORT
WARDEN_S3_REGION=$GARAGE_REGION
WARDEN_S3_ACCESS_KEY=$S3_ACCESS_KEY
WARDEN_S3_SECRET_KEY=$S3_SECRET_KEY
WARDEN_S3_ADMIN_URL=http://127.0.0.1:$GARAGE_ADMIN_PORT
WARDEN_S3_ADMIN_TOKEN=$(cat "$GARAGE_DIR/admin_token")
EOF
    mv "$tmp" "$ENV_FILE"
    log "wrote $ENV_FILE"
}

main() {
    mkdir -p "$STATE"
    # One up.sh at a time; fd 9 is closed for every service started below.
    exec 9>"$STATE/up.lock"
    if ! flock -n 9; then
        log "another infra/up.sh is running; waiting for it"
        flock 9
    fi

    up_postgres
    ensure_cargo_bin tansu "${TANSU_INSTALL[@]}"
    ensure_tansu_features
    up_tansu
    check_kafka_api
    ensure_cargo_bin garage "${GARAGE_INSTALL[@]}"
    up_garage
    write_env
    log "ready: postgres $PG_HOST:$PG_PORT/$PG_DB, kafka $TANSU_ADDR, s3 http://127.0.0.1:$GARAGE_S3_PORT"
}

# One line, read whole before it runs: editing this file during a run is harmless.
main "$@"; exit
