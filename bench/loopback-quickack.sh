# Sourced by the benchmarks that talk to Garage (vs-nginx.sh --backend postgres-s3 and
# vs-s3-direct.sh) for their --quickack option.
#
# Garage's HTTP server does not set TCP_NODELAY. On a keep-alive connection it writes a
# response's headers, then its body in a second small write, which Nagle holds until the
# headers are acknowledged; the client, having nothing to send, delays that ACK (40 ms on
# Linux). So every GET of an object smaller than a segment costs ~43 ms after a
# connection's first two, whoever the client is (curl as much as Larder's S3 client).
# The route attribute `quickack 1` makes the kernel acknowledge at once on 127.0.0.1, which
# removes the stall for every process on the machine for as long as it is set: the figures
# then show what Larder costs, not what Garage's missing TCP_NODELAY costs. Both servers
# being compared run under the same setting.

QUICKACK_ROUTE_SAVED=""

# Sets `quickack 1` on the local route of 127.0.0.1 and remembers the route as it was.
quickack_loopback_on() {
    local route
    route=$(ip -o route show table local | awk '$1 == "local" && $2 == "127.0.0.1"')
    [[ -n $route ]] || { echo "no local route for 127.0.0.1 in table local" >&2; return 1; }
    if [[ $route == *quickack* ]]; then return 0; fi
    # Remembered first: a signal between the two still finds the route to restore.
    QUICKACK_ROUTE_SAVED=$route
    # shellcheck disable=SC2086  # the route's words are ip's arguments
    ip route change $route table local quickack 1
}

# Puts the route back as quickack_loopback_on found it (no-op when it changed nothing).
quickack_loopback_restore() {
    [[ -n $QUICKACK_ROUTE_SAVED ]] || return 0
    # shellcheck disable=SC2086
    ip route change $QUICKACK_ROUTE_SAVED table local || echo "could not restore the route: $QUICKACK_ROUTE_SAVED" >&2
    QUICKACK_ROUTE_SAVED=""
}
