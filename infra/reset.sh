#!/usr/bin/env bash
# Stop the local stack (infra/down.sh), then delete its state: infra/.state (Garage data and
# keys, Tansu's SQLite file, a private PostgreSQL cluster, logs) and infra/local.env. On the
# machine's own PostgreSQL server only the `warden` database (Warden's state and the plugins'
# tables) is dropped; the server and its other databases stay.
set -euo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    printf '[infra-reset] dropping database warden\n'
    psql -h 127.0.0.1 -U postgres -d postgres -qc 'DROP DATABASE IF EXISTS warden WITH (FORCE)' || true
fi
bash "$INFRA_DIR/down.sh"
printf '[infra-reset] deleting %s and %s\n' "$INFRA_DIR/.state" "$INFRA_DIR/local.env"
rm -rf "$INFRA_DIR/.state" "$INFRA_DIR/local.env"
