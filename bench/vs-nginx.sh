#!/usr/bin/env bash
# Larder against nginx serving the same closure as a plain file:// binary cache: narinfo
# fetches on 1 and 32 connections, NAR downloads on 1 and 16 connections (uncompressed and
# zstd), a whole-closure `nix copy --from` pull and a `nix copy --to` push, each repeated
# --rounds times, nginx and Larder interleaved; prints the medians, Larder/nginx ratios,
# both servers' peak RSS and CPU time as a markdown table, and every round in a TSV file.
#
# A benchmark, not a test: it asserts nothing about the figures and exits non-zero only when
# it cannot run. Loopback only, every command bounded by `timeout`; nginx and Larder are
# stopped by PID, the store paths it added deleted and its temporary directory removed.
#
# Usage: bench/vs-nginx.sh [--paths N] [--max-size SIZE] [--small] [--rounds R] [--bin PATH]
#                          [--timeout SECONDS] [--backend fs|postgres-s3] [--quickack]
#                          [--s3-redirect] [--keep] [--tsv FILE]
# See bench/README.md.
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PATHS_N=300          # store paths in the closure (leaves + wrappers)
MAX_SIZE=100M        # the largest leaf file (numfmt --from=iec syntax)
ROUNDS=5
BIN=$REPO/target/release/larder-server
CMD_TIMEOUT=900      # seconds, for any one command (a push, a pull, one curl run)
BACKEND=fs
KEEP=0
TSV_COPY=""
QUICKACK=0
S3_REDIRECT=0

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --paths) PATHS_N=$2; shift ;;
        --max-size) MAX_SIZE=$2; shift ;;
        --small) PATHS_N=40 MAX_SIZE=4M ;;
        --rounds) ROUNDS=$2; shift ;;
        --bin) BIN=$2; shift ;;
        --timeout) CMD_TIMEOUT=$2; shift ;;
        --backend) BACKEND=$2; shift ;;
        --quickack) QUICKACK=1 ;;
        --s3-redirect) S3_REDIRECT=1 ;;
        --keep) KEEP=1 ;;
        --tsv) TSV_COPY=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

log() { printf '[vs-nginx %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

case $BACKEND in
    fs|sqlite-fs) BACKEND=fs BACKEND_NOTE="SQLite + filesystem" ;;
    postgres-s3) BACKEND_NOTE="Postgres + Garage (S3)" ;;
    *) die "unknown --backend $BACKEND (fs or postgres-s3)" ;;
esac
if ((S3_REDIRECT)); then
    [[ $BACKEND == postgres-s3 ]] || die "--s3-redirect needs --backend postgres-s3"
    BACKEND_NOTE+=", NAR downloads answered with a 307 to the bucket (s3_redirect_downloads; Garage's CPU and RSS are not counted)"
fi
[[ $PATHS_N =~ ^[0-9]+$ ]] && ((PATHS_N >= 2)) || die "--paths must be an integer >= 2"
[[ $ROUNDS =~ ^[0-9]+$ ]] && ((ROUNDS >= 1)) || die "--rounds must be an integer >= 1"
[[ $CMD_TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
MAX_BYTES=$(numfmt --from=iec "$MAX_SIZE" 2>/dev/null) || die "bad --max-size $MAX_SIZE"
((MAX_BYTES >= 1)) || die "--max-size must be at least 1 byte"
[[ -x $BIN ]] || die "$BIN is not an executable (build it, or pass --bin PATH)"
((EUID == 0)) || die "run as root (nix without a daemon, as in /work/shared/docs/test-services.md)"
command -v nix >/dev/null || die "nix is not installed (apt-get install -y nix-bin)"
if ! command -v nginx >/dev/null; then
    log "installing nginx"
    apt-get install -y nginx >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y nginx >/dev/null 2>&1; } \
        || die "could not install nginx"
fi
command -v nginx >/dev/null || die "nginx not found after installing it"

# Machine state, before HOME is redirected.
NPROC=$(nproc)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
FREE_SUMMARY=$(free -m | awk '/^Mem:/ { printf "mem %s MiB total, %s used, %s free, %s available", $2, $3, $4, $7 }
                              /^Swap:/ { printf "; swap %s MiB total, %s used", $2, $3 }')
GIT_HEAD=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
NIX_VERSION=$(nix --version 2>/dev/null || echo unknown)
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: //')
CURL_VERSION=$(curl --version | head -1 | cut -d' ' -f1-2)
CLK_TCK=$(getconf CLK_TCK)
START_TS=$EPOCHSECONDS
RUN_ID="$(date +%H%M%S)$RANDOM"

T=$(mktemp -d /tmp/larder-vs-nginx.XXXXXX)
mkdir -p "$T"/{home,xdg,xdg-config,nixconf,input,runs,curl,narinfo,nginx-root,nginx-tmp}
TSV=$T/rounds.tsv

LARDER_PID="" NGINX_PID="" SERVICES_RUN="" PG_DB=""
NGINX_WORKERS=()
STORE_PATHS=()       # added to /nix/store by this run; deleted on exit

stop_pid() { # stop_pid PID NAME: SIGTERM, up to 35 s, then SIGKILL
    local pid=$1 name=$2
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 350); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name ($pid) still running 35 s after SIGTERM; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM ERR
    [[ -z $LARDER_PID ]] || stop_pid "$LARDER_PID" larder-server
    if [[ -n $NGINX_PID ]]; then
        stop_pid "$NGINX_PID" "nginx master"   # SIGTERM to the master stops its workers too
        for pid in "${NGINX_WORKERS[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then log "nginx worker $pid outlived its master; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
        done
    fi
    local p present=() left=0
    for p in "${STORE_PATHS[@]}"; do [[ -e $p ]] && present+=("$p"); done
    if ((${#present[@]})); then
        # One call: nix deletes referrers (wrappers, .drv files) before what they refer to.
        timeout -k 10 300 nix-store --delete "${present[@]}" >"$T/delete.log" 2>&1 || true
        for p in "${present[@]}"; do [[ -e $p ]] && left=$((left + 1)); done
        if ((left)); then
            log "could not delete $left of ${#present[@]} store paths:"; tail -5 "$T/delete.log" >&2
        fi
    fi
    if [[ -n $PG_DB ]]; then psql -q "$TEST_PG_URL/postgres" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true; fi
    # Stops what test-services started for this run (never a Postgres it did not start).
    if [[ -n $SERVICES_RUN ]]; then bash "$REPO/scripts/test-services.sh" stop "$SERVICES_RUN" >/dev/null 2>&1 || true; fi
    quickack_loopback_restore
    if [[ -n $TSV_COPY && -s $TSV ]]; then cp "$TSV" "$TSV_COPY" && log "rounds copied to $TSV_COPY"; fi
    if ((KEEP)); then
        log "kept $T"
    else
        chmod -R u+w "$T" 2>/dev/null || true
        rm -rf "$T"
    fi
    exit "$rc"
}
# shellcheck source=bench/loopback-quickack.sh
source "$REPO/bench/loopback-quickack.sh"
trap cleanup EXIT
trap 'log "FAILED at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
if ((QUICKACK)); then
    quickack_loopback_on || die "--quickack: could not set quickack on the loopback route"
    BACKEND_NOTE+=", loopback route with quickack 1 (see bench/loopback-quickack.sh)"
    log "loopback route: quickack 1 for this run"
fi

# Isolated nix client (no daemon, as root). Every nix command gets its own XDG_CACHE_HOME
# and netrc file on its command line as well; these are the defaults.
export HOME=$T/home XDG_CACHE_HOME=$T/xdg/default XDG_CONFIG_HOME=$T/xdg-config NIX_CONF_DIR=$T/nixconf
: >"$T/netrc-none"
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nnetrc-file = '"$T/netrc-none"$'\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0'
netrc() { printf 'machine 127.0.0.1 login x password %s\n' "$1" >"$2"; chmod 600 "$2"; }
bounded() { timeout -k 10 "$CMD_TIMEOUT" "$@"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# The closure. PATHS_N store paths: W = PATHS_N/10 small wrapper paths built with nix-build and
# PATHS_N - W leaf files added with nix-store --add. Leaf sizes are log-normal, taken at the
# quantiles (i - 0.5)/L of a normal distribution so that the set is the same on every run:
# size = MAX * exp(3.28 * (z - 2.2)), clamped to [1, MAX]; at the defaults that is 6 bytes to
# 100 MiB (4 files at the cap), 0.95 GiB in all. Every third leaf is /dev/urandom
# (incompressible), the others repeated text (compressible). Wrapper j is a derivation whose
# output is a text file naming its leaves (leaf i belongs to wrapper i mod W), wrapper j-1 and
# wrapper j/2 (builtins.storePath gives the leaves as inputs, so the mentioned paths become
# references); wrapper W is the root, whose closure is all PATHS_N paths. The run id in every
# name and text makes the paths new on each run.

W=$(((PATHS_N + 5) / 10)); ((W >= 1)) || W=1
L=$((PATHS_N - W))
((L >= 1)) || { W=1; L=$((PATHS_N - 1)); }
log "making the closure: $L leaves (largest $MAX_SIZE) + $W wrappers, run id $RUN_ID"
awk -v L="$L" -v MAX="$MAX_BYTES" -v SIGMA=3.28 -v C=2.2 '
function qnorm(p,   q, r) {   # inverse of the standard normal CDF (Acklam, |error| < 1.2e-9)
    if (p < 0.02425) {
        q = sqrt(-2 * log(p))
        return (((((-7.784894002430293e-03*q-3.223964580411365e-01)*q-2.400758277161838e+00)*q-2.549671010739076e+00)*q+4.374664141464968e+00)*q+2.938163982698783e+00) / ((((7.784695709041462e-03*q+3.224671290700398e-01)*q+2.445134137142996e+00)*q+3.754408661907416e+00)*q+1)
    }
    if (p > 1 - 0.02425) return -qnorm(1 - p)
    q = p - 0.5; r = q * q
    return (((((-3.969683028665376e+01*r+2.209460984245205e+02)*r-2.759285104469687e+02)*r+1.383577518672690e+02)*r-3.066479806614716e+01)*r+2.506628277459239e+00)*q / (((((-5.447609879822406e+01*r+1.615858368580409e+02)*r-1.556989798598866e+02)*r+6.680131188771972e+01)*r-1.328068155288572e+01)*r+1)
}
BEGIN {
    for (i = 1; i <= L; i++) {
        s = int(MAX * exp(SIGMA * (qnorm((i - 0.5) / L) - C)) + 0.5)
        if (s < 1) s = 1
        if (s > MAX) s = MAX
        printf "%d %d %s\n", i, s, (i % 3 == 0) ? "random" : "text"
    }
}' >"$T/leaves.txt"

LEAVES=()
batch=()
add_batch() {
    ((${#batch[@]})) || return 0
    local out
    out=$(timeout -k 10 "$CMD_TIMEOUT" nix-store --add "${batch[@]}") || die "nix-store --add failed"
    mapfile -t added <<<"$out"
    ((${#added[@]} == ${#batch[@]})) || die "nix-store --add printed ${#added[@]} paths for ${#batch[@]} files"
    LEAVES+=("${added[@]}"); STORE_PATHS+=("${added[@]}")
    rm -f "${batch[@]}"; batch=()
}
batch_bytes=0
while read -r i size kind; do
    f=$T/input/lvn-$RUN_ID-$i-$kind
    if [[ $kind == random ]]; then
        head -c "$size" /dev/urandom >"$f"
    else
        head -c "$size" < <(yes "larder vs-nginx $RUN_ID leaf $i: the quick brown fox jumps over the lazy dog") >"$f"
    fi
    batch+=("$f"); batch_bytes=$((batch_bytes + size))
    if ((${#batch[@]} >= 100 || batch_bytes >= 256 * 1024 * 1024)); then add_batch; batch_bytes=0; fi
done <"$T/leaves.txt"
add_batch

{
    echo 'let'
    echo '  mk = name: deps: derivation {'
    echo '    inherit name deps;'
    echo '    system = builtins.currentSystem;'
    echo '    builder = "/bin/sh";'
    echo '    args = [ "-c" "echo $deps > $out" ];'
    echo '    PATH = "/usr/bin:/bin";'
    echo '  };'
    echo '  p = builtins.storePath;'
    for ((j = 1; j <= W; j++)); do
        deps=""
        ((j > 1)) && deps+=" w$((j - 1))"
        ((j >= 4)) && deps+=" w$((j / 2))"
        for ((k = j % W; k < L; k += W)); do deps+=" (p \"${LEAVES[$k]}\")"; done
        echo "  w$j = mk \"lvn-$RUN_ID-w$j\" [$deps ];"
    done
    echo "in w$W"
} >"$T/closure.nix"
DRV=$(timeout -k 10 "$CMD_TIMEOUT" nix-instantiate "$T/closure.nix" 2>"$T/instantiate.log") \
    || { cat "$T/instantiate.log" >&2; die "nix-instantiate of the wrappers failed"; }
mapfile -t DRVS < <(nix-store -qR "$DRV" | grep '\.drv$')
for d in "${DRVS[@]}"; do STORE_PATHS+=("$(nix-store -q --outputs "$d")" "$d"); done
ROOT=$(timeout -k 10 "$CMD_TIMEOUT" nix-build --no-out-link --max-jobs 2 "$DRV" 2>"$T/build.log") \
    || { tail -20 "$T/build.log" >&2; die "nix-build of the wrappers failed"; }
mapfile -t CLOSURE < <(nix-store -qR "$ROOT")
N=${#CLOSURE[@]}
HASHES=()
for p in "${CLOSURE[@]}"; do h=${p#/nix/store/}; HASHES+=("${h:0:32}"); done
log "closure of $ROOT: $N paths"

# ---------------------------------------------------------------------------------------------
# nginx: two file:// binary caches of the closure (none, zstd) and a PUT-able prefix for pushes.

log "nix copy --to file://…/nginx-root/{none,zstd}"
for c in none zstd; do
    bounded nix copy --to "file://$T/nginx-root/$c?compression=$c" "$ROOT" >"$T/copy-file-$c.log" 2>&1 \
        || { tail -20 "$T/copy-file-$c.log" >&2; die "nix copy to the file:// store ($c) failed"; }
done
CACHE_INFO=$'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n'
for ((r = 1; r <= ROUNDS; r++)); do mkdir -p "$T/nginx-root/push-target-$r"; printf '%s' "$CACHE_INFO" >"$T/nginx-root/push-target-$r/nix-cache-info"; done

NAR_BYTES=$(cat "$T"/nginx-root/none/*.narinfo | awk '$1 == "NarSize:" { s += $2 } END { printf "%d", s }')
ZSTD_BYTES=$(cat "$T"/nginx-root/zstd/*.narinfo | awk '$1 == "FileSize:" { s += $2 } END { printf "%d", s }')

free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}
write_nginx_conf() {
    cat >"$T/nginx.conf" <<EOF
daemon off;
master_process on;
user root;
worker_processes auto;
pid $T/nginx.pid;
error_log $T/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    log_not_found off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000;
    types { text/x-nix-narinfo narinfo; }
    default_type application/octet-stream;
    client_body_temp_path $T/nginx-tmp/body;
    proxy_temp_path $T/nginx-tmp/proxy;
    fastcgi_temp_path $T/nginx-tmp/fastcgi;
    uwsgi_temp_path $T/nginx-tmp/uwsgi;
    scgi_temp_path $T/nginx-tmp/scgi;
    server {
        listen 127.0.0.1:$1;
        root $T/nginx-root;
        location ^~ /push-target- {
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            client_max_body_size 0;
        }
    }
}
EOF
}
for attempt in 1 2 3 4 5; do
    NGINX_PORT=$(free_port) || die "no free port for nginx"
    write_nginx_conf "$NGINX_PORT"
    nginx -c "$T/nginx.conf" -p "$T/" -e "$T/nginx-error.log" >"$T/nginx.out" 2>&1 &
    NGINX_PID=$!
    up=0
    for _ in $(seq 1 100); do
        kill -0 "$NGINX_PID" 2>/dev/null || break
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NGINX_PORT/none/nix-cache-info" || true) == 200 ]] && { up=1; break; }
        sleep 0.1
    done
    ((up)) && break
    log "nginx did not come up on port $NGINX_PORT (attempt $attempt):"; cat "$T/nginx.out" "$T/nginx-error.log" >&2 2>/dev/null || true
    stop_pid "$NGINX_PID" nginx; NGINX_PID=""
done
[[ -n $NGINX_PID ]] || die "nginx did not start"
for _ in $(seq 1 50); do
    mapfile -t NGINX_WORKERS < <(pgrep -P "$NGINX_PID" || true)
    ((${#NGINX_WORKERS[@]} >= NPROC)) && break
    sleep 0.1
done
((${#NGINX_WORKERS[@]})) || die "nginx master $NGINX_PID has no workers"
NGINX_URL=http://127.0.0.1:$NGINX_PORT
log "nginx master $NGINX_PID, workers ${NGINX_WORKERS[*]}, on $NGINX_URL"

# ---------------------------------------------------------------------------------------------
# Larder: embedded defaults (SQLite + local directory) or Postgres + Garage, private caches,
# tokens, the same pushes.

LARDER_DATA=$T/larder-data
if [[ $BACKEND == postgres-s3 ]]; then
    # A database of its own on the local Postgres and a bucket on a Garage node, both from
    # scripts/test-services.sh; every larder-server process below inherits the settings.
    bash "$REPO/scripts/test-services.sh" start >"$T/services.env" 2>"$T/services.log" || { cat "$T/services.log" >&2; die "could not start Postgres and Garage"; }
    # shellcheck disable=SC1091
    source "$T/services.env"
    SERVICES_RUN=$TEST_SERVICES_RUN_DIR
    PG_DB=larder_vs_nginx_$RUN_ID
    psql -q "$TEST_PG_URL/postgres" -c "CREATE DATABASE $PG_DB" || die "could not create database $PG_DB"
    BUCKET=larder-vs-nginx-$RUN_ID
    garage -c "$SERVICES_RUN/garage/garage.toml" bucket create "$BUCKET" >/dev/null || die "could not create bucket $BUCKET"
    garage -c "$SERVICES_RUN/garage/garage.toml" bucket allow --read --write --owner "$BUCKET" --key "$TEST_S3_ACCESS_KEY_ID" >/dev/null
    export LARDER_DATABASE_URL=$TEST_PG_URL/$PG_DB LARDER_STORAGE=s3 LARDER_S3_ENDPOINT=$TEST_S3_ENDPOINT LARDER_S3_BUCKET=$BUCKET \
        LARDER_S3_REGION=$TEST_S3_REGION LARDER_S3_ACCESS_KEY_ID=$TEST_S3_ACCESS_KEY_ID \
        LARDER_S3_SECRET_ACCESS_KEY=$TEST_S3_SECRET_ACCESS_KEY LARDER_S3_PATH_STYLE=true \
        LARDER_S3_REDIRECT_DOWNLOADS=$( ((S3_REDIRECT)) && echo true || echo false)
fi
LARDER_DATA_DIR=$LARDER_DATA LARDER_LISTEN=127.0.0.1:0 NO_COLOR=1 RUST_LOG=${RUST_LOG:-warn} \
    "$BIN" serve --port-file "$T/larder.port" >"$T/larder.log" 2>&1 &
LARDER_PID=$!
for _ in $(seq 1 300); do
    kill -0 "$LARDER_PID" 2>/dev/null || { cat "$T/larder.log" >&2; die "larder-server exited during start-up"; }
    [[ -s $T/larder.port ]] && break
    sleep 0.1
done
[[ -s $T/larder.port ]] || { cat "$T/larder.log" >&2; die "larder-server did not report its port within 30 s"; }
LARDER_URL=http://127.0.0.1:$(cat "$T/larder.port")
for _ in $(seq 1 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$LARDER_URL/healthz" || true) == 200 ]] && break
    sleep 0.1
done
log "larder-server $LARDER_PID ($BIN) on $LARDER_URL"

admin() { LARDER_DATA_DIR=$LARDER_DATA NO_COLOR=1 RUST_LOG=warn timeout -k 5 60 "$BIN" admin "$@"; }
token() { admin create-token --cache "$1" --perm "$2" --description vs-nginx | awk '$1 == "token:" { print $2 }'; }
declare -A READ_TOKEN
for c in bench bench-zstd; do
    admin create-cache "$c" --private >>"$T/admin.log" || die "admin create-cache $c failed"
    wt=$(token "$c" write); READ_TOKEN[$c]=$(token "$c" read)
    [[ -n $wt && -n ${READ_TOKEN[$c]} ]] || die "could not create the tokens of $c"
    netrc "$wt" "$T/netrc-$c-write"; netrc "${READ_TOKEN[$c]}" "$T/netrc-$c-read"
done
for ((r = 1; r <= ROUNDS; r++)); do
    admin create-cache "push-$r" --private >>"$T/admin.log" || die "admin create-cache push-$r failed"
    wt=$(token "push-$r" write); [[ -n $wt ]] || die "could not create the token of push-$r"
    netrc "$wt" "$T/netrc-push-$r-write"
done
log "nix copy --to $LARDER_URL/{bench?compression=none,bench-zstd?compression=zstd}"
for c in bench bench-zstd; do
    comp=$([[ $c == bench ]] && echo none || echo zstd)
    XDG_CACHE_HOME=$T/xdg/setup-$c bounded nix copy --option netrc-file "$T/netrc-$c-write" \
        --to "$LARDER_URL/$c?compression=$comp" "$ROOT" >"$T/push-larder-$c.log" 2>&1 \
        || { tail -20 "$T/push-larder-$c.log" >&2; die "nix copy to Larder ($c) failed"; }
done

# ---------------------------------------------------------------------------------------------
# URL lists, as curl config files (one url/output pair per transfer). Larder's NAR URLs come
# from its own narinfos (fetched here with the read token), nginx's from what file:// wrote.

curl_cfg() { # curl_cfg FILE TOKEN URL… → url/output pairs and the Authorization header
    local f=$1 tok=$2 u; shift 2
    { printf 'header = "Authorization: Bearer %s"\n' "$tok"
      for u in "$@"; do printf 'url = "%s"\noutput = "/dev/null"\n' "$u"; done; } >"$f"
}
nar_urls() { # nar_urls BASE NARINFO_DIR → BASE/<URL field> for every hash of the closure
    local h
    for h in "${HASHES[@]}"; do
        awk -v b="$1" '$1 == "URL:" { print b "/" $2 }' "$2/$h.narinfo"
    done
}
for c in bench bench-zstd; do
    mkdir -p "$T/narinfo/$c"
    { printf 'header = "Authorization: Bearer %s"\n' "${READ_TOKEN[$c]}"
      for h in "${HASHES[@]}"; do printf 'url = "%s"\noutput = "%s"\n' "$LARDER_URL/$c/$h.narinfo" "$T/narinfo/$c/$h.narinfo"; done
    } >"$T/curl/fetch-$c.cfg"
    codes=$(bounded curl -s -w '%{http_code}\n' -K "$T/curl/fetch-$c.cfg" | sort | uniq -c | tr -s ' \n' ' ' || true)
    [[ $codes == " $N 200 " ]] || die "Larder's $c narinfos answer: $codes (want $N × 200)"
done
# Every request carries a read token: Larder needs it; nginx ignores it (same request size).
NARINFO_URLS_NGINX=() NARINFO_URLS_LARDER=()
for h in "${HASHES[@]}"; do NARINFO_URLS_NGINX+=("$NGINX_URL/none/$h.narinfo"); NARINFO_URLS_LARDER+=("$LARDER_URL/bench/$h.narinfo"); done
curl_cfg "$T/curl/nginx-narinfo.cfg" "${READ_TOKEN[bench]}" "${NARINFO_URLS_NGINX[@]}"
curl_cfg "$T/curl/larder-narinfo.cfg" "${READ_TOKEN[bench]}" "${NARINFO_URLS_LARDER[@]}"
mapfile -t u < <(nar_urls "$NGINX_URL/none" "$T/nginx-root/none"); curl_cfg "$T/curl/nginx-nar-none.cfg" "${READ_TOKEN[bench]}" "${u[@]}"
mapfile -t u < <(nar_urls "$NGINX_URL/zstd" "$T/nginx-root/zstd"); curl_cfg "$T/curl/nginx-nar-zstd.cfg" "${READ_TOKEN[bench-zstd]}" "${u[@]}"
mapfile -t u < <(nar_urls "$LARDER_URL/bench" "$T/narinfo/bench"); curl_cfg "$T/curl/larder-nar-none.cfg" "${READ_TOKEN[bench]}" "${u[@]}"
mapfile -t u < <(nar_urls "$LARDER_URL/bench-zstd" "$T/narinfo/bench-zstd"); curl_cfg "$T/curl/larder-nar-zstd.cfg" "${READ_TOKEN[bench-zstd]}" "${u[@]}"
log "closure: $N paths, NAR $NAR_BYTES bytes (zstd files $ZSTD_BYTES bytes)"

# ---------------------------------------------------------------------------------------------
# Measurements. Peak RSS: VmHWM reset through /proc/PID/clear_refs before each measurement and
# read after it (Larder: the process; nginx: the sum over its workers). CPU: utime + stime from
# /proc/PID/stat (nginx: master + workers).

CLEAR_REFS_OK=1
rss_pids() { if [[ $1 == nginx ]]; then echo "${NGINX_WORKERS[*]}"; else echo "$LARDER_PID"; fi; }
cpu_pids() { if [[ $1 == nginx ]]; then echo "$NGINX_PID ${NGINX_WORKERS[*]}"; else echo "$LARDER_PID"; fi; }
hwm_reset() { local p; for p in $(rss_pids "$1"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || CLEAR_REFS_OK=0; done; }
hwm_kib() {
    local p v t=0
    for p in $(rss_pids "$1"); do
        v=$(awk '$1 == "VmHWM:" { print $2; exit }' "/proc/$p/status" 2>/dev/null || true)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
cpu_ticks() {
    local p v t=0
    for p in $(cpu_pids "$1"); do
        v=$( (sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }') 2>/dev/null || true)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
alive() { local p; for p in $(cpu_pids "$1"); do kill -0 "$p" 2>/dev/null || return 1; done; }

printf 'round\tserver\tmeasurement\trc\twall_s\tbytes\tMB_per_s\tnon_200\tconnections\tserver_cpu_s\tserver_hwm_kib\n' >"$TSV"
# measure ROUND SERVER NAME BYTES CMD…: runs CMD bounded, one TSV row. For curl, BYTES is
# taken from its -w output (size_download), as are the non-200 count and the connections.
measure() {
    local round=$1 srv=$2 name=$3 bytes=$4 out=$T/runs/$1-$2-$3 rc=0 t0 t1 c0 c1 hwm wall non200=- conns=-
    shift 4
    alive "$srv" || die "$srv is no longer running (before round $round $name)"
    hwm_reset "$srv"; c0=$(cpu_ticks "$srv"); t0=$EPOCHREALTIME
    "$@" >"$out.out" 2>"$out.err" || rc=$?
    t1=$EPOCHREALTIME; c1=$(cpu_ticks "$srv"); hwm=$(hwm_kib "$srv")
    wall=$(secs "$t0" "$t1")
    if [[ $1 == curl_seq || $1 == curl_par ]]; then
        bytes=$(awk '{ s += $2 } END { printf "%d", s }' "$out.out")
        non200=$(awk -v n="$N" '$1 != 200 { b++ } END { print b + (n - NR) }' "$out.out")
        conns=$(awk '{ s += $3 } END { printf "%d", s }' "$out.out")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$srv" "$name" "$rc" "$wall" "$bytes" \
        "$(awk -v b="$bytes" -v s="$wall" 'BEGIN { printf "%.1f", (s > 0) ? b / 1e6 / s : 0 }')" "$non200" "$conns" \
        "$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')" "$hwm" >>"$TSV"
    if ((rc != 0)) || [[ $non200 != - && $non200 != 0 ]]; then
        log "round $round $srv $name: exit $rc, $non200 non-200 answers; $(tail -3 "$out.err" | tr '\n' ' ')"
    else
        log "round $round $srv $name: $wall s"
    fi
}
CURL_W='%{http_code} %{size_download} %{num_connects}\n'
# -L follows --s3-redirect's 307s (curl sends the token only to Larder, not to the bucket's
# port); nothing else redirects.
curl_seq() { bounded curl -sL -w "$CURL_W" -K "$1"; }
curl_par() { bounded curl -sL -w "$CURL_W" --parallel --parallel-immediate --parallel-max "$2" -K "$1"; }

CPU_START_nginx=$(cpu_ticks nginx) CPU_START_larder=$(cpu_ticks larder)
for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r of $ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))"
    for s in nginx larder; do measure "$r" "$s" narinfo-1c 0 curl_seq "$T/curl/$s-narinfo.cfg"; done
    for s in nginx larder; do measure "$r" "$s" narinfo-32c 0 curl_par "$T/curl/$s-narinfo.cfg" 32; done
    for c in none zstd; do
        for s in nginx larder; do measure "$r" "$s" "nar-1c-$c" 0 curl_seq "$T/curl/$s-nar-$c.cfg"; done
    done
    for c in none zstd; do
        for s in nginx larder; do measure "$r" "$s" "nar-16c-$c" 0 curl_par "$T/curl/$s-nar-$c.cfg" 16; done
    done
    for s in nginx larder; do
        if [[ $s == nginx ]]; then from=$NGINX_URL/none nrc=$T/netrc-none; else from=$LARDER_URL/bench nrc=$T/netrc-bench-read; fi
        mkdir -p "$T/xdg/pull-$r-$s"
        measure "$r" "$s" pull-none "$NAR_BYTES" env XDG_CACHE_HOME="$T/xdg/pull-$r-$s" timeout -k 10 "$CMD_TIMEOUT" \
            nix copy --option netrc-file "$nrc" --option require-sigs false \
            --from "$from" --to "local?root=$T/pull-$r-$s" "$ROOT"
        chmod -R u+w "$T/pull-$r-$s" 2>/dev/null || true
        rm -rf "$T/pull-$r-$s" "$T/xdg/pull-$r-$s"
    done
    for s in nginx larder; do
        if [[ $s == nginx ]]; then to=$NGINX_URL/push-target-$r nrc=$T/netrc-none; else to=$LARDER_URL/push-$r nrc=$T/netrc-push-$r-write; fi
        mkdir -p "$T/xdg/push-$r-$s"
        measure "$r" "$s" push-none "$NAR_BYTES" env XDG_CACHE_HOME="$T/xdg/push-$r-$s" timeout -k 10 "$CMD_TIMEOUT" \
            nix copy --option netrc-file "$nrc" --to "$to?compression=none" "$ROOT"
        rm -rf "$T/xdg/push-$r-$s"
    done
    rm -rf "$T/nginx-root/push-target-$r"
done
CPU_END_nginx=$(cpu_ticks nginx) CPU_END_larder=$(cpu_ticks larder)
for s in nginx larder; do alive "$s" || die "$s died during the measurements"; done
mapfile -t workers_now < <(pgrep -P "$NGINX_PID" || true)
[[ "${workers_now[*]}" == "${NGINX_WORKERS[*]}" ]] || log "NOTE: nginx's workers changed during the run (${NGINX_WORKERS[*]} → ${workers_now[*]}); their figures are partial"
LARDER_WARN=$(sed 's/\x1b\[[0-9;]*m//g' "$T/larder.log" | grep -cE ' (WARN|ERROR) ' || true)

# ---------------------------------------------------------------------------------------------
# The table: medians over the rounds that succeeded (exit 0, every answer 200).

col() { # col SERVER MEASUREMENT COLUMN → median of COLUMN, or n/a
    awk -F'\t' -v s="$1" -v m="$2" -v c="$3" 'NR > 1 && $2 == s && $3 == m && $4 == 0 && ($8 == "-" || $8 == 0) { print $c }' "$TSV" \
        | sort -g | awk '{ a[NR] = $1 } END { if (!NR) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
failed() { awk -F'\t' -v s="$1" -v m="$2" 'NR > 1 && $2 == s && $3 == m && ($4 != 0 || ($8 != "-" && $8 != 0)) { n++ } END { print n + 0 }' "$TSV"; }
fmt_s() { awk -v x="$1" 'BEGIN { if (x == "n/a") print x; else if (x < 1) printf "%.3f s", x; else if (x < 100) printf "%.2f s", x; else printf "%.1f s", x }'; }
fmt_mbps() { awk -v x="$1" 'BEGIN { if (x == "n/a") print x; else if (x < 100) printf "%.1f", x; else printf "%.0f", x }'; }
human() { awk -v b="$1" 'BEGIN { if (b >= 2^30) printf "%.2f GiB", b / 2^30; else if (b >= 2^20) printf "%.1f MiB", b / 2^20; else printf "%.1f KiB", b / 2^10 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || a + 0 == 0) print "n/a"; else printf "%.2f", b / a }'; }
fail_note() { local f; f=$(failed "$1" "$2"); ((f == 0)) || printf ' (%s of %s rounds FAILED)' "$f" "$ROUNDS"; }
time_cell() { echo "$(fmt_s "$(col "$1" "$2" 5)")$(fail_note "$1" "$2")"; }
nar_cell() { # nar_cell SERVER CONNS → "t (MB/s) / t (MB/s)"
    local c out=()
    for c in none zstd; do out+=("$(fmt_s "$(col "$1" "nar-$2-$c" 5)") ($(fmt_mbps "$(col "$1" "nar-$2-$c" 7)") MB/s)$(fail_note "$1" "nar-$2-$c")"); done
    echo "${out[0]} / ${out[1]}"
}
nar_ratio() { echo "$(ratio "$(col nginx "nar-$1-none" 5)" "$(col larder "nar-$1-none" 5)") / $(ratio "$(col nginx "nar-$1-zstd" 5)" "$(col larder "nar-$1-zstd" 5)")"; }
peak_mib() { awk -F'\t' -v s="$1" 'NR > 1 && $2 == s && $11 > m { m = $11 } END { printf "%.1f", m / 1024 }' "$TSV"; }
cpu_s() { awk -v a="$1" -v b="$2" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }'; }
row() { printf '| %s | %s | %s | %s |\n' "$@"; }

RSS_NGINX=$(peak_mib nginx) RSS_LARDER=$(peak_mib larder)
CPU_NGINX=$(cpu_s "$CPU_START_nginx" "$CPU_END_nginx") CPU_LARDER=$(cpu_s "$CPU_START_larder" "$CPU_END_larder")
HWM_NOTE=$( ((CLEAR_REFS_OK)) && echo "VmHWM reset per measurement" || echo "lifetime VmHWM: clear_refs did not work" )

echo
echo "## Larder vs nginx: $N store paths, $(human "$NAR_BYTES") of NAR ($(human "$ZSTD_BYTES") as zstd), median of $ROUNDS round$( ((ROUNDS == 1)) || echo s)"
echo
echo "- machine: nproc $NPROC; load average at start $LOAD_START; $FREE_SUMMARY"
echo "- Larder: $BIN (git HEAD of $REPO: $GIT_HEAD), $BACKEND_NOTE, private caches, read token on every request; $LARDER_WARN WARN/ERROR log lines"
echo "- nginx: $NGINX_VERSION, ${#NGINX_WORKERS[@]} workers, file:// binary caches written by $NIX_VERSION; client $CURL_VERSION"
echo "- generated with: --paths $PATHS_N --max-size $MAX_SIZE --rounds $ROUNDS; took $((EPOCHSECONDS - START_TS)) s"
echo
row "" nginx Larder "ratio (Larder/nginx)"
row --- --- --- ---
row "all $N narinfos, 1 connection" "$(time_cell nginx narinfo-1c)" "$(time_cell larder narinfo-1c)" "$(ratio "$(col nginx narinfo-1c 5)" "$(col larder narinfo-1c 5)")"
row "all $N narinfos, 32 connections" "$(time_cell nginx narinfo-32c)" "$(time_cell larder narinfo-32c)" "$(ratio "$(col nginx narinfo-32c 5)" "$(col larder narinfo-32c 5)")"
row "all NARs, 1 connection (none / zstd)" "$(nar_cell nginx 1c)" "$(nar_cell larder 1c)" "$(nar_ratio 1c)"
row "all NARs, 16 connections (none / zstd)" "$(nar_cell nginx 16c)" "$(nar_cell larder 16c)" "$(nar_ratio 16c)"
row "nix copy --from (none)" "$(time_cell nginx pull-none)" "$(time_cell larder pull-none)" "$(ratio "$(col nginx pull-none 5)" "$(col larder pull-none 5)")"
row "nix copy --to push (none)" "$(time_cell nginx push-none)" "$(time_cell larder push-none)" "$(ratio "$(col nginx push-none 5)" "$(col larder push-none 5)")"
row "server peak RSS" "$RSS_NGINX MiB (sum of ${#NGINX_WORKERS[@]} workers)" "$RSS_LARDER MiB" "$(ratio "$RSS_NGINX" "$RSS_LARDER")"
row "server CPU s" "$CPU_NGINX" "$CPU_LARDER" "$(ratio "$CPU_NGINX" "$CPU_LARDER")"
echo
echo "Wall times are medians of the rounds that succeeded; ratio > 1 means Larder took longer or used more."
echo "MB/s = 10^6 bytes per second of what was downloaded (zstd: compressed bytes). Peak RSS: $HWM_NOTE."
echo "CPU s: utime + stime of the server over all rounds (nginx: master + workers). Curl narinfo and"
echo "NAR runs use one curl process (sequential on one keep-alive connection, or --parallel"
echo "--parallel-immediate --parallel-max 32/16). The client shares the $NPROC cores with the servers."
if ((KEEP)) || [[ -n $TSV_COPY ]]; then
    echo "Every round: ${TSV_COPY:-$TSV}"
else
    echo "Every round: $TSV (removed on exit; keep it with --keep or --tsv FILE)"
fi
