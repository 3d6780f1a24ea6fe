#!/usr/bin/env bash
# The public listener's benchmark (`just bench`): wrk against a Warden plugin's routes and
# against Node 20's `http` module running the same handlers, one after the other, same machine,
# same connections. Needs `wrk` (apt-get install wrk); the Node side runs when `node` and `npm`
# are installed. Prints one line per measurement for BENCHMARKS.md.
#
#   bash tests/benches/http/bench.sh            (after `cargo build --release -p warden`)
#   WARDEN_HTTP_BENCH_SECONDS=10 (default) · WARDEN_HTTP_BENCH_CONNECTIONS=32 (default)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
SECONDS_PER_RUN="${WARDEN_HTTP_BENCH_SECONDS:-10}"
CONNECTIONS="${WARDEN_HTTP_BENCH_CONNECTIONS:-32}"
ADMIN_PORT=18080
WARDEN_PORT=18081
NODE_PORT=18091
# The plugin's share of connections and the Node pool are the same size.
POOL_SHARE=8

log() { printf '[bench-http] %s\n' "$*"; }

if ! command -v wrk >/dev/null; then
    log "wrk is not installed (apt-get install wrk): the public-listener benchmark is skipped"
    exit 0
fi
BINARY="${WARDEN_BIN:-$ROOT/target/release/warden}"
[[ -x "$BINARY" ]] || { log "no release binary at $BINARY: run cargo build --release -p warden"; exit 1; }
if [[ -f "$ROOT/infra/local.env" ]]; then set -a; source "$ROOT/infra/local.env"; set +a; fi

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/plugins"
cat > "$WORK/plugins/bench.js" <<'PLUGIN'
export default {
  metadata: { name: "bench", version: "1.0.0", allowedTables: ["points"] },
  routes: {
    "GET /hello": () => ({ json: { hello: "world" } }),
    "GET /points/:id": async function (request) {
      const rows = await this.context.database.executeQuery("SELECT id, value FROM points WHERE id = $1", [Number(request.params.id)]);
      return rows.length ? { json: rows[0] } : { status: 404, json: { error: "no such point" } };
    },
  },
  async initialize(context) {
    this.context = context;
    if (context.database) {
      await context.database.executeCommand("CREATE TABLE IF NOT EXISTS points (id int PRIMARY KEY, value text NOT NULL)");
      await context.database.executeCommand("INSERT INTO points SELECT n, 'value ' || n FROM generate_series(1, 1000) n ON CONFLICT DO NOTHING");
    }
  },
};
PLUGIN
cat > "$WORK/points.lua" <<'LUA'
request = function()
  return wrk.format(nil, "/api/bench/points/" .. math.random(1, 1000))
end
LUA

wait_for() { # url
    for _ in $(seq 1 300); do
        if curl -sf -o /dev/null "$1"; then return 0; fi
        sleep 0.1
    done
    log "nothing answered $1"; return 1
}

# wrk's requests/s and p99 latency for `url` (after a 2 s warm-up).
measure() { # label url [lua script]
    local label="$1" url="$2" script="${3:-}"
    local args=(-t2 "-c$CONNECTIONS" --latency)
    [[ -n "$script" ]] && args+=(-s "$script")
    wrk "${args[@]}" -d2s "$url" >/dev/null
    local out
    out="$(wrk "${args[@]}" "-d${SECONDS_PER_RUN}s" "$url")"
    local rps p99 errors
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    errors="$(grep -E 'Non-2xx|Socket errors' <<<"$out" || true)"
    printf '%-48s %12s req/s   p99 %8s  %s\n' "$label" "$rps" "$p99" "$errors"
}

log "warden: $BINARY on 127.0.0.1:$WARDEN_PORT, $CONNECTIONS connections, ${SECONDS_PER_RUN}s per run"
WARDEN_DATABASE_POOL_SIZE=$((POOL_SHARE * 4)) WARDEN_DATABASE_CONNECTIONS_PER_PLUGIN=$POOL_SHARE \
    "$BINARY" serve --dev --bind "127.0.0.1:$ADMIN_PORT" --http-bind "127.0.0.1:$WARDEN_PORT" \
    --plugins-dir "$WORK/plugins" 2>"$WORK/warden.log" &
PIDS+=($!)
wait_for "http://127.0.0.1:$WARDEN_PORT/api/bench/hello"
measure "warden: trivial JSON route" "http://127.0.0.1:$WARDEN_PORT/api/bench/hello"
if [[ -n "${WARDEN_DATABASE_URL:-}" ]]; then
    measure "warden: route with one primary-key SELECT" "http://127.0.0.1:$WARDEN_PORT/api/bench/points/1" "$WORK/points.lua"
fi
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true

if command -v node >/dev/null && command -v npm >/dev/null; then
    if [[ ! -d "$HERE/node_modules/pg" ]]; then
        (cd "$HERE" && npm install --no-audit --no-fund --silent >/dev/null)
    fi
    log "node $(node --version): http module on 127.0.0.1:$NODE_PORT, pg Pool of $POOL_SHARE"
    node "$HERE/node_server.mjs" "$NODE_PORT" "${WARDEN_DATABASE_URL:-}" "$POOL_SHARE" >"$WORK/node.log" 2>&1 &
    PIDS+=($!)
    wait_for "http://127.0.0.1:$NODE_PORT/api/bench/hello"
    measure "node: trivial JSON route" "http://127.0.0.1:$NODE_PORT/api/bench/hello"
    if [[ -n "${WARDEN_DATABASE_URL:-}" ]]; then
        measure "node: route with one primary-key SELECT" "http://127.0.0.1:$NODE_PORT/api/bench/points/1" "$WORK/points.lua"
    fi
else
    log "node or npm is not installed: the Node side is skipped"
fi
