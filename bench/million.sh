#!/usr/bin/env bash
# Narinfo lookups in a cache of 1,000,000 paths against a cache of 1,000 paths, on one
# server: rows generated directly in the database (a NAR each, no signatures), both caches
# private, a read token on every request. The server runs with staleness_secs = 0, so it
# remembers nothing and every answer is a database lookup. Each round fetches --fetches
# narinfos spread over each cache, on 1 connection and on 32, small and big interleaved;
# prints medians and the big/small ratio.
#
# A benchmark, not a test: it asserts nothing about the figures and exits non-zero only
# when it cannot run. Loopback only; the server is stopped by PID and its temporary
# directory (and, with --backend postgres, its database) removed.
#
# Usage: bench/million.sh [--paths N] [--small N] [--rounds R] [--fetches F]
#                         [--backend sqlite|postgres] [--bin PATH]
set -euo pipefail
export LC_ALL=C

BIG=1000000 SMALL=1000 ROUNDS=5 FETCHES=300 BACKEND=sqlite BIN=
while (($#)); do
    case $1 in
        --paths) BIG=$2; shift ;;
        --small) SMALL=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --fetches) FETCHES=$2; shift ;;
        --backend) BACKEND=$2; shift ;;
        --bin) BIN=$2; shift ;;
        *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
    shift
done
((SMALL >= FETCHES)) || { echo "--small must be at least --fetches ($FETCHES)" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z $BIN ]]; then
    cargo build --release -q -p larder-api --bin larder-server --manifest-path "$ROOT/Cargo.toml"
    BIN="$ROOT/target/release/larder-server"
fi
log() { printf '[million %s] %s\n' "$(date +%T)" "$*" >&2; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T=$(mktemp -d /tmp/larder-million.XXXXXX)
DB_NAME= SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    [[ -n $DB_NAME ]] && psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" postgres >/dev/null 2>&1
    rm -rf "$T"
}
trap cleanup EXIT

export LARDER_DATA_DIR=$T/data NO_COLOR=1 RUST_LOG=warn
case $BACKEND in
    sqlite) export LARDER_DATABASE_URL="sqlite://$T/data/larder.db?mode=rwc" ;;
    postgres)
        DB_NAME="larder_million_bench_$$"
        psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $DB_NAME" postgres
        export LARDER_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB_NAME" ;;
    *) echo "--backend is sqlite or postgres" >&2; exit 2 ;;
esac
mkdir -p "$T/data"
"$BIN" migrate >/dev/null
"$BIN" admin create-cache small --private >/dev/null
"$BIN" admin create-cache big --private >/dev/null
token() { "$BIN" admin create-token --cache "$1" --perm read --description million | awk '$1 == "token:" { print $2 }'; }
SMALL_TOKEN=$(token small) BIG_TOKEN=$(token big)

# Path i of a cache: hash part and NAR hashes are i in decimal, zero-padded (digits are
# nix32), so that a fetch list needs no query. Cache 1 is small, cache 2 big.
now=$(date +%s)
SQL="
INSERT INTO nars (file_hash, file_size, compression, nar_hash, nar_size, storage_key, listing_key, created_at)
  SELECT printf_c || printf_f, 1000, 'none', printf_c || printf_f, 1000, 'nar/' || printf_c || printf_f || '.nar', 'ls/' || printf_c || printf_f, $now FROM ids;
INSERT INTO cache_nars (cache_id, nar_id, uploaded_at) SELECT cache_id, nar_id, $now FROM ids;
INSERT INTO paths (cache_id, hash_part, store_path, nar_id, refs, sigs, created_at, last_used_at)
  SELECT cache_id, printf_i, '/nix/store/' || printf_i || '-bench', nar_id, '', '', $now, $now FROM ids;
"
log "generating $SMALL + $BIG paths ($BACKEND)"
case $BACKEND in
    sqlite)
        ids="WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n + 1 < $((SMALL + BIG)))
             SELECT n + 1 AS nar_id, CASE WHEN n < $SMALL THEN 1 ELSE 2 END AS cache_id,
                    CASE WHEN n < $SMALL THEN n ELSE n - $SMALL END AS i,
                    printf('%032d', CASE WHEN n < $SMALL THEN n ELSE n - $SMALL END) AS printf_i,
                    CASE WHEN n < $SMALL THEN '0' ELSE '1' END AS printf_c, printf('%051d', n) AS printf_f FROM seq"
        sqlite3 "$T/data/larder.db" "CREATE TEMP TABLE ids AS $ids; $SQL ANALYZE;" ;;
    postgres)
        ids="SELECT n + 1 AS nar_id, CASE WHEN n < $SMALL THEN 1 ELSE 2 END AS cache_id,
                    lpad((CASE WHEN n < $SMALL THEN n ELSE n - $SMALL END)::text, 32, '0') AS printf_i,
                    CASE WHEN n < $SMALL THEN '0' ELSE '1' END AS printf_c, lpad(n::text, 51, '0') AS printf_f
             FROM generate_series(0, $((SMALL + BIG - 1))) AS n"
        psql -q -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -c "CREATE TEMP TABLE ids AS $ids; $SQL" "$DB_NAME"
        psql -q -h 127.0.0.1 -U postgres -c "SELECT setval('nars_id_seq', $((SMALL + BIG))); ANALYZE;" "$DB_NAME" >/dev/null ;;
esac

LARDER_LISTEN=127.0.0.1:0 LARDER_STALENESS_SECS=0 "$BIN" serve --port-file "$T/port" >"$T/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do [[ -s $T/port ]] && break; sleep 0.1; done
[[ -s $T/port ]] || { tail "$T/server.log" >&2; echo "the server did not start" >&2; exit 1; }
URL="http://127.0.0.1:$(cat "$T/port")"
code=$(curl -s -o /dev/null -w '%{http_code}' -u "nix:$BIG_TOKEN" "$URL/big/$(printf '%032d' $((BIG - 1))).narinfo")
[[ $code == 200 ]] || { tail "$T/server.log" >&2; echo "the big cache's last narinfo answers $code" >&2; exit 1; }

# fetch_list CACHE TOKEN COUNT ROUND: a curl config of narinfos spread over the whole
# cache (a stride through it, offset by the round).
fetch_list() {
    local cache=$1 token=$2 count=$3 round=$4 stride=$(($3 / FETCHES)) k
    printf 'header = "Authorization: Basic %s"\n' "$(printf 'nix:%s' "$token" | base64 -w0)"
    for ((k = 0; k < FETCHES; k++)); do
        printf 'url = "%s/%s/%032d.narinfo"\noutput = "/dev/null"\n' "$URL" "$cache" $(((k * stride + round) % count))
    done
}
CURL_W='%{http_code}\n'
# measure NAME CFG [PARALLEL]: wall seconds; dies unless every answer is 200.
measure() {
    local name=$1 cfg=$2 par=${3:-} t0 t1 codes
    t0=$(date +%s.%N)
    if [[ -n $par ]]; then
        codes=$(timeout 120 curl -s -w "$CURL_W" --parallel --parallel-immediate --parallel-max "$par" -K "$cfg" 2>/dev/null | sort | uniq -c | tr -s ' \n' ' ')
    else
        codes=$(timeout 120 curl -s -w "$CURL_W" -K "$cfg" | sort | uniq -c | tr -s ' \n' ' ')
    fi
    t1=$(date +%s.%N)
    [[ $codes == " $FETCHES 200 " ]] || { echo "$name: answers $codes (want $FETCHES × 200)" >&2; exit 1; }
    echo "$t1 - $t0" | bc
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

: >"$T/results"
for ((r = 0; r < ROUNDS; r++)); do
    log "round $((r + 1)) of $ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))"
    fetch_list small "$SMALL_TOKEN" "$SMALL" $((2 * r)) >"$T/small-c1.cfg"
    fetch_list small "$SMALL_TOKEN" "$SMALL" $((2 * r + 1)) >"$T/small-c32.cfg"
    fetch_list big "$BIG_TOKEN" "$BIG" $((2 * r)) >"$T/big-c1.cfg"
    fetch_list big "$BIG_TOKEN" "$BIG" $((2 * r + 1)) >"$T/big-c32.cfg"
    for c in small big; do echo "$c c1 $(measure "$c c1" "$T/$c-c1.cfg")" >>"$T/results"; done
    for c in small big; do echo "$c c32 $(measure "$c c32" "$T/$c-c32.cfg" 32)" >>"$T/results"; done
done

med() { awk -v c="$1" -v k="$2" '$1 == c && $2 == k { print $3 }' "$T/results" | median; }
echo "## Narinfo lookups: a cache of $BIG paths against one of $SMALL ($BACKEND), $FETCHES narinfos per run, no memory (staleness_secs = 0), median of $ROUNDS"
echo
echo "- machine: $(nproc) cores, load at start $LOAD_START, $(free -m | awk '/Mem:/ {print $7 " MiB available"}'); git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "| | $SMALL paths | $BIG paths | ratio |"
echo "|---|---|---|---|"
for k in c1 c32; do
    s=$(med small $k) b=$(med big $k)
    printf '| %s narinfos, %s | %.1f ms | %.1f ms | %.2f× |\n' "$FETCHES" "$([[ $k == c1 ]] && echo '1 connection' || echo '32 connections')" \
        "$(echo "$s * 1000" | bc)" "$(echo "$b * 1000" | bc)" "$(echo "$b / $s" | bc -l)"
done
