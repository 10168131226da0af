#!/usr/bin/env bash
# Fuzzes a real larder-server's /api/v1 against openapi.yaml with Schemathesis: no answer
# may be a 5xx, and every answer's status, content type, headers and body must be the ones
# the spec documents for that operation.
#
#   bash scripts/schemathesis.sh
#
# Builds and starts target/debug/larder-server (cargo build -p larder-api --bins) on a free
# 127.0.0.1 port with the embedded defaults (SQLite + filesystem) in a temporary data
# directory, seeds two accounts with caches and tokens so that the API is exercised beyond
# 401s, runs Schemathesis five times (anonymous, with a cache token, with a session, and
# the two destructive operations with sessions of a second account; see "the runs"
# below), and always stops the server by its PID.
# Exits non-zero if a run found a failure or could not run.
#
# Environment knobs:
#   SCHEMATHESIS_MAX_EXAMPLES  examples per operation and phase (default 20)
#   SCHEMATHESIS_SEED          fixed Hypothesis seed, to replay a run
#   SCHEMATHESIS_KEEP=1        keep the work directory: server log, data, and a VCR
#                                     cassette of every request and response of each run
#   SCHEMATHESIS_NO_BUILD=1    use target/debug/larder-server as it is (no cargo build)
#   SCHEMATHESIS_DATABASE_URL  an empty database for the server instead of SQLite,
#                                     e.g. postgres://postgres@127.0.0.1:5432/st (must exist)
#
# Schemathesis is installed from PyPI (pinned) into target/schemathesis-venv when missing.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

SCHEMATHESIS_VERSION=4.32.5
# Cargo's target directory (CARGO_TARGET_DIR when set, as cargo itself reads it).
target="${CARGO_TARGET_DIR:-$repo/target}"
venv="$target/schemathesis-venv"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-20}"

say() { printf '\n==> %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# ---- tools ------------------------------------------------------------------------------

if ! "$venv/bin/st" --version 2>/dev/null | grep -qF "version $SCHEMATHESIS_VERSION"; then
    say "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    command -v python3 >/dev/null || die "python3 is needed for schemathesis"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
py="$venv/bin/python"
command -v curl >/dev/null || die "curl is needed"

server_bin="$target/debug/larder-server"
# Built unless the caller just did (scripts/test.sh sets SCHEMATHESIS_NO_BUILD=1), so
# that a stale binary is never the one tested; a no-op when it is up to date.
if [[ "${SCHEMATHESIS_NO_BUILD:-}" != 1 || ! -x "$server_bin" ]]; then
    build_args=(build -p larder-api --bins)
    [[ -f Cargo.lock ]] && build_args+=(--locked)
    say "cargo ${build_args[*]}"
    cargo "${build_args[@]}"
fi

# ---- the server -------------------------------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/larder-schemathesis.XXXXXX")
server_pid=
cleanup() {
    local rc=$?
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ "${SCHEMATHESIS_KEEP:-}" == 1 ]]; then
        say "kept $work"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log_filter='info,sqlx=warn'
server_env=(PATH="$PATH" HOME="${HOME:-/root}" LARDER_DATA_DIR="$work/data" LARDER_LISTEN=127.0.0.1:0
    LARDER_LOG_FORMAT=json RUST_LOG="$log_filter")
database="SQLite"
if [[ -n "${SCHEMATHESIS_DATABASE_URL:-}" ]]; then
    server_env+=(LARDER_DATABASE_URL="$SCHEMATHESIS_DATABASE_URL")
    database="$SCHEMATHESIS_DATABASE_URL"
fi
say "starting larder-server ($database, NARs in $work/data)"
# A clean environment, so that no LARDER_* setting of the caller changes the server.
env -i "${server_env[@]}" "$server_bin" serve --port-file "$work/port" >"$work/server.log" 2>&1 &
server_pid=$!

port=
for _ in $(seq 1 300); do
    port=$(cat "$work/port" 2>/dev/null || true)
    [[ -n "$port" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; die "larder-server exited at start"; }
    sleep 0.1
done
[[ -n "$port" ]] || { cat "$work/server.log" >&2; die "larder-server did not report its port within 30 s"; }
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$base/readyz" 2>/dev/null && break
    sleep 0.1
done
curl -fsS -o /dev/null "$base/readyz" || die "$base/readyz does not answer 200"
say "larder-server (PID $server_pid) ready at $base"

# ---- seed data --------------------------------------------------------------------------

# api METHOD PATH EXPECTED_STATUS [JSON_BODY] [TOKEN]: prints the response body.
api() {
    local method=$1 path=$2 expected=$3 body=${4:-} token=${5:-}
    local args=(-sS -o "$work/response" -w '%{http_code}' -X "$method")
    [[ -n "$body" ]] && args+=(-H 'Content-Type: application/json' --data "$body")
    [[ -n "$token" ]] && args+=(-H "Authorization: Bearer $token")
    local status
    status=$(curl "${args[@]}" "$base/api/v1$path")
    if [[ "$status" != "$expected" ]]; then
        die "seeding: $method $path answered $status, expected $expected: $(cat "$work/response")"
    fi
    cat "$work/response"
}
json_field() { "$py" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

say "seeding accounts, caches and tokens"
# The spec's examples name the account alice, the password below and the cache demo, so
# the seeds use them: the examples then hit real data (the POST /sessions example logs in,
# the PATCH and DELETE /caches/demo examples act on a real cache, the PUT
# /account/password example knows the current password).
password='correct horse battery staple'
# owner: the caches and tokens the runs work on.
api POST /accounts 201 '{"username": "owner", "email": "owner@example.com", "password": "'"$password"'"}' >/dev/null
owner_session=$(api POST /sessions 201 '{"username": "owner", "password": "'"$password"'"}' | json_field token)
api POST /caches 201 '{"name": "demo", "public": true, "description": "a public cache"}' "$owner_session" >/dev/null
api POST /caches 201 '{"name": "private-demo", "public": false, "priority": 30}' "$owner_session" >/dev/null
demo_read_token=$(api POST /tokens 201 '{"kind": "cache", "cache": "demo", "permission": "read"}' "$owner_session" | json_field token)
api POST /tokens 201 '{"kind": "personal", "caches": ["private-demo"], "permission": "write", "expires_in": 3600}' "$owner_session" >/dev/null
# alice: the account the destructive operations end (runs 4 and 5), with two sessions.
api POST /accounts 201 '{"username": "alice", "email": "alice@example.com", "password": "'"$password"'"}' >/dev/null
alice_session=$(api POST /sessions 201 '{"username": "alice", "password": "'"$password"'"}' | json_field token)
alice_other_session=$(api POST /sessions 201 '{"username": "alice", "password": "'"$password"'"}' | json_field token)
api POST /caches 201 '{"name": "alices-cache", "public": false}' "$alice_session" >/dev/null
# All seeding logins happen before the runs: fuzzing POST /sessions uses up the login rate
# limit (30 a minute per client address), and 429 is a documented answer there.

# ---- the runs ---------------------------------------------------------------------------

# One worker: with several, Hypothesis's lambda introspection (ast.parse in threads) trips
# "SystemError: AST constructor recursion depth mismatch" on some CPython 3.11 builds, and a
# run takes well under a minute anyway.
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
st_args=(run "$repo/openapi.yaml" --url "$base" --checks "$checks" --max-examples "$max_examples"
    --workers 1 --request-timeout 30 --suppress-health-check all)
[[ -n "${SCHEMATHESIS_SEED:-}" ]] && st_args+=(--seed "$SCHEMATHESIS_SEED")
# For runs whose 401s and 403s are the point: every warning but "only 401/403 responses".
warnings_but_missing_auth='missing_test_data,base_url_mismatch,validation_mismatch,missing_deserializer,unused_openapi_auth,unsupported_regex,method_not_allowed,unresolvable_reference,unmatched_filter'
expected_refusals=(--warnings "$warnings_but_missing_auth")

failed=()
runs=0
# run NAME [ST_ARGS...]: one Schemathesis run, from the work directory (Hypothesis keeps
# its example database in the current directory), bounded to 10 minutes.
run() {
    local name=$1
    shift
    say "schemathesis run $((runs + 1)): $name"
    local rc=0 report=()
    runs=$((runs + 1))
    [[ "${SCHEMATHESIS_KEEP:-}" == 1 ]] && report=(--report vcr --report-dir "$work/report-$runs")
    (cd "$work" && timeout 600 "$venv/bin/st" "${st_args[@]}" "${report[@]}" "$@") || rc=$?
    if ((rc != 0)); then
        failed+=("run $runs, $name (exit code $rc)")
    fi
}

# 1. Without a token: the 401s, signing up, logging in, and the public cache demo.
run "anonymous, all operations" "${expected_refusals[@]}"
# 2. With a cache token (read, demo): 403 on the account routes and on changing demo.
run "cache token (read on demo), all operations" -H "Authorization: Bearer $demo_read_token" "${expected_refusals[@]}"
# 3. As owner, every operation but the two that would end the session mid-run: DELETE
#    /account and DELETE /sessions/current (any successful call revokes the session or
#    deletes the account). Runs 4 and 5 cover those.
run "owner's session, all operations but deleteAccount and logOut" \
    -H "Authorization: Bearer $owner_session" --exclude-operation-id deleteAccount --exclude-operation-id logOut
# 4, 5. The destructive operations, each with its own session of alice (whom the spec's
#    DELETE /account example names): the first call ends the session, the example deletes
#    the account; after that they answer 401, which is documented too.
run "alice's session, logOut" -H "Authorization: Bearer $alice_session" --include-operation-id logOut
run "alice's other session, deleteAccount" -H "Authorization: Bearer $alice_other_session" --include-operation-id deleteAccount

# ---- the verdict ------------------------------------------------------------------------

if grep -q '"request failed"' "$work/server.log"; then
    say "the server logged internal errors:"
    grep '"request failed"' "$work/server.log" | head -n 20 >&2
    failed+=("internal errors in the server log")
fi
if ((${#failed[@]} > 0)); then
    say "schemathesis FAILED: ${failed[*]}"
    exit 1
fi
say "schemathesis passed: no server error, every answer as openapi.yaml documents it"
