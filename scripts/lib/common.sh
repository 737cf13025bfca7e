# shellcheck shell=bash
# Shared helpers for scripts/test and scripts/demo. Source it; do not run it.
#
# Everything here is idempotent: installers do nothing when the thing is already there, and every server
# started here listens on 127.0.0.1 only and is stopped and removed by the EXIT trap (see on_exit).

LIFEGUARD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
PG_BIN="${LIFEGUARD_PG_BIN:-/usr/lib/postgresql/15/bin}"
LOG_DIR="${LIFEGUARD_LOG_DIR:-$LIFEGUARD_ROOT/.build/lifeguard-logs}"
VENV_DIR="${LIFEGUARD_VENV:-$LIFEGUARD_ROOT/.venv}"
export DEBIAN_FRONTEND=noninteractive

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------------------------
# Cleanup: one EXIT trap that runs registered commands in reverse order, so a script can register
# "stop PostgreSQL" after "remove its directory" and still get the right order.

_ON_EXIT=()
on_exit() { _ON_EXIT+=("$*"); }
_run_on_exit() {
    local status=$? i
    for ((i = ${#_ON_EXIT[@]} - 1; i >= 0; i--)); do
        eval "${_ON_EXIT[i]}" || true
    done
    _ON_EXIT=()
    return "$status"
}
trap _run_on_exit EXIT
# An interrupted script still cleans up: leave through exit so that the EXIT trap runs.
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------------------------
# Privileges: root runs commands directly; a user needs sudo (a password prompt only on a terminal).

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [[ -t 0 ]]; then
            sudo "$@"
        else
            sudo -n "$@" || die "'sudo -n $1' failed: run as root, or give this user password-less sudo"
        fi
    else
        die "need root to run '$*': run this script as root or install and configure sudo"
    fi
}

# ---------------------------------------------------------------------------------------------------------------
# Debian packages

_APT_UPDATED=0

# (No `dpkg -s | grep -q`: grep exiting early makes dpkg die of SIGPIPE, and pipefail turns that into "missing".)
pkg_installed() {
    local status
    status="$(dpkg -s "$1" 2>/dev/null)" || return 1
    [[ $'\n'$status$'\n' == *$'\nStatus: install ok installed\n'* ]]
}

apt_update_once() {
    [[ $_APT_UPDATED -eq 1 ]] && return 0
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    _APT_UPDATED=1
}

# Installs the packages that are not installed yet; prints nothing and touches nothing otherwise.
apt_install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        pkg_installed "$pkg" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    apt_update_once
    log "apt-get install ${missing[*]}"
    # On a machine without a policy-rc.d, apt would start prometheus and PostgreSQL as services listening on
    # all interfaces. Forbid service starts for the duration of the install.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        added_policy=1
    fi
    local status=0
    as_root env DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" || status=$?
    [[ $added_policy -eq 1 ]] && as_root rm -f "$policy"
    [[ $status -eq 0 ]] || die "apt-get install ${missing[*]} failed (exit $status)"
}

# PostgreSQL 15 without the `main` cluster that Debian's package would otherwise create and start.
install_postgresql() {
    if ! pkg_installed postgresql-15; then
        apt_install_missing postgresql-common
        local conf=/etc/postgresql-common/createcluster.conf
        if ! grep -Eq '^[[:space:]]*create_main_cluster[[:space:]]*=[[:space:]]*false' "$conf" 2>/dev/null; then
            log "setting create_main_cluster = false in $conf"
            as_root sh -c "mkdir -p /etc/postgresql-common && touch $conf && \
                sed -i '/^[[:space:]]*#\\?[[:space:]]*create_main_cluster/d' $conf && \
                echo 'create_main_cluster = false' >> $conf"
        fi
    fi
    apt_install_missing postgresql-15 postgresql-client-15
    [[ -x $PG_BIN/initdb ]] || die "PostgreSQL 15 binaries not found in $PG_BIN"
    # psql comes with postgresql-client-15, pgbench with postgresql-15 (the demo and the suite drive both).
    [[ -x $PG_BIN/psql && -x $PG_BIN/pgbench ]] || die "psql or pgbench not found in $PG_BIN"
}

JDBC_JAR=/usr/share/java/postgresql.jar

# The real clients the black-box suite drives through Lifeguard besides psql and pgbench: Debian's PostgreSQL JDBC
# driver, and a JDK to compile the suite's small Java probe (only when no javac is on PATH yet).
install_client_tools() {
    install_postgresql
    apt_install_missing libpostgresql-jdbc-java
    if ! command -v javac >/dev/null 2>&1; then
        # OpenJDK's postinst fails on slim images that lack the man directory it links into.
        as_root mkdir -p /usr/share/man/man1
        apt_install_missing default-jdk-headless
    fi
    command -v javac >/dev/null 2>&1 || die "javac not found after installing default-jdk-headless"
    [[ -f $JDBC_JAR ]] || die "$JDBC_JAR not found after installing libpostgresql-jdbc-java"
}

# valgrind for the instructions gate (bench/instructions --check, a step of scripts/test): callgrind counts the
# instructions; binutils (strip, readelf) and gcc (a small preloaded shim) serve the script around it.
install_valgrind() {
    apt_install_missing valgrind binutils gcc
    if ! command -v valgrind >/dev/null 2>&1 || ! command -v callgrind_control >/dev/null 2>&1; then
        die "valgrind or callgrind_control not found after installing valgrind"
    fi
}

require_swift() {
    command -v swift >/dev/null 2>&1 ||
        die "swift is not on PATH: install the Swift 6 toolchain (this project expects it in /opt/swift)"
}

# What the package needs to build and its tests need to run (the system libraries, PostgreSQL, promtool).
install_system_deps() {
    # libgnutls28-dev and libcrypt-dev: the metrics endpoint's HTTPS (through libmicrohttpd's GnuTLS) and bcrypt.
    apt_install_missing ca-certificates curl pkg-config libpq-dev libmicrohttpd-dev libgnutls28-dev libcrypt-dev \
        prometheus openssl
    install_postgresql
    command -v promtool >/dev/null 2>&1 || die "promtool not found after installing prometheus"
    require_swift
}

# ---------------------------------------------------------------------------------------------------------------
# Python: a virtual environment in .venv (Debian's own python3 refuses `pip install` outside one), with the
# packages of Tests/Integration/requirements.txt installed only when one is missing.

python_env() {
    local requirements="$LIFEGUARD_ROOT/Tests/Integration/requirements.txt"
    command -v python3 >/dev/null 2>&1 || apt_install_missing python3
    if [[ ! -x $VENV_DIR/bin/python ]]; then
        if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
            local minor
            minor="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            apt_install_missing "python$minor-venv"
        fi
        log "creating $VENV_DIR"
        rm -rf "$VENV_DIR"
        python3 -m venv "$VENV_DIR" || die "python3 -m venv $VENV_DIR failed"
    fi
    local missing
    if ! missing="$("$VENV_DIR/bin/python" - "$requirements" <<'EOF'
import re, sys
from importlib import metadata

missing = []
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name = re.split(r"[\[<>=!~;\s]", line, maxsplit=1)[0]
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        missing.append(line)
print(" ".join(missing))
sys.exit(1 if missing else 0)
EOF
    )"; then
        log "pip install $missing"
        "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" ||
            die "pip install -r $requirements failed"
    fi
    PYTHON="$VENV_DIR/bin/python"
}

# ---------------------------------------------------------------------------------------------------------------
# Ports and waiting

# A TCP port below 32768 (outside the kernel's range for outgoing connections) that no socket uses now.
free_port() {
    local used port tries
    used="$(
        cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r _ local _; do
            [[ $local == *:* ]] && echo "$((16#${local##*:}))"
        done | sort -u
    )"
    for ((tries = 0; tries < 200; tries++)); do
        port=$((20000 + RANDOM % 12768))
        if ! grep -qx "$port" <<<"$used"; then
            echo "$port"
            return 0
        fi
    done
    die "no free TCP port found between 20000 and 32767"
}

# wait_tcp HOST PORT [TIMEOUT_SECONDS] [PID]: until something accepts connections there. With PID, gives up as
# soon as that process has exited.
wait_tcp() {
    local host=$1 port=$2 timeout=${3:-30} pid=${4:-} deadline=$((SECONDS + ${3:-30}))
    while ((SECONDS < deadline)); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            return 0
        fi
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            warn "process $pid exited before $host:$port accepted connections"
            return 1
        fi
        sleep 0.1
    done
    warn "$host:$port did not accept connections within ${timeout}s"
    return 1
}

# wait_http URL [TIMEOUT_SECONDS] [PID]: until the URL answers 2xx.
wait_http() {
    local url=$1 timeout=${2:-30} pid=${3:-} deadline=$((SECONDS + ${2:-30}))
    while ((SECONDS < deadline)); do
        if curl --noproxy '*' -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
            return 0
        fi
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            warn "process $pid exited before $url answered"
            return 1
        fi
        sleep 0.1
    done
    warn "$url did not answer within ${timeout}s"
    return 1
}

# stop_process PID [NAME] [GRACE_SECONDS]: SIGTERM, then SIGKILL if it is still there after the grace period.
stop_process() {
    local pid=$1 name=${2:-process} grace=${3:-15} deadline
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$name (pid $pid) ignored SIGTERM for ${grace}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------------------------
# A throwaway PostgreSQL 15: initdb in a temporary directory, 127.0.0.1 only, trust authentication.
# pg_start sets PG_DIR PG_HOST PG_PORT PG_USER PG_DB PG_DSN (no password) and registers its own cleanup.
# The database PG_DB is owned by the login role PG_USER; `postgres` is the superuser.

_pg_as_owner() {
    if [[ $EUID -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    install_postgresql
    PG_DIR="$(mktemp -d -t lifeguard-pg.XXXXXX)"
    on_exit pg_cleanup
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "user postgres missing (it comes with the postgresql-common package)"
        chown postgres: "$PG_DIR"
    fi
    _pg_as_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --no-sync \
        >"$PG_DIR/initdb.log" 2>&1 || {
        cat "$PG_DIR/initdb.log" >&2
        die "initdb failed"
    }
    PG_HOST=127.0.0.1
    local attempt
    for attempt in 1 2 3; do
        PG_PORT="$(free_port)"
        if pg_ctl_start; then
            break
        fi
        [[ $attempt -eq 3 ]] && {
            tail -n 20 "$PG_DIR/postgres.log" >&2
            die "PostgreSQL did not start"
        }
        warn "PostgreSQL did not start on port $PG_PORT; trying another port"
    done
    PG_USER=app
    PG_DB=appdb
    pg_psql -U postgres -d postgres -c "CREATE ROLE $PG_USER LOGIN" \
        -c "CREATE DATABASE $PG_DB OWNER $PG_USER" >/dev/null
    PG_DSN="postgresql://$PG_USER@$PG_HOST:$PG_PORT/$PG_DB"
    log "PostgreSQL 15 on $PG_HOST:$PG_PORT (data in $PG_DIR)"
}

pg_ctl_start() {
    _pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 30 -s \
        -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories='$PG_DIR' -c fsync=off" \
        start >/dev/null
}

pg_stop() {
    [[ -n ${PG_DIR:-} && -f $PG_DIR/data/postmaster.pid ]] || return 0
    _pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -w -t 30 -s -m fast stop >/dev/null
}

pg_cleanup() {
    [[ -n ${PG_DIR:-} && -d $PG_DIR ]] || return 0
    if [[ -f $PG_DIR/data/postmaster.pid ]]; then
        _pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -w -t 30 -s -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_DIR"
    PG_DIR=
}

# psql against the throwaway server; extra arguments go to psql (-U/-d default to the app role and database).
pg_psql() {
    env -u PGPASSWORD -u PGSERVICE -u PGHOST -u PGHOSTADDR -u PGPORT \
        PGUSER="${PG_USER:-postgres}" PGDATABASE="${PG_DB:-postgres}" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" "$@"
}

# ---------------------------------------------------------------------------------------------------------------
# Build and format

# swift_build [ARGS...]: `swift build ARGS` in the repository with its output kept in $LOG_DIR; fails on a
# build error and on any warning about the project's own code (Sources/, Tests/, or the package itself).
# Dependencies' warnings are not ours to fix and are ignored. Sets BUILD_LOG, and BUILD_COMPILED=1 when the
# compilation itself succeeded (so a caller can still run the tests of a build that only has warnings).
# Note: the compiler only repeats a warning when it recompiles the file, so a fresh clone (CI) sees them all.
# The flags every release build of Lifeguard gets (deploy/Dockerfile spells out the same).
RELEASE_SWIFTC_FLAGS=(-Xswiftc -enforce-exclusivity=unchecked)

swift_build() {
    require_swift
    mkdir -p "$LOG_DIR"
    # Release builds are built as deploy/Dockerfile builds them, so that what is measured and demonstrated is what
    # ships: the Swift runtime and Foundation linked statically (~5 MB less resident memory than the shared
    # libraries), and without Swift's run-time exclusivity checks in every module, SwiftNIO's included (they cost
    # about a tenth of the instructions per relayed transaction; debug builds, which the tests run, keep them).
    if [[ " $* " == *" -c release "* ]]; then
        set -- "$@" --static-swift-stdlib "${RELEASE_SWIFTC_FLAGS[@]}"
    fi
    local name
    name="build$(printf '%s' "$*" | tr -c 'A-Za-z0-9' '-')"
    BUILD_LOG="$LOG_DIR/${name%-}.log"
    log "swift build $* (log: $BUILD_LOG)"
    BUILD_COMPILED=0
    # The compiler repeats a warning only when it recompiles the file: touch the files that had one last time.
    local root_re file
    root_re="$(printf '%s' "$LIFEGUARD_ROOT" | sed 's/[][\.*^$/]/\\&/g')"
    if [[ -f $LOG_DIR/own-warnings.txt ]]; then
        while IFS= read -r file; do
            [[ -f $file ]] && touch "$file"
        done < <(sed -E 's/:[0-9]+(:[0-9]+)?: warning:.*//' "$LOG_DIR/own-warnings.txt" | sort -u)
    fi
    local status
    if (cd "$LIFEGUARD_ROOT" && swift build "$@") 2>&1 | tee "$BUILD_LOG"; then
        status=0
    else
        status=${PIPESTATUS[0]}
    fi
    if [[ $status -ne 0 ]]; then
        warn "swift build $* failed (exit $status)"
        return "$status"
    fi
    BUILD_COMPILED=1
    # SwiftPM names the root package after its folder ("warning: 'main': ..."), whatever the clone is called.
    local own identity
    identity="$(basename "$LIFEGUARD_ROOT" | tr '[:upper:]' '[:lower:]' | sed 's/[][\.*^$/]/\\&/g')"
    own="$(grep -E "^(${root_re}/)?(Sources|Tests)/[^:]*:[0-9]+(:[0-9]+)?: warning:|^warning: '(lifeguard|${identity})':" \
        "$BUILD_LOG" | sort -u || true)"
    printf '%s\n' "$own" | grep ': warning:' >"$LOG_DIR/own-warnings.txt" || true
    if [[ -n $own ]]; then
        printf '%s\n' "$own" >&2
        warn "swift build $* produced $(wc -l <<<"$own") warning(s) in the project's own code"
        return 1
    fi
}

# Prints the directory holding the built products for the given configuration arguments (e.g. -c release).
swift_bin_path() { (cd "$LIFEGUARD_ROOT" && swift build "$@" --show-bin-path); }

# swift format lint --strict over Sources and Tests with the repository's .swift-format; fails on any finding.
format_check() {
    require_swift
    log "swift format lint --strict -r Sources Tests"
    (cd "$LIFEGUARD_ROOT" && swift format lint --strict --configuration .swift-format -r Sources Tests)
}
