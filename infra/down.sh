#!/usr/bin/env bash
# Stop what infra/up.sh started: Tansu, Garage (pid files in infra/.state) and the private
# PostgreSQL cluster in infra/.state/postgres if up.sh created one. The machine's own PostgreSQL
# cluster is never stopped. Idempotent: does nothing for what is not running.
set -euo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="$INFRA_DIR/.state"
PG_DIR="$STATE/postgres"

log() { printf '[infra-down] %s\n' "$*"; }

# stop <name> <pidfile> <expected command name>
stop() {
    local name="$1" pidfile="$2" comm="$3" pid
    if [[ ! -f "$pidfile" ]]; then
        log "$name: not started by up.sh (no $pidfile)"
        return
    fi
    pid="$(cat "$pidfile")"
    if ! kill -0 "$pid" 2>/dev/null; then
        log "$name: pid $pid not running"
        rm -f "$pidfile"
        return
    fi
    # Guard against a recycled pid: only signal the process we started.
    if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$comm" ]]; then
        log "$name: pid $pid is not $comm any more; leaving it alone"
        rm -f "$pidfile"
        return
    fi
    log "$name: stopping pid $pid"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name: still running after 10s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    log "$name: stopped"
}

stop tansu "$STATE/tansu.pid" tansu
rm -f "$STATE/tansu.storage"
stop garage "$STATE/garage.pid" garage

if [[ -f "$PG_DIR/PG_VERSION" ]]; then
    bindir="/usr/lib/postgresql/$(cat "$PG_DIR/PG_VERSION")/bin"
    run() { if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    if run "$bindir/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1; then
        log "postgres: stopping the private cluster in $PG_DIR"
        run "$bindir/pg_ctl" -D "$PG_DIR" -m fast -w stop >/dev/null
        log "postgres: stopped"
    else
        log "postgres: private cluster not running"
    fi
else
    log "postgres: no private cluster (the machine's server, if any, is left running)"
fi
