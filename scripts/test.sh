#!/usr/bin/env bash
# Runs Larder's whole test suite against real services (nix, PostgreSQL, Garage S3).
#
#   bash scripts/test.sh                      # cargo test --workspace [--locked]
#   bash scripts/test.sh -- --nocapture       # extra arguments go to cargo test
#   bash scripts/test.sh -p larder-tests --test storage_backends
#                                             # with -p/--package, only those packages
#
# Checks formatting (cargo fmt) and lints (clippy, warnings denied), starts the services
# (scripts/test-services.sh, installing what is missing), always stops what it started, checks
# the API contract with schemathesis (scripts/schemathesis.sh); exits non-zero if any fails.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\n==> %s\n' "$*" >&2; }

# Habits first, before anything is installed or started: a formatting slip or a clippy
# warning fails the run in seconds. SKIP_LINTS=1 skips them (local iteration only).
if [[ "${SKIP_LINTS:-}" != 1 ]]; then
    say "cargo fmt --all --check"
    cargo fmt --all --check
    lint_args=(clippy --workspace --all-targets)
    [[ -f Cargo.lock ]] && lint_args+=(--locked)
    say "cargo ${lint_args[*]} -- -D warnings"
    cargo "${lint_args[@]}" -- -D warnings
fi

# shellcheck source=scripts/test-services.sh
source scripts/test-services.sh --no-start

services_ready=
on_exit() {
    local rc=$?
    if [[ -z "$services_ready" ]]; then
        say "could not start the test services (exit code $rc); see the messages above"
    fi
    say "stopping test services"
    larder_services_stop || true
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting test services (nix, PostgreSQL, Garage)"
larder_services_start
services_ready=1
say "services ready:
    TEST_PG_URL=$TEST_PG_URL
    TEST_S3_ENDPOINT=$TEST_S3_ENDPOINT
    TEST_S3_REGION=$TEST_S3_REGION
    TEST_S3_ACCESS_KEY_ID=$TEST_S3_ACCESS_KEY_ID"

cargo_args=(test)
[[ -f Cargo.lock ]] && cargo_args+=(--locked)
select_packages=
for arg in "$@"; do
    [[ "$arg" == -- ]] && break
    case "$arg" in
    -p | --package | --package=* | -p*) select_packages=1 ;;
    esac
done
[[ -n "$select_packages" ]] || cargo_args+=(--workspace)
cargo_args+=("$@")

# The e2e tests run the real larder-server and larder binaries; cargo test does not build
# them for another package's tests.
build_args=(build -p larder-api -p larder-cli --bins)
[[ -f Cargo.lock ]] && build_args+=(--locked)
say "cargo ${build_args[*]}"
cargo "${build_args[@]}"

say "cargo ${cargo_args[*]}"
cargo_log=$(mktemp)
set +e
cargo "${cargo_args[@]}" 2>&1 | tee "$cargo_log"
rc=${PIPESTATUS[0]}
set -e
# Every test binary's closing line, added up, for the summary at the very end.
read -r tests_passed tests_failed < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$cargo_log")
rm -f "$cargo_log"

# ---- BEGIN schemathesis block: the API contract (openapi.yaml) against the real server ----
# Only after cargo test passed; its failure fails this script. SKIP_SCHEMATHESIS=1 skips it.
if ((rc == 0)) && [[ "${SKIP_SCHEMATHESIS:-}" != 1 ]]; then
    say "bash scripts/schemathesis.sh (SQLite)"
    set +e
    SCHEMATHESIS_NO_BUILD=1 bash scripts/schemathesis.sh
    rc=$?
    set -e
    # And on Postgres, which refuses some strings SQLite keeps (e.g. NUL bytes).
    if ((rc == 0)); then
        schemathesis_db="larder_schemathesis_$RANDOM$RANDOM"
        psql -q "$TEST_PG_URL/postgres" -c "CREATE DATABASE $schemathesis_db"
        say "bash scripts/schemathesis.sh (Postgres)"
        set +e
        SCHEMATHESIS_NO_BUILD=1 SCHEMATHESIS_DATABASE_URL="$TEST_PG_URL/$schemathesis_db" \
            bash scripts/schemathesis.sh
        rc=$?
        set -e
        psql -q "$TEST_PG_URL/postgres" -c "DROP DATABASE IF EXISTS $schemathesis_db WITH (FORCE)" || true
    fi
fi
# ---- END schemathesis block ----

if ((rc == 0)); then
    say "tests passed"
else
    say "tests FAILED (exit code $rc; see above whether cargo test or schemathesis)"
fi
# The closing line: what cargo test ran (schemathesis reports above).
echo "cargo-test: $tests_passed passed, $tests_failed failed"
exit "$rc"
