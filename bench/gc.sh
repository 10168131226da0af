#!/usr/bin/env bash
# One garbage collection over a cache of N paths (100,000 by default), rows generated
# directly in the database: chains of 10 paths (each refers to the one before), half of
# the chains last used 60 days ago and half yesterday, retention 30 days, so that half the
# paths are collected. Every NAR has a small object in the local directory, so storage
# deletes are real unlinks. Prints the time, the database statements the collection sent
# (sqlx's statement log, counted) and the collector's peak RSS, for a dry run and for the
# real run, then for the run that lets the released NARs go and deletes their objects.
#
# A benchmark, not a test: it asserts nothing about the figures. Everything is in a
# temporary directory (and, with --backend postgres, a temporary database), removed at
# the end.
#
# Usage: bench/gc.sh [--paths N] [--backend sqlite|postgres] [--bin PATH]
# (SLOWEST=N in the environment also lists each run's N slowest statements.)
set -euo pipefail

PATHS=100000 BACKEND=sqlite BIN=
while (($#)); do
    case $1 in
        --paths) PATHS=$2; shift ;;
        --backend) BACKEND=$2; shift ;;
        --bin) BIN=$2; shift ;;
        *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
    shift
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z $BIN ]]; then
    cargo build --release -q -p larder-api --bin larder-server --manifest-path "$ROOT/Cargo.toml"
    BIN="$ROOT/target/release/larder-server"
fi
log() { printf '[gc-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
T=$(mktemp -d /tmp/larder-gc-bench.XXXXXX)
DB_NAME=
cleanup() {
    [[ -n $DB_NAME ]] && psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" postgres >/dev/null 2>&1
    rm -rf "$T"
}
trap cleanup EXIT

export LARDER_DATA_DIR=$T/data LARDER_NAR_RELEASE_GRACE_SECS=0 LARDER_STALENESS_SECS=0
case $BACKEND in
    sqlite) export LARDER_DATABASE_URL="sqlite://$T/data/larder.db?mode=rwc" ;;
    postgres)
        DB_NAME="larder_gc_bench_$$"
        psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $DB_NAME" postgres
        export LARDER_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB_NAME" ;;
    *) echo "--backend is sqlite or postgres" >&2; exit 2 ;;
esac
"$BIN" migrate >/dev/null 2>&1
"$BIN" admin create-cache bench >/dev/null 2>&1

now=$(date +%s)
old=$((now - 60 * 86400)) recent=$((now - 86400))
# Rows: NAR i, its possession by the cache, path i referring to path i-1 within its chain
# of 10. Hash parts are 32 nix32 characters derived from i.
SQL="
INSERT INTO nars (file_hash, file_size, compression, nar_hash, nar_size, storage_key, listing_key, created_at)
  SELECT 'f' || printf_i, 1000, 'none', 'n' || printf_i, 1000, 'nar/' || printf_i || '.nar', 'ls/' || printf_i || '.ls', $old FROM ids;
INSERT INTO cache_nars (cache_id, nar_id, uploaded_at) SELECT 1, id, $old FROM nars;
INSERT INTO paths (cache_id, hash_part, store_path, nar_id, refs, sigs, created_at, last_used_at)
  SELECT 1, printf_i, '/nix/store/' || printf_i || '-bench', i + 1,
         CASE WHEN i % 10 = 0 THEN '' ELSE printf_prev || '-bench' END, '', $old,
         CASE WHEN (i / 10) % 2 = 0 THEN $old ELSE $recent END FROM ids;
INSERT INTO path_refs (path_id, cache_id, ref_hash) SELECT i + 1, 1, printf_prev FROM ids WHERE i % 10 <> 0;
UPDATE caches SET keep_days = 30;
"
log "generating $PATHS paths ($BACKEND)"
case $BACKEND in
    sqlite)
        ids="WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < $PATHS)
             SELECT i, printf('%032d', i) AS printf_i, printf('%032d', i - 1) AS printf_prev FROM seq"
        sqlite3 "$T/data/larder.db" "CREATE TEMP TABLE ids AS $ids; $SQL" ;;
    postgres)
        ids="SELECT i, lpad(i::text, 32, '0') AS printf_i, lpad((i - 1)::text, 32, '0') AS printf_prev FROM generate_series(0, $PATHS - 1) AS i"
        psql -q -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -c "CREATE TEMP TABLE ids AS $ids; $SQL" "$DB_NAME" ;;
esac
mkdir -p "$T/data/objects/nar"
(cd "$T/data/objects/nar" && seq -f '%032g' 0 $((PATHS - 1)) | sed 's/$/.nar/' | xargs touch)

run() {
    local what=$1; shift
    local started ended
    started=$(date +%s.%N)
    RUST_LOG=sqlx::query=debug /usr/bin/time -f '%M' -o "$T/rss" "$BIN" gc "$@" >"$T/out" 2>"$T/log"
    ended=$(date +%s.%N)
    local statements
    statements=$(grep -c 'sqlx::query' "$T/log" || true)
    printf '%-32s %8.2f s %8s statements %8s MiB peak RSS   %s\n' "$what" "$(echo "$ended - $started" | bc)" \
        "$statements" "$(($(cat "$T/rss") / 1024))" "$(grep -v '^  ' "$T/out" | tr '\n' ' ')"
    if [[ -n ${SLOWEST:-} ]]; then
        grep 'sqlx::query' "$T/log" | sed 's/\x1b\[[0-9;]*m//g' | grep -o 'summary="[^"]*".*elapsed_secs=[0-9.e-]*' |
            awk -F'elapsed_secs=' '{print $2 "\t" substr($1, 1, 110)}' | sort -gr | sed -n "1,${SLOWEST}p; ${SLOWEST}q" | sed 's/^/    /' || true
    fi
}
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(free -m | awk '/Mem:/ {print $7 " MiB available"}'), $BACKEND"
run "dry run" --dry-run
run "collection (paths deleted)"
sleep 1.1
run "reclaim (NARs, objects)"
echo "objects left: $(find "$T/data/objects/nar" -type f | wc -l) of $PATHS"
