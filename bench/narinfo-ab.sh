#!/usr/bin/env bash
# Narinfo requests/s of two larder-server binaries, side by side in one run: each gets its
# own data directory with the same kind of private cache (a chain of 5 paths pushed by the
# real nix), then wrk measures GET <hash>.narinfo with a read token on every request,
# alternating A, B, A, B… for --rounds rounds; the medians and the ratio B/A are printed.
#
# A benchmark, not a test: it asserts nothing about the figures. Loopback only, every wrk
# run bounded in time; both servers are stopped by PID and their directories removed.
#
# Usage: bench/narinfo-ab.sh BIN_A BIN_B [--rounds N] [--duration SECONDS] [--connections N]
set -euo pipefail

[[ $# -ge 2 ]] || { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
BINS=("$1" "$2"); shift 2
ROUNDS=5 DURATION=5 CONNECTIONS=32
while (($#)); do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --connections) CONNECTIONS=$2; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
for bin in "${BINS[@]}"; do [[ -x $bin ]] || { echo "$bin is not an executable" >&2; exit 2; }; done
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }; }
command -v nix >/dev/null || { echo "nix is not installed (apt-get install -y nix-bin)" >&2; exit 1; }

log() { printf '[narinfo-ab %s] %s\n' "$(date +%T)" "$*" >&2; }
T=$(mktemp -d /tmp/larder-narinfo-ab.XXXXXX)
PIDS=() STORE_PATHS=()
cleanup() {
    local pid p
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    for p in "${STORE_PATHS[@]}"; do nix-store --delete "$p" >/dev/null 2>&1 || true; done
    rm -rf "$T"
}
trap cleanup EXIT

export HOME=$T/home XDG_CACHE_HOME=$T/cache XDG_CONFIG_HOME=$T/config NIX_CONF_DIR=$T/nixconf
mkdir -p "$HOME" "$XDG_CACHE_HOME" "$XDG_CONFIG_HOME" "$NIX_CONF_DIR"
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nnetrc-file = '"$T/netrc"

# Five small paths, the same for both servers.
PATHS=()
for i in 1 2 3 4 5; do
    f=$T/input-$i-$RANDOM$RANDOM
    { echo "larder narinfo-ab $i"; head -c 2048 /dev/urandom | base64; } >"$f"
    p=$(nix-store --add "$f"); PATHS+=("$p"); STORE_PATHS+=("$p")
done
HASH=$(basename "${PATHS[0]}" | cut -c1-32)

URLS=() READ_TOKENS=()
for i in 0 1; do
    data=$T/data-$i
    admin() { LARDER_DATA_DIR=$data RUST_LOG=warn "${BINS[$i]}" admin "$@"; }
    LARDER_DATA_DIR=$data LARDER_LISTEN=127.0.0.1:0 RUST_LOG=warn "${BINS[$i]}" serve --port-file "$T/port-$i" >"$T/server-$i.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 300); do [[ -s $T/port-$i ]] && break; sleep 0.1; done
    [[ -s $T/port-$i ]] || { cat "$T/server-$i.log" >&2; log "server $i did not start"; exit 1; }
    url=http://127.0.0.1:$(cat "$T/port-$i")
    admin create-cache bench --private >/dev/null
    write=$(admin create-token --cache bench --perm write | awk '$1 == "token:" { print $2 }')
    READ_TOKENS+=("$(admin create-token --cache bench --perm read | awk '$1 == "token:" { print $2 }')")
    printf 'machine 127.0.0.1 login x password %s\n' "$write" >"$T/netrc"
    nix copy --to "$url/bench?compression=zstd" "${PATHS[@]}" >"$T/push-$i.log" 2>&1 || { cat "$T/push-$i.log" >&2; exit 1; }
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${READ_TOKENS[$i]}" "$url/bench/$HASH.narinfo")
    [[ $status == 200 ]] || { log "server $i answers $status to the narinfo"; exit 1; }
    URLS+=("$url")
    log "server $i (${BINS[$i]}) ready at $url, pid ${PIDS[$i]}"
done

declare -a RPS0 RPS1
for round in $(seq 1 "$ROUNDS"); do
    for i in 0 1; do
        out=$T/wrk-$round-$i.txt
        timeout $((DURATION + 30)) wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s \
            -H "Authorization: Bearer ${READ_TOKENS[$i]}" "${URLS[$i]}/bench/$HASH.narinfo" >"$out" 2>&1 || true
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
        non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
        [[ -z $non2xx ]] || log "round $round server $i: $non2xx non-2xx answers"
        if ((i == 0)); then RPS0+=("${rps:-0}"); else RPS1+=("${rps:-0}"); fi
        log "round $round server $i: ${rps:-?} req/s"
    done
done

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
M0=$(median "${RPS0[@]}") M1=$(median "${RPS1[@]}")
echo
echo "narinfo GET, private cache, read token on every request, wrk -t2 -c$CONNECTIONS, $ROUNDS×${DURATION}s interleaved"
echo "machine: $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-60s %12s\n' "A: ${BINS[0]}" "$M0 req/s"
printf '%-60s %12s\n' "B: ${BINS[1]}" "$M1 req/s"
awk -v a="$M0" -v b="$M1" 'BEGIN { printf "B/A: %.3f\n", (a > 0) ? b / a : 0 }'
echo "per round A: ${RPS0[*]}"
echo "per round B: ${RPS1[*]}"
