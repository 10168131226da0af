#!/usr/bin/env bash
# `larder push` against the stock client on the same closure: `larder push` to Larder,
# `nix copy --to http://…` to Larder, and `nix copy --to file://…` (no server at all), each
# with zstd, interleaved for --rounds rounds, each round into fresh caches. Prints the
# median wall time of each, the ratios, and the peak RSS of the clients and of the server.
#
# A benchmark, not a test: it asserts nothing about the figures. Loopback only; every
# command is bounded by `timeout`; the server is stopped by PID and the temporary
# directory (caches, data, the generated closure's nix expression) removed.
#
# Usage: bench/push.sh [--paths N] [--size SIZE] [--rounds R] [--jobs J]
#   --paths  store paths in the closure (default 40), each referencing the one before
#   --size   random bytes per path (default 4M; numfmt --from=iec)
#   --rounds default 3
#   --jobs   larder push --jobs (default 4)
# Needs release builds: cargo build --release -p larder-api -p larder-cli
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PATHS_N=40
SIZE=4M
ROUNDS=3
JOBS=4
while (($#)); do
    case $1 in
        --paths) PATHS_N=$2; shift ;;
        --size) SIZE=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --jobs) JOBS=$2; shift ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
SERVER_BIN=$REPO/target/release/larder-server
CLI_BIN=$REPO/target/release/larder
for bin in "$SERVER_BIN" "$CLI_BIN"; do
    [[ -x $bin ]] || { echo "$bin missing: cargo build --release -p larder-api -p larder-cli" >&2; exit 1; }
done
BYTES=$(numfmt --from=iec "$SIZE")

WORK=$(mktemp -d /tmp/larder-bench-push.XXXXXX)
SERVER_PID=
cleanup() {
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/home/.config" "$WORK/nix-conf" "$WORK/cache"
export HOME=$WORK/home XDG_CONFIG_HOME=$WORK/home/.config XDG_CACHE_HOME=$WORK/cache NIX_CONF_DIR=$WORK/nix-conf
cat > "$WORK/nix-conf/nix.conf" <<EOF
experimental-features = nix-command
sandbox = false
build-users-group =
substituters =
netrc-file = $WORK/netrc
narinfo-cache-negative-ttl = 0
EOF

# The closure: a chain of paths of random bytes, unique to this run.
tag=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat > "$WORK/closure.nix" <<EOF
let
  mk = i: prev: derivation {
    name = "bench-push-$tag-\${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "/usr/bin/mkdir \$out && /usr/bin/head -c $BYTES /dev/urandom > \$out/data && echo \${prev} > \$out/prev" ];
  };
  chain = n: if n == 0 then "none" else mk n (chain (n - 1));
in chain $PATHS_N
EOF
echo "building $PATHS_N paths of $SIZE" >&2
TOP=$(timeout 900 nix-build "$WORK/closure.nix" --no-out-link 2>/dev/null)
[[ $(nix-store -qR "$TOP" | wc -l) == "$PATHS_N" ]] || { echo "the closure has not $PATHS_N paths" >&2; exit 1; }

# The server, on its embedded defaults in the work directory.
LARDER_DATA_DIR=$WORK/data LARDER_LISTEN=127.0.0.1:0 RUST_LOG=warn,larder_api::startup=info "$SERVER_BIN" > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    PORT=$(grep -o 'port=[0-9]*' "$WORK/server.log" | head -1 | cut -d= -f2 || true)
    [[ -n $PORT ]] && break
    sleep 0.1
done
[[ -n ${PORT:-} ]] || { echo "the server did not start" >&2; cat "$WORK/server.log" >&2; exit 1; }
BASE=http://127.0.0.1:$PORT

api() { curl -sf -H 'content-type: application/json' "$@"; }
api -X POST "$BASE/api/v1/accounts" -d '{"username":"bench","email":"bench@example.com","password":"correct horse battery staple"}' >/dev/null
SESSION=$(api -X POST "$BASE/api/v1/sessions" -d '{"username":"bench","password":"correct horse battery staple"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
TOKEN=$(api -X POST "$BASE/api/v1/tokens" -H "authorization: Bearer $SESSION" -d '{"kind":"personal","permission":"admin"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
echo "machine 127.0.0.1 login larder password $TOKEN" > "$WORK/netrc"
"$CLI_BIN" login --server "$BASE" --token "$TOKEN" >/dev/null

# One timed run: prints "seconds peak-RSS-KiB client-CPU-seconds".
timed() {
    /usr/bin/time -f '%e %M %U %S' -o "$WORK/time" timeout 900 "$@" > "$WORK/out" 2>&1 || { cat "$WORK/out" >&2; exit 1; }
    awk '{printf "%s %s %.2f\n", $1, $2, $3 + $4}' "$WORK/time"
}

# The server's CPU seconds so far (user + system, from /proc).
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$SERVER_PID/stat"; }

declare -A SECS RSS CPU SCPU
for round in $(seq "$ROUNDS"); do
    for how in larder-push nix-copy-http nix-copy-file; do
        cache=r$round-$how
        before=$(server_cpu)
        case $how in
            larder-push)
                api -X POST "$BASE/api/v1/caches" -H "authorization: Bearer $TOKEN" -d "{\"name\":\"$cache\",\"public\":false}" >/dev/null
                read -r s m c < <(timed "$CLI_BIN" push "$cache" "$TOP" --jobs "$JOBS") ;;
            nix-copy-http)
                api -X POST "$BASE/api/v1/caches" -H "authorization: Bearer $TOKEN" -d "{\"name\":\"$cache\",\"public\":false}" >/dev/null
                read -r s m c < <(timed nix copy --to "$BASE/$cache?compression=zstd" "$TOP") ;;
            nix-copy-file)
                read -r s m c < <(timed nix copy --to "file://$WORK/file-$cache?compression=zstd" "$TOP") ;;
        esac
        sc=$(awk -v a="$(server_cpu)" -v b="$before" 'BEGIN {printf "%.2f", a - b}')
        SECS[$how]+="$s "
        RSS[$how]+="$m "
        CPU[$how]+="$c "
        SCPU[$how]+="$sc "
        echo "round $round $how: ${s}s, client peak RSS ${m} KiB, CPU client ${c}s server ${sc}s" >&2
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
server_rss=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
file_median=$(echo "${SECS[nix-copy-file]}" | median)
echo
echo "closure: $PATHS_N paths x $SIZE random bytes (zstd), $ROUNDS rounds, larder push --jobs $JOBS"
echo "| client | median s | / nix copy file:// | median client peak RSS KiB | median CPU s, client | median CPU s, server |"
echo "|---|---|---|---|---|---|"
for how in larder-push nix-copy-http nix-copy-file; do
    s=$(echo "${SECS[$how]}" | median)
    echo "| $how | $s | $(awk -v a="$s" -v b="$file_median" 'BEGIN {printf "%.2f", a / b}') | $(echo "${RSS[$how]}" | median) | $(echo "${CPU[$how]}" | median) | $(echo "${SCPU[$how]}" | median) |"
done
echo "server peak RSS: $server_rss KiB"
nix-store --delete "$TOP" >/dev/null 2>&1 || true
