#!/usr/bin/env bash
# Starts a production-shaped Larder stack on 127.0.0.1 and keeps it up until Ctrl-C:
#   - a fresh database larder_stack_<random> on the local PostgreSQL (127.0.0.1:5432),
#   - a single-node Garage (S3) with one bucket, via scripts/test-services.sh,
#   - TWO `larder-server serve` nodes on two ports sharing that database, that bucket and
#     the same master key and token secret (as nodes behind a load balancer would).
# On exit (Ctrl-C, SIGTERM, or a failed start) it stops what it started, by PID, drops the
# database and removes its run directory (TEST_KEEP_SERVICES=1 keeps the directory, logs).
#
# Usage: infra/run-stack.sh [--ports PORT1,PORT2] [--bin PATH] [--config FILE]
#   --ports   ports of the two nodes (default: two free ports)
#   --bin     the larder-server binary (default: the newer of target/{release,debug}/
#             larder-server; built with `cargo build -p larder-api` when neither exists)
#   --config  a TOML settings file passed to both nodes (the stack's LARDER_* win over it)
#
# The nodes get only the LARDER_* settings this script sets (any LARDER_* variable in the
# caller's environment is removed from theirs: the server rejects unknown LARDER_* keys).
# The same settings are written to <run dir>/stack/stack.env, and <run dir>/stack/larder-server
# runs the server binary with them (for `… admin create-cache`, `… admin create-token`).

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

PORT1="" PORT2="" BIN="" CONFIG=""
while (($#)); do
    case "$1" in
    --ports) [[ $# -ge 2 && "$2" =~ ^[0-9]+,[0-9]+$ ]] || usage; PORT1=${2%,*} PORT2=${2#*,}; shift 2 ;;
    --bin) [[ $# -ge 2 ]] || usage; BIN=$2; shift 2 ;;
    --config) [[ $# -ge 2 ]] || usage; CONFIG=$(realpath "$2"); shift 2 ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
    esac
done

# Always start our own services, never adopt (and later stop) another shell's.
unset TEST_SERVICES_RUN_DIR LARDER_SERVICES_GARAGE_PID LARDER_SERVICES_PG_PID
# shellcheck source=SCRIPTDIR/../scripts/test-services.sh
source "$REPO_ROOT/scripts/test-services.sh" --no-start

log() { printf '[run-stack] %s\n' "$*" >&2; }

for port in $PORT1 $PORT2; do # checked again right before the nodes start
    if _ts_port_open "$port"; then log "port $port is already in use"; exit 1; fi
done

PG_ADMIN_URL="postgres://postgres@127.0.0.1:5432"
DB_NAME="" DB_CREATED="" STACK_DIR="" NODE_PIDS=() CLEANED=""

cleanup() {
    local rc=$?
    [[ -z "$CLEANED" ]] || return 0
    CLEANED=1
    trap '' INT TERM
    set +e
    log "shutting down"
    local i
    for i in "${!NODE_PIDS[@]}"; do
        _ts_stop_pid "${NODE_PIDS[$i]}" TERM "larder node $((i + 1))"
    done
    if [[ -n "$DB_CREATED" ]]; then
        log "dropping database $DB_NAME"
        psql "$PG_ADMIN_URL/postgres" -w -qAt -v ON_ERROR_STOP=1 \
            -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null ||
            log "warning: could not drop database $DB_NAME"
    fi
    larder_services_stop # Garage (and PostgreSQL only if it was started for this run)
    log "stopped"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the server binary -------------------------------------------------------------------
if [[ -z "$BIN" ]]; then
    for candidate in "$REPO_ROOT/target/release/larder-server" "$REPO_ROOT/target/debug/larder-server"; do
        [[ -x "$candidate" ]] || continue
        if [[ -z "$BIN" || "$candidate" -nt "$BIN" ]]; then BIN=$candidate; fi
    done
    if [[ -z "$BIN" ]]; then
        log "no larder-server binary in target/: cargo build -p larder-api"
        (cd "$REPO_ROOT" && cargo build -p larder-api >&2)
        BIN="$REPO_ROOT/target/debug/larder-server"
    fi
fi
[[ -x "$BIN" ]] || { log "not an executable: $BIN"; exit 1; }
BIN=$(realpath "$BIN")
log "server binary: $BIN"

# --- PostgreSQL + Garage -----------------------------------------------------------------
larder_services_start
STACK_DIR="$TEST_SERVICES_RUN_DIR/stack"
mkdir -p "$STACK_DIR"
GARAGE_CFG="$TEST_SERVICES_RUN_DIR/garage/garage.toml"

DB_NAME="larder_stack_$(openssl rand -hex 4)"
psql "$PG_ADMIN_URL/postgres" -w -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$DB_NAME\"" >/dev/null
DB_CREATED=1
log "created database $DB_NAME"

BUCKET="larder-stack"
garage -c "$GARAGE_CFG" bucket create "$BUCKET" >/dev/null
garage -c "$GARAGE_CFG" bucket allow --read --write --owner "$BUCKET" --key "$TEST_S3_ACCESS_KEY_ID" >/dev/null
log "created bucket $BUCKET"

# --- the shared settings -----------------------------------------------------------------
STACK_ENV="$STACK_DIR/stack.env"
(
    umask 077
    cat >"$STACK_ENV" <<ENV
LARDER_DATABASE_URL=$PG_ADMIN_URL/$DB_NAME
LARDER_STORAGE=s3
LARDER_S3_ENDPOINT=$TEST_S3_ENDPOINT
LARDER_S3_BUCKET=$BUCKET
LARDER_S3_REGION=$TEST_S3_REGION
LARDER_S3_PATH_STYLE=true
LARDER_S3_ACCESS_KEY_ID=$TEST_S3_ACCESS_KEY_ID
LARDER_S3_SECRET_ACCESS_KEY=$TEST_S3_SECRET_ACCESS_KEY
LARDER_MASTER_KEY=$(openssl rand -hex 32)
LARDER_TOKEN_SECRET=$(openssl rand -hex 32)
LARDER_DATA_DIR=$STACK_DIR/admin
ENV
)

# A wrapper that runs larder-server with exactly the stack's settings: it drops every LARDER_*
# variable of its caller, then loads stack.env; NODE_LISTEN and NODE_DATA_DIR, when set,
# override listen and data_dir. It execs the server, so a background start's $! is the
# server's own PID.
LARDER="$STACK_DIR/larder-server"
{
    echo '#!/usr/bin/env bash'
    echo "# larder-server with the settings of the stack in $TEST_SERVICES_RUN_DIR"
    cat <<'WRAPPER'
set -euo pipefail
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^LARDER_' || true)
set -a
WRAPPER
    printf 'source %q\n' "$STACK_ENV"
    cat <<'WRAPPER'
set +a
[[ -z "${NODE_LISTEN:-}" ]] || export LARDER_LISTEN="$NODE_LISTEN"
[[ -z "${NODE_DATA_DIR:-}" ]] || export LARDER_DATA_DIR="$NODE_DATA_DIR"
WRAPPER
    printf 'exec %q' "$BIN"
    [[ -z "$CONFIG" ]] || printf ' --config %q' "$CONFIG"
    printf ' "$@"\n'
} >"$LARDER"
chmod 0700 "$LARDER"

# Migrate once, before the nodes start.
"$LARDER" migrate >"$STACK_DIR/migrate.log" 2>&1 || { cat "$STACK_DIR/migrate.log" >&2; exit 1; }

# --- two server nodes --------------------------------------------------------------------
[[ -n "$PORT1" ]] || PORT1=$(_ts_free_port)
[[ -n "$PORT2" ]] || PORT2=$(_ts_free_port "$PORT1")
PORTS=("$PORT1" "$PORT2")
for port in "${PORTS[@]}"; do
    if _ts_port_open "$port"; then log "port $port is already in use"; exit 1; fi
done

for i in 0 1; do
    n=$((i + 1))
    mkdir -p "$STACK_DIR/node$n"
    NODE_LISTEN="127.0.0.1:${PORTS[$i]}" NODE_DATA_DIR="$STACK_DIR/node$n/data" \
        "$LARDER" serve >"$STACK_DIR/node$n/server.log" 2>&1 &
    NODE_PIDS+=("$!")
    log "started larder node $n on 127.0.0.1:${PORTS[$i]} (pid $!, log $STACK_DIR/node$n/server.log)"
done

# Wait until both answer /readyz (database and storage reachable), bounded: 60 s.
for i in 0 1; do
    ready=""
    for ((t = 0; t < 600; t++)); do
        _ts_pid_alive "${NODE_PIDS[$i]}" || break
        if [[ "$(_ts_http_status "${PORTS[$i]}" /readyz)" == 200 ]]; then ready=1; break; fi
        sleep 0.1
    done
    if [[ -z "$ready" ]]; then
        log "larder node $((i + 1)) did not become ready; log tail:"
        tail -n 30 "$STACK_DIR/node$((i + 1))/server.log" >&2 || true
        exit 1
    fi
done

URL1="http://127.0.0.1:$PORT1" URL2="http://127.0.0.1:$PORT2"
cat <<INFO

Larder stack is up (run directory $TEST_SERVICES_RUN_DIR):
  node 1     $URL1      (log $STACK_DIR/node1/server.log)
  node 2     $URL2      (log $STACK_DIR/node2/server.log)
  database   $PG_ADMIN_URL/$DB_NAME
  S3         $TEST_S3_ENDPOINT, bucket $BUCKET (Garage, path-style)
  settings   $STACK_ENV  (LARDER_* of both nodes)
  server     $BIN

Create a cache and a write token ($LARDER = larder-server with the nodes' settings):
  $LARDER admin create-cache demo
  $LARDER admin create-token --cache demo --perm write

Push to node 1, read from node 2 (the token in a netrc file named by nix's netrc-file):
  echo "machine 127.0.0.1 login x password <token>" >> <netrc file>
  nix copy --to '$URL1/demo' /nix/store/…
  curl -u x:<token> $URL2/demo/<hash>.narinfo
  curl -H 'Authorization: Bearer <token>' $URL2/api/v1/caches/demo

Press Ctrl-C to stop everything (nodes and Garage stopped, database dropped).
INFO

# Wait for Ctrl-C / SIGTERM; exit early if a node dies.
while :; do
    for i in 0 1; do
        if ! _ts_pid_alive "${NODE_PIDS[$i]}"; then
            log "larder node $((i + 1)) exited unexpectedly; log tail:"
            tail -n 30 "$STACK_DIR/node$((i + 1))/server.log" >&2 || true
            exit 1
        fi
    done
    sleep 1 &
    wait $! || true
done
