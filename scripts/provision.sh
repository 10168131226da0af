#!/usr/bin/env bash
# Installs what Larder's tests need and is missing: the nix client, PostgreSQL (with a
# trust rule for postgres@127.0.0.1), the garage binary, and Chromium with the npm packages
# of the dashboard's browser tests. Idempotent: what is there is left as it is. On a fresh
# Debian machine run it as root (it uses apt-get).
#
# It installs only; it never starts a service. (Installing the postgresql package may start
# its cluster: that is the package's own postinst. Starting and stopping the services for a
# test run is scripts/test-services.sh's job, which calls this first.)
#
# Usage:
#   bash scripts/provision.sh [nix|nix_trixie|postgres|garage|browser ...]   # default: all
#   source scripts/provision.sh                           # only define larder_provision*
#
# Functions (when sourced):
#   larder_provision           all of the below
#   larder_provision_nix       nix-bin via apt-get when `nix` is not on PATH
#   larder_provision_nix_trixie  a Debian trixie chroot with its nix-bin (Nix 2.26) at
#                              $LARDER_TRIXIE_NIX_ROOT (/var/cache/larder/trixie-nix), built
#                              once with mmdebstrap (installed via apt-get when missing); the
#                              tests run the newer client in it (see tests/src/nix.rs)
#   larder_provision_postgres  postgresql via apt-get when no server is installed and none
#                              answers on 127.0.0.1:5432; the pg_hba.conf trust rule for
#                              postgres@127.0.0.1 in the local cluster when it is missing
#   larder_provision_garage    `cargo install garage --locked` when garage is neither on
#                              PATH nor in ~/.cargo/bin (~/.cargo/bin is put on PATH)
#   larder_provision_browser   Debian's chromium via apt-get when /usr/bin/chromium is
#                              missing; `npm ci` in tests/browser (playwright-core and
#                              axe-core, pinned in its package-lock.json; no browser download)
#                              when its node_modules is missing or not what the lock pins

set -euo pipefail

LARDER_PG_HOST=127.0.0.1
LARDER_PG_PORT=5432

_ts_log_tag=${_ts_log_tag:-test-services}
_ts_log() { printf '[%s] %s\n' "$_ts_log_tag" "$*" >&2; }
_ts_die() { _ts_log "ERROR: $*"; return 1; }
_ts_have() { command -v "$1" >/dev/null 2>&1; }

_ts_apt_updated=${_ts_apt_updated:-}
_ts_apt_install() {
    _ts_have apt-get || _ts_die "apt-get not found; install $* by hand"
    if [[ -z "$_ts_apt_updated" ]]; then
        _ts_log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        _ts_apt_updated=1
    fi
    _ts_log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2
}

# True if something accepts TCP connections on 127.0.0.1:$1.
_ts_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ---------------------------------------------------------------------------------------
# nix

larder_provision_nix() {
    if _ts_have nix; then
        return 0
    fi
    _ts_log "nix not found: installing Debian's nix-bin"
    _ts_apt_install nix-bin
    _ts_have nix || _ts_die "nix still not on PATH after installing nix-bin"
}

# ---------------------------------------------------------------------------------------
# A newer nix (Debian trixie's nix-bin, 2.26) in a chroot: what current clients ask of a
# binary cache (realisations, `nix store info`) differs from bookworm's 2.8.

LARDER_TRIXIE_NIX_ROOT=${LARDER_TRIXIE_NIX_ROOT:-/var/cache/larder/trixie-nix}

larder_provision_nix_trixie() {
    local root=$LARDER_TRIXIE_NIX_ROOT
    # The marker is written last: a chroot cut short by a failed download is rebuilt.
    if [[ -x "$root/usr/bin/nix" && -e "$root/.larder-complete" ]]; then
        # Mount points for each test's own store and directory (tests/src/nix.rs).
        mkdir -p "$root/nix" "$root/larder"
        return 0
    fi
    _ts_have mmdebstrap || _ts_apt_install mmdebstrap
    local building="$root.building"
    rm -rf "$building"
    mkdir -p "$(dirname "$root")"
    _ts_log "building a Debian trixie chroot with nix-bin at $root (once; a few minutes)"
    mmdebstrap --variant=apt --include=nix-bin trixie "$building" >&2
    [[ -x "$building/usr/bin/nix" ]] || _ts_die "no nix in the trixie chroot $building after mmdebstrap"
    mkdir -p "$building/nix" "$building/larder"
    touch "$building/.larder-complete"
    rm -rf "$root"
    mv "$building" "$root"
    # nix needs /proc; mounted in a private namespace, so it goes when the command ends.
    _ts_log "trixie nix: $(unshare --mount --propagation private -- sh -c 'mount --rbind /proc "$1/proc" && chroot "$1" nix --version' sh "$root")"
}

# ---------------------------------------------------------------------------------------
# PostgreSQL

_ts_pg_ready() {
    _ts_have pg_isready && pg_isready -q -h "$LARDER_PG_HOST" -p "$LARDER_PG_PORT"
}

# True if a PostgreSQL server (pg_ctlcluster and a cluster config) is installed here.
_ts_pg_installed() {
    _ts_have pg_ctlcluster && [[ -n "$(_ts_pg_version)" ]]
}

# Prints the newest PostgreSQL version with a cluster config in /etc/postgresql (or nothing).
_ts_pg_version() {
    local dir versions=()
    for dir in /etc/postgresql/*/; do
        [[ -d "$dir" ]] && versions+=("$(basename "$dir")")
    done
    ((${#versions[@]} > 0)) || return 0
    printf '%s\n' "${versions[@]}" | sort -V | tail -n1
}

larder_provision_postgres() {
    if _ts_pg_ready; then
        _ts_log "PostgreSQL answers on $LARDER_PG_HOST:$LARDER_PG_PORT: nothing to install"
        return 0
    fi
    if ! _ts_pg_installed; then
        if _ts_port_open "$LARDER_PG_PORT"; then
            # A server answers (not one of this machine's clusters, or pg_isready is missing):
            # no server of our own, only the client tools the tests use (pg_isready, psql).
            _ts_log "something answers on $LARDER_PG_HOST:$LARDER_PG_PORT but pg_isready does not: installing postgresql-client"
            _ts_apt_install postgresql-client
            return 0
        fi
        _ts_log "PostgreSQL not running and not installed: installing it"
        _ts_apt_install postgresql
        _ts_pg_installed || _ts_die "no PostgreSQL cluster in /etc/postgresql after installing postgresql"
    fi
    local version
    version=$(_ts_pg_version)
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    [[ -r "$hba" ]] || _ts_die "$hba not found (PostgreSQL $version has no cluster 'main')"
    # Trust local TCP connections for the postgres user (tests connect without a password).
    if grep -Eq '^host[[:space:]]+all[[:space:]]+(all|postgres)[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        return 0
    fi
    if [[ ! -w "$hba" ]]; then
        _ts_log "warning: cannot edit $hba; add 'host all postgres 127.0.0.1/32 trust' to it by hand"
        return 0
    fi
    _ts_log "adding a trust rule for postgres@127.0.0.1 to $hba"
    sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    # A running cluster (e.g. started by the package's postinst) reads the rule on reload.
    if pg_ctlcluster --skip-systemctl-redirect "$version" main status >/dev/null 2>&1; then
        _ts_log "reloading PostgreSQL $version (cluster main) for the new rule"
        pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    fi
}

# ---------------------------------------------------------------------------------------
# Garage

# Puts ~/.cargo/bin (where `cargo install` puts garage) on PATH when it exists.
_ts_cargo_bin_on_path() {
    if [[ -d "$HOME/.cargo/bin" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
}

larder_provision_garage() {
    _ts_cargo_bin_on_path
    if _ts_have garage; then
        return 0
    fi
    _ts_have cargo || _ts_die "garage is missing and cargo is not installed to build it"
    _ts_log "garage not found: building it with 'cargo install garage --locked' (once; ~15 min on 2 cores)"
    cargo install garage --locked >&2
    _ts_cargo_bin_on_path
    _ts_have garage || _ts_die "garage still not on PATH after cargo install"
}

# ---------------------------------------------------------------------------------------
# The dashboard's browser tests (tests/browser): Debian's Chromium, driven by playwright-core

LARDER_CHROMIUM=/usr/bin/chromium
_ts_browser_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/browser"

# True if tests/browser/node_modules holds what package-lock.json pins: npm ci writes
# node_modules/.package-lock.json, which must name every locked package at its version.
_ts_browser_modules_fresh() {
    local lock="$_ts_browser_dir/package-lock.json" installed="$_ts_browser_dir/node_modules/.package-lock.json"
    [[ -r "$installed" && -r "$lock" ]] || return 1
    node -e '
        const [lock, got] = process.argv.slice(1).map((f) => JSON.parse(require("fs").readFileSync(f, "utf8")).packages);
        for (const [path, info] of Object.entries(lock)) {
            if (path === "") continue;
            if (!got[path] || got[path].version !== info.version) process.exit(1);
        }' "$lock" "$installed" 2>/dev/null
}

larder_provision_browser() {
    if [[ ! -x "$LARDER_CHROMIUM" ]]; then
        _ts_log "$LARDER_CHROMIUM not found: installing Debian's chromium"
        _ts_apt_install chromium
        [[ -x "$LARDER_CHROMIUM" ]] || _ts_die "$LARDER_CHROMIUM still missing after installing chromium"
    fi
    if ! _ts_have node || ! _ts_have npm; then
        _ts_log "node/npm not found: installing Debian's nodejs and npm"
        _ts_apt_install nodejs npm
    fi
    # playwright-core 1.65 needs Node.js 20 or later.
    node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
        _ts_die "the browser tests need Node.js >= 20 (playwright-core); found $(node --version)"
    if _ts_browser_modules_fresh; then
        return 0
    fi
    _ts_log "tests/browser/node_modules missing or stale: npm ci (playwright-core, axe-core)"
    # playwright-core never downloads a browser; the tests use $LARDER_CHROMIUM.
    (cd "$_ts_browser_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2)
    _ts_browser_modules_fresh || _ts_die "tests/browser/node_modules does not match package-lock.json after npm ci"
}

# ---------------------------------------------------------------------------------------

larder_provision() {
    larder_provision_nix
    larder_provision_nix_trixie
    larder_provision_postgres
    larder_provision_garage
    larder_provision_browser
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    _ts_log_tag=provision
    (($# > 0)) || set -- nix nix_trixie postgres garage browser
    for what in "$@"; do
        case "$what" in
        nix | nix_trixie | postgres | garage | browser) ;;
        *)
            echo "usage: $0 [nix|nix_trixie|postgres|garage|browser ...]   (default: all; or source it)" >&2
            exit 2
            ;;
        esac
    done
    for what in "$@"; do
        "larder_provision_$what"
    done
    _ts_log "done: ${*}"
fi
