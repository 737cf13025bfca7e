#!/bin/bash
# lifeguard-probe: the container image's health check and pre-stop wait, with nothing but bash.
#
#   lifeguard-probe health [PATH]        GET PATH (default /healthz) on the metrics address; exit 0 on HTTP 200
#   lifeguard-probe wait-idle [SECONDS]  wait until no client is connected (lifeguard_client_connections sums to 0),
#                                        at most SECONDS (default: LIFEGUARD_DRAIN_TIMEOUT in seconds, else 30);
#                                        exit 0 when idle, 1 when clients were still connected at the deadline
#
# The slim runtime image has no curl or wget, and installing one would add a dozen libraries to an image that
# should hold libpq5 and libmicrohttpd12 only; bash (Essential in Debian) can speak HTTP/1.0 over /dev/tcp.
# The address is LIFEGUARD_METRICS_LISTEN (default 127.0.0.1:9187); a wildcard host is reached on loopback.
set -uo pipefail

listen=${LIFEGUARD_METRICS_LISTEN:-127.0.0.1:9187}
port=${listen##*:}
host=${listen%:*}
host=${host#[}
host=${host%]}
case $host in
'' | 0.0.0.0 | '*') host=127.0.0.1 ;;
:: | ::0) host=::1 ;;
esac

# get PATH: prints the whole HTTP response (status line, headers, body); fails if nothing answers in 3 seconds.
get() {
    # shellcheck disable=SC2016 # the inner script expands its own positional arguments
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: lifeguard\r\nConnection: close\r\n\r\n" "$3" >&3
        cat <&3
    ' _ "$host" "$port" "$1" 2>/dev/null
}

health() {
    local path=${1:-/healthz} response status
    response="$(get "$path")" || {
        echo "lifeguard-probe: nothing answers on $host:$port" >&2
        return 1
    }
    status="$(head -n 1 <<<"$response" | tr -d '\r')"
    if [[ $status =~ ^HTTP/1\.[01]\ 200 ]]; then
        return 0
    fi
    echo "lifeguard-probe: $path answered '$status': $(tail -n 1 <<<"$response")" >&2
    return 1
}

# Sums lifeguard_client_connections over its states; prints nothing when the metric is not there.
clients() {
    get /metrics | awk '/^lifeguard_client_connections[{ ]/ { sum += $NF; seen = 1 } END { if (seen) print sum + 0 }'
}

wait_idle() {
    local limit=${1:-} deadline count
    if [[ -z $limit ]]; then
        limit=${LIFEGUARD_DRAIN_TIMEOUT:-30}
        limit=${limit%s}
    fi
    [[ $limit =~ ^[0-9]+$ ]] || {
        echo "lifeguard-probe: wait-idle takes whole seconds, got '$limit'" >&2
        return 2
    }
    deadline=$((SECONDS + limit))
    while :; do
        count="$(clients)"
        if [[ -z $count ]]; then
            echo "lifeguard-probe: no lifeguard_client_connections on $host:$port; not waiting" >&2
            return 0
        fi
        if [[ $count == 0 ]]; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            echo "lifeguard-probe: $count client connection(s) still open after ${limit}s" >&2
            return 1
        fi
        sleep 1
    done
}

case ${1:-} in
health) health "${2:-}" ;;
wait-idle) wait_idle "${2:-}" ;;
*)
    sed -n '3,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
