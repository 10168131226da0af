#!/usr/bin/env bash
# What Larder adds on top of its S3 store: the same NARs fetched through Larder (streamed
# from the bucket, the default) and straight from the bucket (a second node with
# s3_redirect_downloads, curl following the 307 to the presigned URL). One 100 MiB NAR and
# 50 NARs of 20 KB, --rounds times, interleaved; prints each round and the medians.
# Postgres and Garage come from scripts/test-services.sh (a database and a bucket of its
# own, removed at the end).
#
# A benchmark, not a test: it asserts nothing about the figures. Loopback only; both
# servers and the services are stopped by PID and the store paths deleted on exit.
#
# Usage: bench/vs-s3-direct.sh [--rounds R] [--bin PATH] [--quickack]
# --quickack: see bench/loopback-quickack.sh.
set -euo pipefail
export LC_ALL=C
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=5 BIN=$REPO/target/release/larder-server QUICKACK=0
while (($#)); do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --bin) BIN=$2; shift ;;
        --quickack) QUICKACK=1 ;;
        *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
    shift
done
[[ -x $BIN ]] || { echo "$BIN is not an executable (cargo build --release -p larder-api)" >&2; exit 2; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T=$(mktemp -d /tmp/larder-vs-s3.XXXXXX)
PIDS=() STORE_PATHS=() SERVICES_RUN=
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    ((${#STORE_PATHS[@]})) && nix-store --delete "${STORE_PATHS[@]}" >/dev/null 2>&1 || true
    [[ -n $SERVICES_RUN ]] && bash "$REPO/scripts/test-services.sh" stop "$SERVICES_RUN" >/dev/null 2>&1 || true
    quickack_loopback_restore
    rm -rf "$T"
}
# shellcheck source=bench/loopback-quickack.sh
source "$REPO/bench/loopback-quickack.sh"
trap cleanup EXIT
if ((QUICKACK)); then quickack_loopback_on; fi
bash "$REPO/scripts/test-services.sh" start >"$T/services.env" 2>"$T/services.log" || { cat "$T/services.log" >&2; exit 1; }
# shellcheck disable=SC1091
source "$T/services.env"
SERVICES_RUN=$TEST_SERVICES_RUN_DIR
BUCKET=larder-vs-s3-$$ DB=larder_vs_s3_$$
garage -c "$SERVICES_RUN/garage/garage.toml" bucket create "$BUCKET" >/dev/null
garage -c "$SERVICES_RUN/garage/garage.toml" bucket allow --read --write --owner "$BUCKET" --key "$TEST_S3_ACCESS_KEY_ID" >/dev/null
psql -q "$TEST_PG_URL/postgres" -c "CREATE DATABASE $DB"
export LARDER_DATABASE_URL=$TEST_PG_URL/$DB LARDER_STORAGE=s3 LARDER_S3_ENDPOINT=$TEST_S3_ENDPOINT LARDER_S3_BUCKET=$BUCKET \
    LARDER_S3_REGION=$TEST_S3_REGION LARDER_S3_ACCESS_KEY_ID=$TEST_S3_ACCESS_KEY_ID \
    LARDER_S3_SECRET_ACCESS_KEY=$TEST_S3_SECRET_ACCESS_KEY LARDER_S3_PATH_STYLE=true \
    LARDER_DATA_DIR=$T/data LARDER_LISTEN=127.0.0.1:0 NO_COLOR=1 RUST_LOG=warn
"$BIN" migrate >/dev/null
"$BIN" admin create-cache probe --private >/dev/null
TOKEN=$("$BIN" admin create-token --cache probe --perm write --description vs-s3 | awk '$1 == "token:" { print $2 }')
"$BIN" serve --port-file "$T/streamed.port" >"$T/streamed.log" 2>&1 & PIDS+=($!)
LARDER_S3_REDIRECT_DOWNLOADS=true "$BIN" serve --port-file "$T/redirect.port" >"$T/redirect.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do [[ -s $T/streamed.port && -s $T/redirect.port ]] && break; sleep 0.1; done
STREAMED=http://127.0.0.1:$(cat "$T/streamed.port") REDIRECT=http://127.0.0.1:$(cat "$T/redirect.port")

printf 'machine 127.0.0.1 password %s\n' "$TOKEN" >"$T/netrc"
export HOME=$T XDG_CACHE_HOME=$T/xdg
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nnetrc-file = '"$T/netrc"
head -c 100M /dev/urandom >"$T/big"
BIG=$(nix-store --add "$T/big"); STORE_PATHS+=("$BIG")
SMALL=()
for i in $(seq 1 50); do head -c 20000 /dev/urandom >"$T/small-$i-$$"; SMALL+=("$(nix-store --add "$T/small-$i-$$")"); done
STORE_PATHS+=("${SMALL[@]}")
nix copy --to "$STREAMED/probe?compression=none" "$BIG" "${SMALL[@]}"
nar_url() { curl -sf -u "nix:$TOKEN" "$STREAMED/probe/$(basename "$1" | cut -c1-32).narinfo" | awk '$1 == "URL:" { print $2 }'; }
BIG_URL=$(nar_url "$BIG")
for p in "${SMALL[@]}"; do u=$(nar_url "$p"); echo "url = \"$STREAMED/probe/$u\"" >>"$T/streamed.cfg"; echo "url = \"$REDIRECT/probe/$u\"" >>"$T/redirect.cfg"; done

seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
: >"$T/results"
for r in $(seq 1 "$ROUNDS"); do
    echo "big-larder $(seconds curl -sf -u "nix:$TOKEN" "$STREAMED/probe/$BIG_URL")" >>"$T/results"
    echo "big-bucket $(seconds curl -sfL -u "nix:$TOKEN" "$REDIRECT/probe/$BIG_URL")" >>"$T/results"
    echo "small-larder $(seconds curl -sf -u "nix:$TOKEN" -K "$T/streamed.cfg")" >>"$T/results"
    echo "small-bucket $(seconds curl -sfL -u "nix:$TOKEN" -K "$T/redirect.cfg")" >>"$T/results"
    echo "round $r: $(tail -4 "$T/results" | tr '\n' ' ')" >&2
done
median() { awk -v k="$1" '$1 == k { print $2 }' "$T/results" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "## Larder streaming from Garage against Garage serving the same objects, median of $ROUNDS"
echo
echo "- machine: $(nproc) cores, load at start $LOAD_START; git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown); loopback quickack $( ((QUICKACK)) && echo on || echo off)"
echo
echo "| | through Larder | from the bucket | ratio |"
echo "|---|---|---|---|"
for k in big small; do
    l=$(median "$k-larder") b=$(median "$k-bucket")
    printf '| %s | %.3f s | %.3f s | %.2f× |\n' "$([[ $k == big ]] && echo 'one 100 MiB NAR' || echo '50 NARs of 20 KB, 1 connection')" "$l" "$b" "$(echo "$l / $b" | bc -l)"
done
