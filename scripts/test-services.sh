#!/usr/bin/env bash
# Starts and stops the real services Larder's tests talk to: PostgreSQL and a single-node
# Garage (S3). Everything listens on 127.0.0.1 only; what this script starts it stops by PID.
# Starting first runs scripts/provision.sh's larder_provision, which installs what is missing
# (nix, PostgreSQL, garage, and Chromium with tests/browser's npm packages for the dashboard's
# browser tests; on a fresh Debian machine, as root), so one command sets it all up.
#
# PostgreSQL: one that already answers on 127.0.0.1:5432, or whose cluster is already running
# (started by the machine, or by the package's postinst during provisioning), is used and
# never stopped. Only a cluster this script started itself (`pg_ctlcluster … start`) is
# stopped again by larder_services_stop.
#
# Usage:
#   source scripts/test-services.sh             # start, export TEST_*, stop on EXIT
#   source scripts/test-services.sh --no-start  # only define larder_services_start/_stop
#   scripts/test-services.sh start              # start and leave running; prints the exports
#                                               # (eval "$(scripts/test-services.sh start)")
#   scripts/test-services.sh stop [RUN_DIR]     # stop what `start` started (default:
#                                               # $TEST_SERVICES_RUN_DIR, set by the exports)
#
# Exported for the tests:
#   TEST_PG_URL                postgres://postgres@127.0.0.1:5432 (admin URL; tests
#                                     create and drop their own databases)
#   TEST_S3_ENDPOINT           http://127.0.0.1:<port> (path-style addressing)
#   TEST_S3_REGION             garage
#   TEST_S3_ACCESS_KEY_ID      key allowed to create buckets (tests make their own)
#   TEST_S3_SECRET_ACCESS_KEY
#   TEST_TRIXIE_NIX_ROOT       the Debian trixie chroot holding nix 2.26 (built once by
#                              larder_provision_nix_trixie; the tests run nix in it)
#
# Environment knobs: TEST_KEEP_SERVICES=1 keeps the run directory (Garage logs, data) on stop.

set -euo pipefail

LARDER_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LARDER_SERVICES_ROOT="$LARDER_REPO_ROOT/.test-services"

# Installation (larder_provision*) and the helpers both scripts use: _ts_log, _ts_die,
# _ts_have, _ts_port_open, _ts_pg_ready, _ts_pg_version, LARDER_PG_HOST/PORT. It only
# defines functions and variables.
# shellcheck source=SCRIPTDIR/provision.sh
source "$LARDER_REPO_ROOT/scripts/provision.sh"

# What this shell started (stopped by larder_services_stop).
TEST_SERVICES_RUN_DIR="${TEST_SERVICES_RUN_DIR:-}"
LARDER_SERVICES_GARAGE_PID="${LARDER_SERVICES_GARAGE_PID:-}"
LARDER_SERVICES_PG_PID="${LARDER_SERVICES_PG_PID:-}"

_ts_random_hex() { # number of bytes
    head -c "$1" /dev/urandom | od -An -tx1 -v | tr -d ' \n'
}

# Prints a free-looking port in 20000-59999 that is not in the arguments.
_ts_free_port() {
    local port tries=0
    while ((tries++ < 200)); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        [[ " $* " == *" $port "* ]] && continue
        _ts_port_open "$port" || { echo "$port"; return 0; }
    done
    _ts_die "no free port found"
}

# Prints the HTTP status code of GET http://127.0.0.1:$1$2 (empty on connection failure).
_ts_http_status() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$2" "$1" >&3
        IFS=' ' read -r -t 5 _ status _ <&3 || exit 1
        echo "$status"
    ) 2>/dev/null || true
}

_ts_pid_alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

# Sends SIG (default TERM) to PID and waits up to 20 s for it to exit, then SIGKILLs it.
_ts_stop_pid() {
    local pid=$1 sig=${2:-TERM} name=$3 i
    _ts_pid_alive "$pid" || return 0
    _ts_log "stopping $name (pid $pid)"
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        _ts_pid_alive "$pid" || break
        sleep 0.1
    done
    if _ts_pid_alive "$pid"; then
        _ts_log "$name (pid $pid) still running after 20 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------
# PostgreSQL (installed, and its pg_hba.conf rule added, by larder_provision_postgres)

# Prints the PID of PostgreSQL $1's cluster main, from its PID files (or nothing).
_ts_pg_pid() {
    local version=$1 data_dir pidfile pid
    data_dir=$(pg_lsclusters -h "$version" main 2>/dev/null | awk '{print $6}') || data_dir=""
    for pidfile in "/var/run/postgresql/$version-main.pid" \
        "${data_dir:-/var/lib/postgresql/$version/main}/postmaster.pid" \
        "/var/lib/postgresql/$version/main/postmaster.pid"; do
        [[ -r "$pidfile" ]] || continue
        pid=$(head -n1 "$pidfile")
        if [[ "$pid" =~ ^[0-9]+$ ]] && grep -q postgres "/proc/$pid/cmdline" 2>/dev/null; then
            echo "$pid"
            return 0
        fi
    done
}

# Makes PostgreSQL answer on $LARDER_PG_HOST:$LARDER_PG_PORT. Sets LARDER_SERVICES_PG_PID only
# if it started the cluster itself; a cluster that was already running is never recorded.
_ts_start_postgres() {
    LARDER_SERVICES_PG_PID=
    if _ts_pg_ready; then
        _ts_log "PostgreSQL already answers on $LARDER_PG_HOST:$LARDER_PG_PORT; it will be left running"
        return 0
    fi
    _ts_pg_installed || _ts_die "PostgreSQL does not answer on $LARDER_PG_HOST:$LARDER_PG_PORT and is not installed (bash scripts/provision.sh postgres)"
    local version started=
    version=$(_ts_pg_version)
    if pg_ctlcluster --skip-systemctl-redirect "$version" main status >/dev/null 2>&1; then
        # Running (e.g. started by the package's postinst) but not answering yet: not ours.
        _ts_log "PostgreSQL $version (cluster main) is running but not answering yet; waiting (it will be left running)"
    else
        _ts_log "starting PostgreSQL $version (cluster main)"
        if pg_ctlcluster --skip-systemctl-redirect "$version" main start; then
            started=1
        elif pg_ctlcluster --skip-systemctl-redirect "$version" main status >/dev/null 2>&1; then
            # Someone else started it in the meantime: not ours either.
            _ts_log "PostgreSQL $version (cluster main) was started by someone else meanwhile; it will be left running"
        else
            _ts_die "could not start PostgreSQL $version (cluster main)"
        fi
    fi
    local i
    for ((i = 0; i < 300; i++)); do
        _ts_pg_ready && break
        sleep 0.1
    done
    _ts_pg_ready || _ts_die "PostgreSQL did not become ready on $LARDER_PG_HOST:$LARDER_PG_PORT"
    [[ -n "$started" ]] || return 0
    LARDER_SERVICES_PG_PID=$(_ts_pg_pid "$version")
    if [[ -n "$LARDER_SERVICES_PG_PID" ]]; then
        _ts_log "PostgreSQL started (pid $LARDER_SERVICES_PG_PID); it will be stopped at the end"
    else
        _ts_log "warning: PostgreSQL's PID file not found; it will be left running"
    fi
}

_ts_check_postgres_login() {
    _ts_have psql || return 0
    if ! psql "postgres://postgres@$LARDER_PG_HOST:$LARDER_PG_PORT/postgres" -w -qAt -c 'select 1' >/dev/null 2>&1; then
        _ts_die "cannot log in as postgres on $LARDER_PG_HOST:$LARDER_PG_PORT without a password; add 'host all postgres 127.0.0.1/32 trust' to pg_hba.conf"
    fi
}

# ---------------------------------------------------------------------------------------
# Garage (built by larder_provision_garage)

# Starts one Garage node in $TEST_SERVICES_RUN_DIR/garage; sets the S3 variables.
_ts_start_garage() {
    local dir="$TEST_SERVICES_RUN_DIR/garage"
    local cfg="$dir/garage.toml" log="$dir/garage.log"
    local started_at=${EPOCHREALTIME/[.,]/} attempt rpc_port s3_port admin_port
    for attempt in 1 2 3; do
        rm -rf "$dir"
        mkdir -p "$dir/meta" "$dir/data"
        rpc_port=$(_ts_free_port)
        s3_port=$(_ts_free_port "$rpc_port")
        admin_port=$(_ts_free_port "$rpc_port" "$s3_port")
        cat >"$cfg" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(_ts_random_hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$(_ts_random_hex 32)"
TOML
        _ts_log "starting Garage (S3 on 127.0.0.1:$s3_port, rpc $rpc_port, admin $admin_port) in $dir"
        RUST_LOG="${TEST_GARAGE_LOG:-garage=info}" garage -c "$cfg" server >"$log" 2>&1 &
        LARDER_SERVICES_GARAGE_PID=$!
        echo "$LARDER_SERVICES_GARAGE_PID" >"$dir/garage.pid"

        # Wait for the node's RPC to answer (bounded: 30 s). `node id` alone only reads the
        # node key from disk; `status` needs the running server.
        local node="" i
        for ((i = 0; i < 300; i++)); do
            _ts_pid_alive "$LARDER_SERVICES_GARAGE_PID" || break
            if garage -c "$cfg" status >/dev/null 2>&1; then
                node=$(garage -c "$cfg" node id -q 2>/dev/null | cut -d@ -f1) || node=""
                [[ -n "$node" ]] && break
            fi
            sleep 0.1
        done
        if [[ -n "$node" ]]; then
            break
        fi
        _ts_log "Garage did not start (attempt $attempt); log tail:"
        tail -n 20 "$log" >&2 || true
        _ts_stop_pid "$LARDER_SERVICES_GARAGE_PID" TERM garage
        LARDER_SERVICES_GARAGE_PID=
        ((attempt < 3)) || _ts_die "Garage failed to start 3 times"
    done

    garage -c "$cfg" layout assign -z dc1 -c 1G "$node" >/dev/null
    garage -c "$cfg" layout apply --version 1 >/dev/null

    # Wait until the cluster reports healthy and the S3 API answers (bounded: 60 s).
    local health="" s3=""
    for ((i = 0; i < 600; i++)); do
        _ts_pid_alive "$LARDER_SERVICES_GARAGE_PID" || break
        health=$(_ts_http_status "$admin_port" /health)
        s3=$(_ts_http_status "$s3_port" /)
        [[ "$health" == 200 && -n "$s3" ]] && break
        sleep 0.1
    done
    if [[ "$health" != 200 || -z "$s3" ]]; then
        tail -n 30 "$log" >&2 || true
        _ts_die "Garage did not become healthy (admin /health: '${health}', S3: '${s3}')"
    fi

    local key_id secret
    key_id="GK$(_ts_random_hex 12)"
    secret=$(_ts_random_hex 32)
    garage -c "$cfg" key import --yes -n larder-tests "$key_id" "$secret" >/dev/null
    garage -c "$cfg" key allow --create-bucket "$key_id" >/dev/null

    export TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
    export TEST_S3_REGION=garage
    export TEST_S3_ACCESS_KEY_ID="$key_id"
    export TEST_S3_SECRET_ACCESS_KEY="$secret"
    local elapsed_ms=$(((${EPOCHREALTIME/[.,]/} - started_at) / 1000))
    _ts_log "Garage ready in ${elapsed_ms} ms (pid $LARDER_SERVICES_GARAGE_PID, $TEST_S3_ENDPOINT)"
}

# ---------------------------------------------------------------------------------------
# Public entry points

larder_services_start() {
    local run=$TEST_SERVICES_RUN_DIR
    if [[ -n "$run" && -r "$run/env" && -r "$run/garage/garage.pid" ]] &&
        _ts_pid_alive "$(cat "$run/garage/garage.pid")"; then
        _ts_log "services already running from $run"
        # shellcheck disable=SC1091
        source "$run/env"
        return 0
    fi
    TEST_SERVICES_RUN_DIR="$LARDER_SERVICES_ROOT/run-$$-$(_ts_random_hex 3)"
    mkdir -p "$TEST_SERVICES_RUN_DIR"
    export TEST_SERVICES_RUN_DIR

    # Install what is missing (scripts/provision.sh); starts nothing itself.
    larder_provision

    _ts_start_postgres
    # Recorded (and so stopped by larder_services_stop) only if this run started the cluster.
    [[ -z "$LARDER_SERVICES_PG_PID" ]] || echo "$LARDER_SERVICES_PG_PID" >"$TEST_SERVICES_RUN_DIR/postgres.pid"
    _ts_check_postgres_login
    export TEST_PG_URL="postgres://postgres@$LARDER_PG_HOST:$LARDER_PG_PORT"

    _ts_cargo_bin_on_path
    _ts_have garage || _ts_die "garage not found (bash scripts/provision.sh garage)"
    _ts_start_garage

    export TEST_TRIXIE_NIX_ROOT="$LARDER_TRIXIE_NIX_ROOT"

    {
        echo "export TEST_SERVICES_RUN_DIR='$TEST_SERVICES_RUN_DIR'"
        echo "export TEST_PG_URL='$TEST_PG_URL'"
        echo "export TEST_S3_ENDPOINT='$TEST_S3_ENDPOINT'"
        echo "export TEST_S3_REGION='$TEST_S3_REGION'"
        echo "export TEST_S3_ACCESS_KEY_ID='$TEST_S3_ACCESS_KEY_ID'"
        echo "export TEST_S3_SECRET_ACCESS_KEY='$TEST_S3_SECRET_ACCESS_KEY'"
        echo "export TEST_TRIXIE_NIX_ROOT='$TEST_TRIXIE_NIX_ROOT'"
    } >"$TEST_SERVICES_RUN_DIR/env"
}

# Stops what a run started (this shell's run by default), by the PIDs it recorded.
larder_services_stop() {
    local dir=${1:-$TEST_SERVICES_RUN_DIR}
    [[ -n "$dir" && -d "$dir" ]] || return 0
    local garage_pid="" pg_pid=""
    [[ -r "$dir/garage/garage.pid" ]] && garage_pid=$(cat "$dir/garage/garage.pid")
    [[ -r "$dir/postgres.pid" ]] && pg_pid=$(cat "$dir/postgres.pid")
    # Only signal a PID that is still the process we started.
    if [[ -n "$garage_pid" ]] && grep -q garage "/proc/$garage_pid/cmdline" 2>/dev/null; then
        _ts_stop_pid "$garage_pid" TERM garage
    fi
    if [[ -n "$pg_pid" ]] && grep -q postgres "/proc/$pg_pid/cmdline" 2>/dev/null; then
        _ts_stop_pid "$pg_pid" INT postgres # fast shutdown
    fi
    if [[ "${TEST_KEEP_SERVICES:-}" == 1 ]]; then
        _ts_log "keeping $dir (TEST_KEEP_SERVICES=1)"
    else
        rm -rf "$dir"
    fi
    if [[ "$dir" == "$TEST_SERVICES_RUN_DIR" ]]; then
        TEST_SERVICES_RUN_DIR='' LARDER_SERVICES_GARAGE_PID='' LARDER_SERVICES_PG_PID=
    fi
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    # Sourced.
    if [[ "${1:-}" != "--no-start" ]]; then
        trap larder_services_stop EXIT
        larder_services_start
    fi
else
    case "${1:-}" in
    start)
        # On a failed start, stop whatever did start; on success leave it running.
        trap 'rc=$?; ((rc == 0)) || larder_services_stop' EXIT
        larder_services_start
        _ts_log "services left running; stop them with: $0 stop $TEST_SERVICES_RUN_DIR"
        cat "$TEST_SERVICES_RUN_DIR/env"
        ;;
    stop)
        dir=${2:-$TEST_SERVICES_RUN_DIR}
        if [[ -z "$dir" ]]; then
            echo "usage: $0 stop RUN_DIR   (the directory printed by '$0 start')" >&2
            exit 2
        fi
        larder_services_stop "$dir"
        ;;
    *)
        echo "usage: $0 start|stop [RUN_DIR]   (or source it)" >&2
        exit 2
        ;;
    esac
fi
