# shellcheck shell=bash
# Shared by the bench/ scripts. Source it; do not run it.
#
# Builds on scripts/lib/common.sh (installers, pg_start, free_port, wait_tcp, on_exit): every server started here
# listens on 127.0.0.1 only, lives in a temporary directory and is stopped by the EXIT trap.

# shellcheck source=../scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/common.sh"
BENCH_DIR="$LIFEGUARD_ROOT/bench"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"

# The pooler settings both poolers get (the same settings on both sides).
POOL_SIZE="${POOL_SIZE:-20}"
MAX_CLIENT_CONN="${MAX_CLIENT_CONN:-5000}"
PG_MAX_CONNECTIONS="${PG_MAX_CONNECTIONS:-300}"
PGBENCH_SCALE="${PGBENCH_SCALE:-10}"

# Raises this shell's open-file limit (inherited by PostgreSQL, the poolers and pgbench) to WANT or the hard limit.
raise_fd_limit() {
    local want=${1:-20000} hard
    hard="$(ulimit -Hn)"
    [[ $hard != unlimited && $hard -lt $want ]] && want=$hard
    ulimit -n "$want" || die "ulimit -n $want failed"
    FD_LIMIT="$(ulimit -n)"
    log "open-file limit $FD_LIMIT"
}

# Everything the benchmarks need: PostgreSQL 15 with pgbench, PgBouncer, curl, python3.
bench_install() {
    install_postgresql
    apt_install_missing pgbouncer curl python3
    command -v pgbouncer >/dev/null 2>&1 || die "pgbouncer not found after installing it"
}

# Sets LIFEGUARD to LIFEGUARD_BIN, or to a fresh release build of this checkout.
lifeguard_binary() {
    if [[ -n ${LIFEGUARD_BIN:-} ]]; then
        [[ -x $LIFEGUARD_BIN ]] || die "LIFEGUARD_BIN=$LIFEGUARD_BIN is not an executable"
        LIFEGUARD="$LIFEGUARD_BIN"
    else
        apt_install_missing pkg-config libpq-dev libmicrohttpd-dev libgnutls28-dev libcrypt-dev
        swift_build -c release --product lifeguard || die "the release build failed or has warnings (log: $BUILD_LOG)"
        LIFEGUARD="$(swift_bin_path -c release)/lifeguard"
    fi
}

# A throwaway PostgreSQL (common.sh's pg_start) restarted with max_connections (and the lines of PG_EXTRA_CONF
# added to postgresql.conf), and pgbench tables in PG_DB.
bench_pg_start() {
    local extra_conf=${PG_EXTRA_CONF:-}
    pg_start
    _pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -w -t 30 -s -m fast stop >/dev/null
    _pg_as_owner sh -c "printf 'max_connections = %s\nshared_buffers = 128MB\n' '$PG_MAX_CONNECTIONS' \
        >> '$PG_DIR/data/postgresql.conf'"
    if [[ -n $extra_conf ]]; then
        # shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
        _pg_as_owner sh -c 'printf "%s\n" "$1" >> "$2"' sh "$extra_conf" "$PG_DIR/data/postgresql.conf"
    fi
    pg_ctl_start || {
        tail -n 20 "$PG_DIR/postgres.log" >&2
        die "PostgreSQL did not restart with max_connections=$PG_MAX_CONNECTIONS"
    }
    log "pgbench -i -s $PGBENCH_SCALE"
    env -u PGPASSWORD -u PGSERVICE "$PG_BIN/pgbench" -i -q -s "$PGBENCH_SCALE" -h "$PG_HOST" -p "$PG_PORT" \
        -U "$PG_USER" "$PG_DB" >"$PG_DIR/pgbench-init.log" 2>&1 || {
        cat "$PG_DIR/pgbench-init.log" >&2
        die "pgbench -i failed"
    }
}

# pg_cleanup_dir DIR: common.sh's pg_cleanup for a server other than the one PG_DIR names (a second instance).
pg_cleanup_dir() {
    local PG_DIR=$1
    pg_cleanup
}

# bench_tls_certs: a throwaway CA and a server certificate it signed (subjectAltName DNS:localhost and
# IP:127.0.0.1, valid for 2 days) made with openssl in a temporary directory that the EXIT trap removes; PostgreSQL,
# PgBouncer and Lifeguard all present that one certificate. TLS_KEY_TYPE picks the keys: rsa (2048 bits, the
# default) or ec (P-256). The files belong to `postgres` when we are root (PostgreSQL and PgBouncer run as it and
# PostgreSQL wants its key private to its owner). Sets TLS_DIR TLS_CA TLS_CERT TLS_KEY.
bench_tls_certs() {
    local key_type=${TLS_KEY_TYPE:-rsa} usage=digitalSignature
    local -a newkey
    case $key_type in
    rsa) newkey=(-newkey rsa:2048) usage="digitalSignature, keyEncipherment" ;;
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    *) die "TLS_KEY_TYPE must be rsa or ec, got '$key_type'" ;;
    esac
    command -v openssl >/dev/null 2>&1 || apt_install_missing openssl
    TLS_DIR="$(mktemp -d -t lifeguard-bench-tls.XXXXXX)"
    on_exit "rm -rf '$TLS_DIR'"
    TLS_CA="$TLS_DIR/ca.crt" TLS_CERT="$TLS_DIR/server.crt" TLS_KEY="$TLS_DIR/server.key"
    {
        openssl req -x509 -new -nodes "${newkey[@]}" -sha256 -days 2 -subj "/CN=Lifeguard bench CA" \
            -keyout "$TLS_DIR/ca.key" -out "$TLS_CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
            openssl req -new -nodes "${newkey[@]}" -subj "/CN=localhost" \
                -keyout "$TLS_KEY" -out "$TLS_DIR/server.csr" &&
            openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_CA" -CAkey "$TLS_DIR/ca.key" -CAcreateserial \
                -sha256 -days 2 -out "$TLS_CERT" -extfile <(printf '%s\n' \
                    "subjectAltName = DNS:localhost, IP:127.0.0.1" "basicConstraints = critical, CA:FALSE" \
                    "keyUsage = critical, $usage" "extendedKeyUsage = serverAuth" \
                    "subjectKeyIdentifier = hash" "authorityKeyIdentifier = keyid")
    } >"$TLS_DIR/openssl.log" 2>&1 || {
        cat "$TLS_DIR/openssl.log" >&2
        die "openssl could not make the bench's certificates"
    }
    openssl verify -CAfile "$TLS_CA" "$TLS_CERT" >/dev/null || die "the bench's server certificate does not verify"
    rm -f "$TLS_DIR/ca.key" "$TLS_DIR/server.csr" "$TLS_DIR/ca.srl"
    chmod 600 "$TLS_KEY"
    chmod 644 "$TLS_CA" "$TLS_CERT"
    chmod 755 "$TLS_DIR"
    [[ $EUID -eq 0 ]] && chown -R postgres: "$TLS_DIR"
    log "TLS: throwaway CA and server certificate ($key_type) in $TLS_DIR"
}

# A second free port that differs from the ones given.
other_free_port() {
    local port
    port="$(free_port)"
    while [[ " $* " == *" $port "* ]]; do port="$(free_port)"; done
    echo "$port"
}

# bench_pgbouncer_start [MAX_CLIENT_CONN]: PgBouncer in transaction mode with pool POOL_SIZE in a temporary
# directory, as `postgres` when we are root (PgBouncer refuses to run as root). Trust authentication on both sides:
# the userlist names PG_USER without a password. PGB_EXTRA_CONF: more lines for its [pgbouncer] section (TLS).
# Sets PGB_PORT PGB_PID PGB_DIR.
bench_pgbouncer_start() {
    local max_client_conn=${1:-$MAX_CLIENT_CONN}
    PGB_DIR="$(mktemp -d -t lifeguard-bench-pgb.XXXXXX)"
    on_exit "rm -rf '$PGB_DIR'"
    PGB_PORT="$(other_free_port "$PG_PORT" "${LG_PORT:-}" "${LG_METRICS_PORT:-}")"
    printf '"%s" ""\n' "$PG_USER" >"$PGB_DIR/userlist.txt"
    cat >"$PGB_DIR/pgbouncer.ini" <<EOF
[databases]
$PG_DB = host=$PG_HOST port=$PG_PORT dbname=$PG_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $PGB_DIR/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
reserve_pool_size = 0
max_client_conn = $max_client_conn
logfile = $PGB_DIR/pgbouncer.log
pidfile = $PGB_DIR/pgbouncer.pid
${PGB_EXTRA_CONF:-}
EOF
    [[ $EUID -eq 0 ]] && chown -R postgres: "$PGB_DIR"
    # Not -d: the script keeps the process as its child, so it knows the pid and the trap can stop it. runuser's PAM
    # session puts the soft open-file limit back to 1024, too few for 1,000 clients: raise it again inside.
    # shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
    _pg_as_owner sh -c 'ulimit -n "$1" && exec pgbouncer "$2"' sh "$(ulimit -n)" "$PGB_DIR/pgbouncer.ini" \
        >"$PGB_DIR/stdout.log" 2>&1 &
    local runner=$!
    wait_tcp 127.0.0.1 "$PGB_PORT" 30 "$runner" || {
        cat "$PGB_DIR/pgbouncer.log" "$PGB_DIR/stdout.log" >&2 2>/dev/null
        stop_process "$runner" pgbouncer
        die "PgBouncer did not start"
    }
    PGB_RUNNER=$runner
    PGB_PID="$(cat "$PGB_DIR/pgbouncer.pid")"
    on_exit bench_pgbouncer_stop
    log "PgBouncer $(pgbouncer_version) on 127.0.0.1:$PGB_PORT (pid $PGB_PID, fd limit $(fd_limit_of "$PGB_PID"))"
}

# bench_lifeguard_start [EXTRA ARGS...]: `lifeguard run` with the same settings as PgBouncer (LG_MAX_CLIENT_CONN
# overrides max_client_conn). Sets LG_PORT LG_METRICS_PORT LG_PID LG_DIR.
bench_lifeguard_start() {
    local max_client_conn=${LG_MAX_CLIENT_CONN:-$MAX_CLIENT_CONN}
    LG_DIR="$(mktemp -d -t lifeguard-bench-lg.XXXXXX)"
    on_exit "rm -rf '$LG_DIR'"
    LG_PORT="$(other_free_port "$PG_PORT" "${PGB_PORT:-}")"
    LG_METRICS_PORT="$(other_free_port "$PG_PORT" "${PGB_PORT:-}" "$LG_PORT")"
    # DATABASE_URL and LIFEGUARD_* from the caller's environment would change the settings under test.
    # shellcheck disable=SC2046 # one -u option per variable name
    env -u DATABASE_URL $(env | sed -n 's/^\(LIFEGUARD_[A-Za-z0-9_]*\)=.*/-u \1/p') \
        "$LIFEGUARD" run --listen "127.0.0.1:$LG_PORT" --metrics-listen "127.0.0.1:$LG_METRICS_PORT" \
        --pool-mode transaction --pool-size "$POOL_SIZE" --max-overflow 0 --max-client-conn "$max_client_conn" \
        "$@" >"$LG_DIR/lifeguard.log" 2>&1 &
    LG_PID=$!
    on_exit bench_lifeguard_stop
    wait_tcp 127.0.0.1 "$LG_PORT" 60 "$LG_PID" || {
        tail -n 30 "$LG_DIR/lifeguard.log" >&2
        die "Lifeguard did not start"
    }
    wait_http "http://127.0.0.1:$LG_METRICS_PORT/metrics" 30 "$LG_PID" || die "Lifeguard's /metrics did not answer"
    log "Lifeguard $(lifeguard_version) on 127.0.0.1:$LG_PORT, metrics on $LG_METRICS_PORT (pid $LG_PID)"
}

# Stop what bench_pgbouncer_start / bench_lifeguard_start started (idempotent, so the EXIT trap can call it again).
# PgBouncer runs as the runner's child (runuser) or is the runner itself (exec): stop it by its pid file's pid,
# then reap the runner.
bench_pgbouncer_stop() {
    [[ -n ${PGB_PID:-} ]] && stop_process "$PGB_PID" pgbouncer
    [[ -n ${PGB_RUNNER:-} ]] && stop_process "$PGB_RUNNER" pgbouncer-runner
    PGB_PID="" PGB_RUNNER=""
}
bench_lifeguard_stop() {
    [[ -n ${LG_PID:-} ]] && stop_process "$LG_PID" lifeguard
    LG_PID=""
}

fd_limit_of() { awk '/^Max open files/ {print $4}' "/proc/$1/limits" 2>/dev/null || echo "?"; }
# valgrind_prepare DIR: what running Lifeguard under valgrind takes, made in DIR. Sets VALGRIND_LIFEGUARD (a copy of
# $LIFEGUARD without debug information: valgrind 3.19 cannot read the DWARF of Swift 6.3 binaries, and the symbol
# table is enough to name functions) and VALGRIND_SHIM (to preload: an async main ends the main thread in
# libdispatch's sigsuspend, whose mask is read-only data; valgrind 3.19 writes to that mask, to unblock SIGKILL and
# SIGSTOP, and dies. The shim passes a copy, and executes a handful of instructions, once).
valgrind_prepare() {
    local dir=$1
    VALGRIND_LIFEGUARD="$dir/lifeguard"
    VALGRIND_SHIM="$dir/sigsuspend.so"
    strip --strip-debug -o "$VALGRIND_LIFEGUARD" "$LIFEGUARD" || die "strip --strip-debug $LIFEGUARD failed"
    cat >"$dir/sigsuspend.c" <<'C'
#define _GNU_SOURCE
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
int sigsuspend(const sigset_t *mask) {
    sigset_t copy = *mask;
    return (int)syscall(SYS_rt_sigsuspend, &copy, sizeof(long));
}
C
    "$(command -v cc || command -v clang)" -shared -fPIC -O2 -o "$VALGRIND_SHIM" "$dir/sigsuspend.c" ||
        die "could not build the sigsuspend shim for valgrind"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

pgbouncer_version() { pgbouncer --version 2>/dev/null | head -n 1 | sed 's/^PgBouncer //'; }
lifeguard_version() { "$LIFEGUARD" version 2>/dev/null | head -n 1; }

# The machine description every result file starts with (Markdown).
machine_description() {
    local cpu
    cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    cat <<EOF
| | |
|---|---|
| host | $(hostname) |
| date | $(date -u '+%Y-%m-%d %H:%M:%S UTC') |
| CPUs (nproc) | $(nproc) |
| CPU model | ${cpu:-unknown} |
| memory | $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) |
| kernel | $(uname -sr) |
| load average at start | $(cut -d' ' -f1-3 /proc/loadavg) |
| PostgreSQL | $("$PG_BIN/postgres" --version | sed 's/^postgres (PostgreSQL) //') |
| PgBouncer | $(pgbouncer_version) |
| Lifeguard | $(lifeguard_version) ($LIFEGUARD) |
| Swift | $(swift --version 2>&1 | grep -m 1 -o 'Swift version [^ ]*' | sed 's/Swift version //' || echo unknown) |
| pgbench | $("$PG_BIN/pgbench" --version | sed 's/^pgbench (PostgreSQL) //') |
EOF
}

# results_file NAME: bench/results/<date>-<host>[-NAME][-TAG].md (a suffix -2, -3, ... keeps earlier runs).
results_file() {
    local base candidate n=1
    base="$RESULTS_DIR/$(date -u +%Y-%m-%d)-$(hostname -s)${1:+-$1}${TAG:+-$TAG}"
    candidate="$base.md"
    while [[ -e $candidate ]]; do
        n=$((n + 1))
        candidate="$base-$n.md"
    done
    mkdir -p "$RESULTS_DIR"
    echo "$candidate"
}

# log_findings NAME FILE: Markdown lines with the distinct warnings and errors in a pooler's log (timestamps, pids,
# addresses and other numbers replaced by N so that repeats collapse), most frequent first, at most 10.
log_findings() {
    local name=$1 file=$2 lines
    [[ -f $file ]] || {
        echo "- $name: no log file"
        return 0
    }
    lines="$(grep -E ' (warning|error|critical|WARNING|ERROR|FATAL|CRITICAL|PANIC) ' "$file" |
        sed -E 's/^[0-9T:+. -]+(UTC )?//; s/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -n 10 || true)"
    if [[ -z $lines ]]; then
        echo "- $name: no warnings or errors in its log"
    else
        echo "- $name: $(grep -cE ' (warning|error|critical|WARNING|ERROR|FATAL|CRITICAL|PANIC) ' "$file") warning/error lines; the most frequent:"
        echo
        echo '```'
        echo "$lines"
        echo '```'
        echo
    fi
}
