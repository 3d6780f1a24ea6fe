#!/usr/bin/env bash
# Start N Warden nodes of one cluster ("local") on the local stack, in the foreground; Ctrl-C
# stops them all.
#
#   node-1  admin 127.0.0.1:8080  public 127.0.0.1:8180  plugins/ (loaded with --load-all)
#   node-2  admin 127.0.0.1:8081  public 127.0.0.1:8181  an empty directory of its own
#   …
#
# Every node runs what the cluster recorded, so node-2 and the others serve the bundled
# plugins too. The binary is $WARDEN_BIN, else target/release/warden (`just cluster` builds it).
set -euo pipefail

NODES="${1:-3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BINARY="${WARDEN_BIN:-$ROOT/target/release/warden}"
STATE="$ROOT/infra/.state/cluster"

[[ "$NODES" =~ ^[1-9][0-9]?$ ]] || { echo "usage: cluster.sh <nodes, 1 to 99>" >&2; exit 2; }
[[ -x "$BINARY" ]] || { echo "no warden binary at $BINARY: run \`just cluster\`" >&2; exit 1; }
[[ -f "$ROOT/infra/local.env" ]] || { echo "infra/local.env is missing: run \`just infra-up\`" >&2; exit 1; }
set -a
# shellcheck disable=SC1091
source "$ROOT/infra/local.env"
set +a

pids=()
stop() {
    trap - INT TERM EXIT
    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
}
trap stop INT TERM EXIT

for ((node = 1; node <= NODES; node++)); do
    admin=$((8079 + node))
    public=$((8179 + node))
    if ((node == 1)); then
        plugins="$ROOT/plugins"
        scan=(--load-all)
    else
        plugins="$STATE/node-$node/plugins"
        mkdir -p "$plugins"
        scan=(--no-load-all)
    fi
    "$BINARY" serve --dev --cluster local --node-id "node-$node" \
        --bind "127.0.0.1:$admin" --http-bind "127.0.0.1:$public" \
        --plugins-dir "$plugins" "${scan[@]}" &
    pids+=($!)
    echo "[cluster] node-$node: admin http://127.0.0.1:$admin, public http://127.0.0.1:$public"
done
# Until Ctrl-C, or until any node exits.
wait -n "${pids[@]}"
