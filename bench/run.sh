#!/usr/bin/env bash
# Larder benchmark: narinfo requests/s, NAR download MB/s, and the server's peak RSS while a
# large (default 1 GiB) incompressible NAR is pushed and pulled with the real nix client.
#
# This is a benchmark, not a test: it prints figures and asserts nothing about them. It exits
# non-zero only when the benchmark itself cannot run (build fails, server does not start, a
# set-up step fails). Everything runs on 127.0.0.1, every load phase is bounded in time, and
# the server is always stopped by PID and its temporary directories removed on exit.
#
# Usage: bench/run.sh [--big-size SIZE] [--no-big-zstd] [--duration SECONDS]
#                     [--threads N] [--connections N] [--downloads N] [--keep]
# See bench/README.md.
set -euo pipefail

BIG_SIZE=1G          # size of the random file behind the big NAR (head -c syntax)
BIG_ZSTD=1           # also push the big NAR with compression=zstd
WRK_DURATION=10      # seconds per wrk run
WRK_THREADS=2
WRK_CONNECTIONS=32
DOWNLOADS=3          # curl downloads of the big NAR
KEEP=0               # keep the temporary directory (server log, wrk output) for inspection
RSS_TARGET_MIB=64

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while (($#)); do
    case $1 in
        --big-size) BIG_SIZE=$2; shift ;;
        --no-big-zstd) BIG_ZSTD=0 ;;
        --big-zstd) BIG_ZSTD=1 ;;
        --duration) WRK_DURATION=$2; shift ;;
        --threads) WRK_THREADS=$2; shift ;;
        --connections) WRK_CONNECTIONS=$2; shift ;;
        --downloads) DOWNLOADS=$2; shift ;;
        --keep) KEEP=1 ;;
        --backend)
            [[ ${2:-} == fs ]] || { echo "only --backend fs (the embedded default) is supported" >&2; exit 2; }
            shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_ID="$(date +%Y%m%d%H%M%S)-$$-$RANDOM"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START_TS=$(date +%s)

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*"; }
die() { log "FATAL: $*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

T=$(mktemp -d /tmp/larder-bench.XXXXXX)
DATA=$T/data
mkdir -p "$DATA" "$T/home" "$T/xdg-cache" "$T/xdg-config" "$T/nixconf" "$T/input"

SERVER_PID=""
SAMPLER_PID=""
PORT=""
STORE_PATHS=()       # store paths this run added to /nix/store; deleted on exit
SERVER_LOGS=()
declare -A R          # results, printed in the summary

stop_sampler() {
    if [[ -n $SAMPLER_PID ]]; then
        touch "$T/sampler.stop"
        wait "$SAMPLER_PID" 2>/dev/null || true
        SAMPLER_PID=""
    fi
}

stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 350); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            log "server $SERVER_PID did not stop within 35 s of SIGTERM; sending SIGKILL"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_sampler
    stop_server
    local p
    for p in "${STORE_PATHS[@]}"; do
        nix-store --delete "$p" >/dev/null 2>&1 || log "could not delete $p from the store"
    done
    if ((KEEP)); then
        log "kept $T"
    else
        chmod -R u+w "$T" 2>/dev/null || true
        rm -rf "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Machine state and build (before HOME is redirected: cargo and rustup live under the real HOME).

RUSTC_VERSION=$(rustc --version 2>/dev/null || echo unknown)
GIT_HEAD=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$REPO" status --porcelain 2>/dev/null | wc -l)
NPROC=$(nproc)
FREE_M=$(free -m)
NIX_VERSION=$(nix --version 2>/dev/null || echo unknown)

command -v nix >/dev/null || die "nix is not installed (apt-get install -y nix-bin)"
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; } \
        || die "could not install wrk"
fi

log "building: cargo build --release -p larder-api"
t0=$(now)
(cd "$REPO" && cargo build --release -p larder-api) >"$T/build.log" 2>&1 || { tail -30 "$T/build.log" >&2; die "build failed"; }
R[build_s]=$(elapsed "$t0" "$(now)")
BIN=$REPO/target/release/larder-server
[[ -x $BIN ]] || die "$BIN not found after the build"

# ---------------------------------------------------------------------------------------------
# Isolated nix client.

export HOME=$T/home XDG_CACHE_HOME=$T/xdg-cache XDG_CONFIG_HOME=$T/xdg-config NIX_CONF_DIR=$T/nixconf
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nnetrc-file = '"$T/netrc"$'\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0'

# ---------------------------------------------------------------------------------------------
# Server.

SERVER_STARTS=0
start_server() {
    SERVER_STARTS=$((SERVER_STARTS + 1))
    local logfile=$T/server.$SERVER_STARTS.log
    SERVER_LOGS+=("$logfile")
    local port_file=$T/port.$SERVER_STARTS
    LARDER_DATA_DIR=$DATA LARDER_LISTEN=127.0.0.1:0 NO_COLOR=1 RUST_LOG=${RUST_LOG:-info,sqlx=warn} \
        "$BIN" serve --port-file "$port_file" >"$logfile" 2>&1 &
    SERVER_PID=$!
    PORT=""
    local _
    for _ in $(seq 1 300); do
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$logfile" >&2; die "server exited during start-up"; }
        PORT=$(cat "$port_file" 2>/dev/null || true)
        [[ -n $PORT ]] && break
        sleep 0.1
    done
    [[ -n $PORT ]] || { cat "$logfile" >&2; die "server did not report its port within 30 s"; }
    URL=http://127.0.0.1:$PORT
    for _ in $(seq 1 100); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz" || true) == 200 ]] && break
        sleep 0.1
    done
    log "server PID $SERVER_PID listening on $URL (log $logfile)"
}

admin() { LARDER_DATA_DIR=$DATA NO_COLOR=1 RUST_LOG=warn "$BIN" admin "$@"; }

server_alive() { kill -0 "$SERVER_PID" 2>/dev/null; }

read_status_kib() { # read_status_kib FIELD → value in KiB from /proc/$SERVER_PID/status
    awk -v f="$1:" '$1 == f { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0
}

# Peak RSS of the server over a phase: VmHWM reset with clear_refs (Linux ≥ 4.0) at the start
# and read at the end, and VmRSS sampled every 100 ms in the background as a cross-check.
rss_start() {
    rm -f "$T/sampler.stop" "$T/sampler.max"
    echo 0 >"$T/sampler.max"
    R[$1_rss_before_mib]=$(kib_to_mib "$(read_status_kib VmRSS)")
    if echo 5 >"/proc/$SERVER_PID/clear_refs" 2>/dev/null; then HWM_RESET=1; else HWM_RESET=0; fi
    local pid=$SERVER_PID out=$T/sampler.max stop=$T/sampler.stop
    (
        set +e
        max=0
        while [[ ! -e $stop ]]; do
            rss=0
            while read -r key value _; do
                if [[ $key == VmRSS: ]]; then rss=$value; break; fi
            done 2>/dev/null <"/proc/$pid/status" || break
            if ((rss > max)); then max=$rss; echo "$max" >"$out"; fi
            sleep 0.1
        done
    ) &
    SAMPLER_PID=$!
}

rss_stop() { # rss_stop NAME → R[NAME_rss_peak_mib], R[NAME_rss_sampled_mib], R[NAME_rss_hwm_mib]
    local name=$1 hwm sampled peak
    hwm=$(read_status_kib VmHWM)
    stop_sampler
    sampled=$(cat "$T/sampler.max")
    R[${name}_rss_sampled_mib]=$(kib_to_mib "$sampled")
    if ((HWM_RESET)) && [[ -n $hwm ]]; then
        R[${name}_rss_hwm_mib]=$(kib_to_mib "$hwm")
        peak=$((hwm > sampled ? hwm : sampled))
    else
        R[${name}_rss_hwm_mib]="n/a (clear_refs unavailable)"
        peak=$sampled
    fi
    R[${name}_rss_peak_mib]=$(kib_to_mib "$peak")
    R[${name}_rss_after_mib]=$(kib_to_mib "$(read_status_kib VmRSS)")
    server_alive || R[${name}_note]="SERVER DIED during this phase"
}

add_path() { # add_path FILE → ADDED=store path, remembered for deletion on exit
    ADDED=$(nix-store --add "$1")
    STORE_PATHS+=("$ADDED")
}

narinfo_field() { # narinfo_field CACHE HASHPART FIELD
    curl -sf "$URL/$1/$2.narinfo" | awk -v f="$3:" '$1 == f { print $2 }'
}

start_server
log "creating caches and a write token"
admin create-cache bench >"$T/admin.log"
admin create-cache bench-zstd >>"$T/admin.log"
TOKEN=$(admin create-token --cache bench --perm write --description bench | awk '$1 == "token:" { print $2 }')
TOKEN_ZSTD=$(admin create-token --cache bench-zstd --perm write --description bench | awk '$1 == "token:" { print $2 }')
[[ -n $TOKEN && -n $TOKEN_ZSTD ]] || die "could not create tokens"
# netrc is matched by host only, so one token per run of nix: switch the file per cache.
use_token() { printf 'machine 127.0.0.1 login x password %s\n' "$1" >"$T/netrc"; chmod 600 "$T/netrc"; }
use_token "$TOKEN"

# ---------------------------------------------------------------------------------------------
# Phase 1: narinfo requests/s (200 and 404) with wrk.

log "pushing a small closure (5 paths, compression=zstd)"
SMALL=()
for i in 1 2 3; do
    f=$T/input/bench-small-$i-$RUN_ID
    { echo "larder bench $RUN_ID file $i"; head -c 4096 /dev/urandom | base64; } >"$f"
    add_path "$f"; SMALL+=("$ADDED")
done
for i in 4 5; do
    d=$T/input/bench-smalldir-$i-$RUN_ID
    mkdir -p "$d/sub"
    echo "larder bench $RUN_ID dir $i" >"$d/README"
    head -c 16384 /dev/urandom >"$d/sub/blob"
    printf '#!/bin/sh\necho %s\n' "$RUN_ID" >"$d/sub/run.sh"; chmod +x "$d/sub/run.sh"
    add_path "$d"; SMALL+=("$ADDED")
done
nix copy --to "$URL/bench?compression=zstd" "${SMALL[@]}" >"$T/push-small.log" 2>&1 \
    || { cat "$T/push-small.log" >&2; die "nix copy of the small closure failed"; }

HIT_HASH=$(basename "${SMALL[0]}" | cut -c1-32)
NIX32=0123456789abcdfghijklmnpqrsvwxyz
MISS_HASH=""
for _ in $(seq 1 32); do MISS_HASH+=${NIX32:$((RANDOM % 32)):1}; done
HIT_URL=$URL/bench/$HIT_HASH.narinfo
MISS_URL=$URL/bench/$MISS_HASH.narinfo
R[narinfo_200_check]=$(curl -s -o /dev/null -w '%{http_code}' "$HIT_URL")
R[narinfo_404_check]=$(curl -s -o /dev/null -w '%{http_code}' "$MISS_URL")
log "GET $HIT_URL → ${R[narinfo_200_check]}; GET $MISS_URL → ${R[narinfo_404_check]}"

run_wrk() { # run_wrk NAME URL
    local name=$1 url=$2 out=$T/wrk.$1.txt
    R[${name}_load]=$(cut -d' ' -f1-3 /proc/loadavg)
    log "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${WRK_DURATION}s --latency $url"
    rss_start "$name"
    if ! timeout $((WRK_DURATION + 30)) wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${WRK_DURATION}s" \
        --timeout 5s --latency "$url" >"$out" 2>&1; then
        R[${name}_note]="wrk failed or timed out"
    fi
    rss_stop "$name"
    sed 's/^/    /' "$out"
    R[${name}_rps]=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    R[${name}_p50]=$(awk '$1 == "50%" { print $2 }' "$out")
    R[${name}_p99]=$(awk '$1 == "99%" { print $2 }' "$out")
    R[${name}_requests]=$(awk '/requests in/ { print $1 }' "$out")
    R[${name}_non2xx]=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    R[${name}_non2xx]=${R[${name}_non2xx]:-0}
    R[${name}_socket_errors]=$(awk -F': ' '/Socket errors:/ { print $2 }' "$out")
    R[${name}_socket_errors]=${R[${name}_socket_errors]:-none}
}
run_wrk narinfo200 "$HIT_URL"
run_wrk narinfo404 "$MISS_URL"

# ---------------------------------------------------------------------------------------------
# Phase 2: the big NAR. A fresh server so that the RSS figures start from a clean process.

log "creating $BIG_SIZE of random data and adding it to the store"
BIG_FILE=$T/input/bench-big-$RUN_ID
head -c "$BIG_SIZE" /dev/urandom >"$BIG_FILE"
t0=$(now)
add_path "$BIG_FILE"; BIG=$ADDED
R[big_add_s]=$(elapsed "$t0" "$(now)")
rm -f "$BIG_FILE"
BIG_HASH=$(basename "$BIG" | cut -c1-32)
R[big_nar_size]=$(nix path-info --json "$BIG" | grep -o '"narSize":[0-9]*' | cut -d: -f2)
log "big path $BIG (NAR ${R[big_nar_size]} bytes)"

log "restarting the server for the big-NAR phase"
stop_server
start_server
R[idle_rss_mib]=$(kib_to_mib "$(read_status_kib VmRSS)")

timed_phase() { # timed_phase NAME LOGFILE CMD… → R[NAME_s], R[NAME_rc], RSS figures
    local name=$1 out=$2 t0 rc=0
    shift 2
    R[${name}_load]=$(cut -d' ' -f1-3 /proc/loadavg)
    rss_start "$name"
    t0=$(now)
    "$@" >"$out" 2>&1 || rc=$?
    R[${name}_s]=$(elapsed "$t0" "$(now)")
    rss_stop "$name"
    R[${name}_rc]=$rc
    if ((rc != 0)); then
        R[${name}_note]="${R[${name}_note]:+${R[${name}_note]}; }command failed with exit $rc: $(tail -3 "$out" | tr '\n' ' ')"
        log "$name FAILED (exit $rc):"; tail -20 "$out" | sed 's/^/    /'
    fi
    log "$name: ${R[${name}_s]} s, server peak RSS ${R[${name}_rss_peak_mib]} MiB"
}

mib_per_s() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", b / 1048576 / s; else print "n/a" }'; }

# 2a: push, compression=none.
use_token "$TOKEN"
log "push: nix copy --to $URL/bench?compression=none $BIG"
timed_phase push_none "$T/push-none.log" nix copy --to "$URL/bench?compression=none" "$BIG"
R[push_none_mibps]=$(mib_per_s "${R[big_nar_size]}" "${R[push_none_s]}")
NAR_URL=$(narinfo_field bench "$BIG_HASH" URL || true)
NAR_FILE_SIZE=$(narinfo_field bench "$BIG_HASH" FileSize || true)
R[push_none_narinfo]=$(curl -s -o /dev/null -w '%{http_code}' "$URL/bench/$BIG_HASH.narinfo")
log "narinfo after push: ${R[push_none_narinfo]}, URL=$NAR_URL FileSize=$NAR_FILE_SIZE"

# 2b: pull with nix into a fresh chroot store.
log "pull: nix copy --from $URL/bench --to local?root=$T/pull-store $BIG"
timed_phase pull_nix "$T/pull-nix.log" nix copy --from "$URL/bench" --to "local?root=$T/pull-store" \
    --option require-sigs false "$BIG"
R[pull_nix_mibps]=$(mib_per_s "${R[big_nar_size]}" "${R[pull_nix_s]}")
if [[ -e $T/pull-store$BIG ]]; then R[pull_nix_present]=yes; else R[pull_nix_present]=no; fi
chmod -R u+w "$T/pull-store" 2>/dev/null || true
rm -rf "$T/pull-store"

# 2c: NAR download MB/s with curl (the same big NAR, served from the local directory backend).
download_nar() {
    local i line
    for i in $(seq 1 "$DOWNLOADS"); do
        line=$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{speed_download} %{time_total}' "$URL/bench/$NAR_URL")
        echo "download $i: $line"
        echo "$line" >>"$T/curl.results"
    done
}
R[curl_n]=0
if [[ -n $NAR_URL ]]; then
    log "download: curl $URL/bench/$NAR_URL → /dev/null, $DOWNLOADS times"
    rm -f "$T/curl.results"
    timed_phase curl "$T/curl.log" download_nar
    sed 's/^/    /' "$T/curl.log"
    R[curl_codes]=$(awk '{ print $1 }' "$T/curl.results" | sort | uniq -c | awk '{ printf "%s%s×%s", (NR > 1 ? " " : ""), $1, $2 }')
    R[curl_sizes_ok]=$(awk -v want="$NAR_FILE_SIZE" '$2 != want { bad++ } END { print bad ? "NO (" bad " short/long)" : "yes" }' "$T/curl.results")
    R[curl_mbps_each]=$(awk '{ printf "%s%.1f", (NR > 1 ? " " : ""), $3 / 1e6 }' "$T/curl.results")
    R[curl_mbps_mean]=$(awk '{ s += $3; n++ } END { if (n) printf "%.1f", s / n / 1e6; else print "n/a" }' "$T/curl.results")
    R[curl_mbps_best]=$(awk 'BEGIN { m = 0 } { if ($3 > m) m = $3 } END { printf "%.1f", m / 1e6 }' "$T/curl.results")
else
    R[curl_note]="no NAR URL in the narinfo; downloads skipped"
fi

# 2d: one big NAR streams up while the first one streams down, again and again until the
# push is done (the RSS budget holds for both at once).
up_and_down() {
    local push_pid rc=0 downloads=0
    nix copy --to "$URL/bench?compression=none" "$BIG2" >"$T/push-concurrent.log" 2>&1 &
    push_pid=$!
    while kill -0 "$push_pid" 2>/dev/null; do
        curl -sS -o /dev/null -w '%{http_code} %{size_download}\n' "$URL/bench/$NAR_URL" >>"$T/concurrent.results" || true
        downloads=$((downloads + 1))
    done
    wait "$push_pid" || rc=$?
    echo "push exit $rc after $downloads downloads"
    return "$rc"
}
if [[ -n $NAR_URL ]]; then
    log "creating a second $BIG_SIZE NAR, to push while the first is downloaded"
    head -c "$BIG_SIZE" /dev/urandom >"$T/input/bench-big2-$RUN_ID"
    add_path "$T/input/bench-big2-$RUN_ID"; BIG2=$ADDED
    rm -f "$T/input/bench-big2-$RUN_ID" "$T/concurrent.results"
    log "up and down: nix copy --to $URL/bench $BIG2 while curl downloads $NAR_URL in a loop"
    timed_phase concurrent "$T/concurrent.log" up_and_down
    R[concurrent_downloads]=$(awk -v want="$NAR_FILE_SIZE" '$1 == 200 && $2 == want { n++ } END { print n + 0 }' "$T/concurrent.results")
    R[concurrent_narinfo]=$(curl -s -o /dev/null -w '%{http_code}' "$URL/bench/$(basename "$BIG2" | cut -c1-32).narinfo")
    nix-store --delete "$BIG2" >>"$T/delete.log" 2>&1 || true
fi

# 2e: push again with compression=zstd (another cache, so that nix does not skip the path).
if ((BIG_ZSTD)); then
    use_token "$TOKEN_ZSTD"
    log "push: nix copy --to $URL/bench-zstd?compression=zstd $BIG"
    timed_phase push_zstd "$T/push-zstd.log" nix copy --to "$URL/bench-zstd?compression=zstd" "$BIG"
    R[push_zstd_mibps]=$(mib_per_s "${R[big_nar_size]}" "${R[push_zstd_s]}")
    R[push_zstd_narinfo]=$(curl -s -o /dev/null -w '%{http_code}' "$URL/bench-zstd/$BIG_HASH.narinfo")
    R[push_zstd_filesize]=$(narinfo_field bench-zstd "$BIG_HASH" FileSize || true)
    use_token "$TOKEN"
fi

R[server_alive_at_end]=$(server_alive && echo yes || echo NO)
R[final_rss_mib]=$(kib_to_mib "$(read_status_kib VmRSS)")

log "deleting the big store path"
if nix-store --delete "$BIG" >"$T/delete.log" 2>&1; then
    R[big_deleted]=yes
    remaining=()
    for p in "${STORE_PATHS[@]}"; do [[ $p == "$BIG" ]] || remaining+=("$p"); done
    STORE_PATHS=("${remaining[@]}")
else
    R[big_deleted]="no: $(tail -1 "$T/delete.log")"
fi
stop_server

# ---------------------------------------------------------------------------------------------
# Summary.

v() { echo "${R[$1]:-n/a}"; }
target() { awk -v x="$1" -v t="$RSS_TARGET_MIB" 'BEGIN { if (x == "" || x == "n/a") print "n/a"; else if (x + 0 < t) print "under target"; else print "ABOVE " t " MiB TARGET" }'; }
rss_line() {
    printf '    server RSS: peak %s MiB [%s] (sampled VmRSS max %s, VmHWM %s, before %s, after %s)\n' \
        "$(v "$1_rss_peak_mib")" "$(target "$(v "$1_rss_peak_mib")")" "$(v "$1_rss_sampled_mib")" \
        "$(v "$1_rss_hwm_mib")" "$(v "$1_rss_before_mib")" "$(v "$1_rss_after_mib")"
}
note_line() { [[ -z ${R[$1_note]:-} ]] || printf '    NOTE: %s\n' "${R[$1_note]}"; }

WARN_ERROR=$(cat "${SERVER_LOGS[@]}" | sed 's/\x1b\[[0-9;]*m//g' | grep -E ' (WARN|ERROR) ' || true)

echo
echo "==================================== Larder benchmark summary ===================================="
echo "run $RUN_ID, took $(($(date +%s) - START_TS)) s (build ${R[build_s]} s)"
echo "git HEAD $GIT_HEAD ($GIT_DIRTY uncommitted changes in the working tree); $RUSTC_VERSION; $NIX_VERSION"
echo "nproc $NPROC; load average before the run: $LOAD_BEFORE"
echo "free -m before the run:"
echo "$FREE_M" | sed 's/^/    /'
echo "backend: embedded defaults (SQLite + local directory) in $DATA"
echo
echo "narinfo GET, wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${WRK_DURATION}s (wrk shares the 2 cores with the server)"
for n in narinfo200 narinfo404; do
    want=$([[ $n == narinfo200 ]] && echo 200 || echo 404)
    printf '  %s (curl check: %s): %s req/s, latency p50 %s p99 %s, %s requests, %s non-2xx/3xx, socket errors: %s, load %s\n' \
        "$want" "$(v "${n/narinfo/narinfo_}_check")" "$(v "${n}_rps")" "$(v "${n}_p50")" "$(v "${n}_p99")" \
        "$(v "${n}_requests")" "$(v "${n}_non2xx")" "$(v "${n}_socket_errors")" "$(v "${n}_load")"
    rss_line "$n"; note_line "$n"
done
echo
echo "big NAR: $BIG_SIZE of /dev/urandom, NAR size $(v big_nar_size) bytes (nix-store --add took $(v big_add_s) s)"
echo "  fresh server idle RSS before the phase: $(v idle_rss_mib) MiB"
printf '  push compression=none:  %s s (%s MiB/s of NAR), exit %s, narinfo afterwards %s, load %s\n' \
    "$(v push_none_s)" "$(v push_none_mibps)" "$(v push_none_rc)" "$(v push_none_narinfo)" "$(v push_none_load)"
rss_line push_none; note_line push_none
printf '  pull nix copy --from:   %s s (%s MiB/s of NAR), exit %s, path present in pull store: %s, load %s\n' \
    "$(v pull_nix_s)" "$(v pull_nix_mibps)" "$(v pull_nix_rc)" "$(v pull_nix_present)" "$(v pull_nix_load)"
rss_line pull_nix; note_line pull_nix
printf '  NAR download, curl → /dev/null ×%s: %s MB/s mean, %s MB/s best (each: %s), HTTP %s, sizes match FileSize: %s, %s s total\n' \
    "$DOWNLOADS" "$(v curl_mbps_mean)" "$(v curl_mbps_best)" "$(v curl_mbps_each)" "$(v curl_codes)" "$(v curl_sizes_ok)" "$(v curl_s)"
rss_line curl; note_line curl
printf '  push of a second big NAR while the first is downloaded: %s s, exit %s, narinfo afterwards %s, %s whole downloads meanwhile, load %s\n' \
    "$(v concurrent_s)" "$(v concurrent_rc)" "$(v concurrent_narinfo)" "$(v concurrent_downloads)" "$(v concurrent_load)"
rss_line concurrent; note_line concurrent
if ((BIG_ZSTD)); then
    printf '  push compression=zstd:  %s s (%s MiB/s of NAR), exit %s, narinfo afterwards %s, FileSize %s, load %s\n' \
        "$(v push_zstd_s)" "$(v push_zstd_mibps)" "$(v push_zstd_rc)" "$(v push_zstd_narinfo)" "$(v push_zstd_filesize)" "$(v push_zstd_load)"
    rss_line push_zstd; note_line push_zstd
else
    echo "  push compression=zstd:  skipped (--no-big-zstd)"
fi
echo "  server alive at the end: $(v server_alive_at_end), RSS $(v final_rss_mib) MiB; big store path deleted: $(v big_deleted)"
echo "  (1 MB = 10^6 bytes, 1 MiB = 2^20 bytes. Only the server's RSS is measured; the nix client's"
echo "   own memory and CPU are not, although the client runs on the same 2 cores.)"
echo
if [[ -n $WARN_ERROR ]]; then
    echo "server log WARN/ERROR lines ($(echo "$WARN_ERROR" | wc -l), first 20):"
    echo "$WARN_ERROR" | head -20 | cut -c1-300 | sed 's/^/    /'
else
    echo "server log: no WARN/ERROR lines"
fi
echo "=================================================================================================="
