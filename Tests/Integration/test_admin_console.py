"""The PgBouncer admin console (database `pgbouncer`): real clients (psql, psycopg, a lib/pq-like raw client doing
what prometheus-community's pgbouncer_exporter does), access rules, the extended protocol refused, SHOW against
/metrics, PAUSE/RESUME, and the columns of Debian's PgBouncer 1.18 side by side."""

from __future__ import annotations

import os
import pathlib
import shutil
import struct
import subprocess
import tempfile
import threading
import time

import psycopg
import pytest

import harness
import targets
import wire

ADMIN = "admin"
STATS = "stats"
CONSOLE_FLAGS = ["--admin-users", ADMIN, "--stats-users", STATS]


@pytest.fixture
def proxy(pooler):
    targets.require_lifeguard("its admin console")
    return pooler(mode="transaction", pool_size=3, extra=CONSOLE_FLAGS)


def console(target, user: str = ADMIN) -> psycopg.Connection:
    # ClientCursor: client-side binding, so every execute is one simple-protocol Query, as the console requires.
    return psycopg.connect(target.dsn(user=user, dbname="pgbouncer"), autocommit=True,
                           cursor_factory=psycopg.ClientCursor)


def show(conn: psycopg.Connection, what: str) -> tuple[list[str], list[tuple]]:
    cur = conn.execute(f"SHOW {what}")
    return [d.name for d in cur.description], cur.fetchall()


def described(conn: psycopg.Connection, what: str) -> list[tuple[str, int]]:
    cur = conn.execute(f"SHOW {what}")
    cur.fetchall()
    return [(d.name, d.type_code) for d in cur.description]


def by_name(columns: list[str], row: tuple) -> dict:
    return dict(zip(columns, row))


def test_psql_show_pools(proxy, postgres):
    with proxy.connect() as app:
        app.execute("SELECT 1")
    out = subprocess.run(
        [str(postgres.bin / "psql"), "-X", "-A", "-F", "|", "-h", proxy.host, "-p", str(proxy.port), "-U", ADMIN,
         "-d", "pgbouncer", "-c", "SHOW POOLS"],
        capture_output=True, text=True, timeout=30, env=harness.clean_env())
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split("|")[:4] == ["database", "user", "cl_active", "cl_waiting"]
    assert any(line.startswith("appdb|app|") for line in lines[1:]), out.stdout
    assert any(line.startswith("pgbouncer|pgbouncer|") for line in lines[1:]), out.stdout


def test_psycopg_simple_protocol_and_fake_parameters(proxy):
    with console(proxy) as conn:
        columns, rows = show(conn, "VERSION")
        assert columns == ["version"] and rows[0][0].startswith("PgBouncer 1.25")
        assert show(conn, "client_encoding") == (["client_encoding"], [("UTF-8",)])
        conn.execute("SET application_name = 'ops'")  # ignored, as PgBouncer does
        conn.execute("SET extra_float_digits = 3")
        columns, rows = show(conn, "STATE")
        assert rows == [("active", "yes"), ("paused", "no"), ("suspended", "no")]
        # The same statement through the raw protocol of libpq's exec.
        result = conn.pgconn.exec_(b"SHOW LISTS")
        assert result.status == psycopg.pq.ExecStatus.TUPLES_OK
        assert result.fname(0) == b"list" and result.ftype(1) == 23
        with pytest.raises(psycopg.errors.ProtocolViolation, match="invalid command 'SHOW NOTHING'"):
            conn.execute("SHOW NOTHING")
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="SUSPEND is not supported"):
            conn.execute("SUSPEND")
        assert show(conn, "POOLS")[0][0] == "database"


def test_every_show_command_answers(proxy):
    with console(proxy) as conn:
        for what in ["POOLS", "STATS", "STATS_TOTALS", "STATS_AVERAGES", "TOTALS", "SERVERS", "CLIENTS",
                     "DATABASES", "USERS", "CONFIG", "LISTS", "VERSION", "STATE", "LIFEGUARD"]:
            columns, _ = show(conn, what)
            assert columns, what
        notices = []
        # Read inside the handler: a notice's fields are gone once the handler returns.
        conn.add_notice_handler(lambda d: notices.append((d.message_primary, d.message_detail)))
        conn.execute("SHOW HELP")
        assert notices and notices[0][0] == "Console usage" and "SHOW" in (notices[0][1] or "")
        config = dict((r[0], r) for r in show(conn, "CONFIG")[1])
        assert config["pool_size"][1] == "3" and config["pool_size"][2] == "5"
        assert config["admin_users"][1] == ADMIN


def test_extended_protocol_is_refused_clearly(proxy):
    with console(proxy) as conn:
        with pytest.raises(psycopg.errors.ProtocolViolation,
                           match="extended query protocol not supported by admin console"):
            # psycopg's default cursor binds server-side: Parse/Bind/Execute.
            psycopg.Cursor(conn).execute("SHOW POOLS WHERE %s", [1])
    with psycopg.connect(proxy.dsn(user=ADMIN, dbname="pgbouncer"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ProtocolViolation, match="extended query protocol"):
            # A named prepared statement: Parse first.
            conn.execute("SHOW POOLS", prepare=True)


def test_access_rules(proxy):
    with console(proxy, STATS) as conn:
        assert show(conn, "POOLS")[0][0] == "database"
        with pytest.raises(psycopg.errors.ProtocolViolation, match="admin access needed"):
            conn.execute("PAUSE")
        with pytest.raises(psycopg.errors.ProtocolViolation, match="admin access needed"):
            conn.execute("RELOAD")
        # The refused command leaves the session usable.
        assert show(conn, "STATE")[1][1] == ("paused", "no")
    with pytest.raises(psycopg.OperationalError, match="not allowed"):
        console(proxy, "app")


def test_exporter_like_client(proxy):
    """What prometheus-community/pgbouncer_exporter does on every scrape, with lib/pq's startup packet: a new
    connection, simple queries, columns read by name."""
    with proxy.connect() as app:
        app.execute("SELECT 1")
    wanted = {
        "SHOW STATS": {"database", "total_xact_count", "total_query_count", "total_received", "total_sent",
                       "total_xact_time", "total_query_time", "total_wait_time", "total_server_assignment_count"},
        "SHOW VERSION;": {"version"},
        "SHOW LISTS;": {"list", "items"},
        "SHOW CONFIG;": {"key", "value", "default", "changeable"},
        "SHOW CLIENTS;": {"user", "database", "state", "application_name"},
        "SHOW databases;": {"name", "host", "port", "database", "force_user", "pool_size", "reserve_pool_size",
                            "pool_mode", "max_connections", "current_connections", "paused", "disabled"},
        "SHOW stats_totals;": {"database", "xact_count", "query_count", "bytes_received", "bytes_sent",
                               "xact_time", "query_time", "wait_time", "server_assignment_count"},
        "SHOW pools;": {"database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used",
                        "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode"},
    }
    for scrape in range(2):
        with wire.RawClient(proxy.port) as raw:
            ready = raw.startup(user=STATS, database="pgbouncer", extra_float_digits="2", client_encoding="UTF8",
                                datestyle="ISO, MDY")
            assert ready[-1][0] == b"Z", ready
            for sql, columns in wanted.items():
                messages = raw.simple_query(sql)
                assert not wire.errors(messages), (sql, messages)
                names = row_description(messages)
                assert columns <= set(names), (sql, names)
                if sql == "SHOW pools;":
                    pools = [dict(zip(names, row)) for row in wire.rows(messages)]
                    app = next(p for p in pools if p["database"] == "appdb" and p["user"] == "app")
                    assert int(app["sv_idle"]) + int(app["sv_active"]) >= 1
            raw.terminate()


def row_description(messages) -> list[str]:
    for kind, payload in messages:
        if kind == b"T":
            (n,) = struct.unpack("!H", payload[:2])
            pos, names = 2, []
            for _ in range(n):
                end = payload.index(b"\0", pos)
                names.append(payload[pos:end].decode())
                pos = end + 1 + 18
            return names
    return []


def test_show_agrees_with_metrics(proxy):
    """Traffic, then SHOW STATS_TOTALS, SHOW POOLS and /metrics in one quiet moment: the same counters."""
    conns = [proxy.connect() for _ in range(4)]
    try:
        for i in range(5):
            for conn in conns:
                with conn.transaction():
                    conn.execute("SELECT %s", [i])
                    conn.execute("SELECT 2")
        with console(proxy, STATS) as admin:
            def agree():
                metrics = proxy.metrics()
                columns, rows = show(admin, "STATS_TOTALS")
                stats = by_name(columns, next(r for r in rows if r[0] == "appdb"))
                columns, rows = show(admin, "POOLS")
                pools = [by_name(columns, r) for r in rows]
                pool = next(p for p in pools if p["database"] == "appdb" and p["user"] == "app")
                labels = {"database": "appdb", "user": "app"}
                checks = [
                    (int(stats["xact_count"]), metrics.value("lifeguard_transactions_total", **labels)),
                    (int(stats["query_count"]), metrics.value("lifeguard_queries_total", **labels)),
                    (int(stats["server_assignment_count"]),
                     metrics.value("lifeguard_pool_checkouts_total", **labels)),
                    (pool["sv_idle"], metrics.value("lifeguard_pool_connections", state="idle", **labels)),
                    (pool["sv_active"] + pool["sv_used"] + pool["sv_tested"],
                     metrics.value("lifeguard_pool_connections", state="used", **labels)),
                    (pool["cl_waiting"], metrics.value("lifeguard_pool_waiting_clients", **labels)),
                    (sum(p["cl_active"] + p["cl_waiting"] for p in pools),
                     sum(metrics.value("lifeguard_client_connections", state=s)
                         for s in ("active", "waiting", "idle"))),
                ]
                wait_us = metrics.value("lifeguard_pool_wait_seconds_sum", **labels) * 1e6
                checks.append((True, abs(int(stats["wait_time"]) - wait_us) <= 1 + wait_us * 1e-6))
                return all(float(a) == float(b) for a, b in checks), checks
            harness.wait_until(lambda: agree()[0], 5, what="SHOW and /metrics agreeing")
            ok, checks = agree()
            assert ok, checks
            assert int(show(admin, "STATS_TOTALS")[1][0][2]) >= 20  # 4 clients x 5 transactions
    finally:
        for conn in conns:
            conn.close()


def test_pause_waits_for_release_and_holds_new_work(proxy):
    labels = {"database": "appdb", "user": "app"}
    with proxy.connect() as holder:
        holder.execute("SELECT 1")
        assert proxy.metrics().value("lifeguard_pool_paused", **labels) == 0
        holder.execute("BEGIN")
        holder.execute("SELECT 1")  # holds a server connection until COMMIT
        with console(proxy) as admin:
            done = threading.Event()
            errors: list[Exception] = []

            def pause():
                try:
                    admin.execute("PAUSE appdb")
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
                done.set()

            thread = threading.Thread(target=pause)
            thread.start()
            time.sleep(0.5)
            assert not done.is_set(), "PAUSE returned while a transaction held a server connection"
            holder.execute("COMMIT")
            assert done.wait(5), "PAUSE did not return once the connection was released"
            thread.join()
            assert not errors, errors
            assert proxy.metrics().value("lifeguard_pool_paused", **labels) == 1

            result: list = []
            waiter = threading.Thread(target=lambda: result.append(holder.execute("SELECT 42").fetchone()[0]))
            waiter.start()
            time.sleep(0.5)
            assert not result, "a query ran while the database was paused"
            with console(proxy, STATS) as stats:
                columns, rows = show(stats, "DATABASES")
                assert by_name(columns, next(r for r in rows if r[0] == "appdb"))["paused"] == 1
            admin.execute("RESUME appdb")
            waiter.join(5)
            assert result == [42]
            assert proxy.metrics().value("lifeguard_pool_paused", **labels) == 0
            with pytest.raises(psycopg.errors.ProtocolViolation, match="database appdb is not paused"):
                admin.execute("RESUME appdb")


def test_kill_client_and_disable(proxy):
    with proxy.connect() as victim, console(proxy) as admin:
        victim.execute("SELECT 1")
        columns, rows = show(admin, "CLIENTS")
        clients = [by_name(columns, r) for r in rows]
        target = next(c for c in clients if c["user"] == "app")
        admin.execute(f"KILL_CLIENT {target['id']}")
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        with pytest.raises(psycopg.errors.ProtocolViolation, match="client not found"):
            admin.execute("KILL_CLIENT 999999")
        admin.execute("DISABLE appdb")
        with pytest.raises(psycopg.OperationalError, match="does not allow connections"):
            proxy.connect()
        admin.execute("ENABLE appdb")
        with proxy.connect() as again:
            assert again.execute("SELECT 1").fetchone() == (1,)


def _in_thread(body) -> tuple[threading.Thread, list, list]:
    results: list = []
    errors: list[Exception] = []

    def run():
        try:
            results.append(body())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results, errors


def test_kill_drops_clients_and_servers_and_holds_the_database(proxy):
    """KILL db: its clients get FATAL 57P01, its server connections close, and new work waits until RESUME db."""
    idle = proxy.connect()
    holder = proxy.connect()
    other_db = proxy.connect(dbname="postgres")
    try:
        idle.execute("SELECT 1")
        holder.execute("BEGIN")
        holder.execute("SELECT 1")  # holds a server connection
        other_db.execute("SELECT 1")
        with console(proxy) as admin:
            with pytest.raises(psycopg.errors.ProtocolViolation, match="cannot kill admin db: pgbouncer"):
                admin.execute("KILL pgbouncer")
            admin.execute("KILL appdb")
            for victim in (idle, holder):
                with pytest.raises(psycopg.OperationalError) as raised:
                    victim.execute("SELECT 1")
                assert raised.value.sqlstate in (None, "57P01"), raised.value
            # Another database is untouched.
            assert other_db.execute("SELECT 2").fetchone() == (2,)
            columns, rows = show(admin, "CLIENTS")
            assert [r for r in rows if by_name(columns, r)["database"] == "appdb"] == []

            def appdb_servers():
                columns, rows = show(admin, "SERVERS")
                return [r for r in rows if by_name(columns, r)["database"] == "appdb"]
            harness.wait_until(lambda: not appdb_servers(), 5, what="appdb's server connections closed")
            columns, rows = show(admin, "DATABASES")
            assert by_name(columns, next(r for r in rows if r[0] == "appdb"))["paused"] == 1

            def newcomer():
                with proxy.connect() as conn:
                    return conn.execute("SELECT 42").fetchone()[0]
            thread, results, errors = _in_thread(newcomer)
            time.sleep(0.5)
            assert not results and not errors, (results, errors)
            with pytest.raises(psycopg.errors.ProtocolViolation, match="pooler is not paused"):
                admin.execute("RESUME")  # as PgBouncer: KILL pauses databases, not the pooler
            admin.execute("RESUME appdb")
            thread.join(10)
            assert results == [42], errors
            # A KILL while the pooler is paused is refused, as PgBouncer does.
            admin.execute("PAUSE")
            with pytest.raises(psycopg.errors.ProtocolViolation, match="already suspended/paused"):
                admin.execute("KILL")
            admin.execute("RESUME")
            # KILL without a database: every database (the console excepted), each paused until its RESUME.
            admin.execute("KILL")
            with pytest.raises(psycopg.OperationalError):
                other_db.execute("SELECT 1")
            assert show(admin, "VERSION")[1]
            admin.execute("RESUME appdb")
            admin.execute("RESUME postgres")
            with proxy.connect() as again:
                assert again.execute("SELECT 1").fetchone() == (1,)
    finally:
        for conn in (idle, holder, other_db):
            conn.close()


def test_wait_close_waits_for_the_servers_reconnect_marked(pooler, postgres):
    """RECONNECT marks the open server connections (SHOW SERVERS close_needed); WAIT_CLOSE returns once they are
    closed, here when the transaction holding one ends."""
    targets.require_lifeguard("its admin console")
    target = pooler(mode="transaction", pool_size=2, extra=CONSOLE_FLAGS,
                    databases={"appdb": f"host={postgres.host} port={postgres.port} dbname=appdb"})
    with target.connect() as holder, console(target) as admin:
        holder.execute("BEGIN")
        holder.execute("SELECT 1")
        admin.execute("WAIT_CLOSE appdb")  # nothing marked: at once
        admin.execute("RECONNECT appdb")
        columns, rows = show(admin, "SERVERS")
        servers = [by_name(columns, r) for r in rows if by_name(columns, r)["database"] == "appdb"]
        assert [s["close_needed"] for s in servers] == [1], servers
        thread, results, errors = _in_thread(lambda: admin.execute("WAIT_CLOSE"))
        time.sleep(0.5)
        assert not results and not errors, "WAIT_CLOSE returned while a marked connection was in use"
        holder.execute("COMMIT")
        thread.join(5)
        assert results and not errors, errors
        # The next transaction gets a new, unmarked connection.
        holder.execute("SELECT 1")
        columns, rows = show(admin, "SERVERS")
        assert [by_name(columns, r)["close_needed"] for r in rows] == [0]
        with pytest.raises(psycopg.errors.ProtocolViolation, match="no such database: nosuch"):
            admin.execute("WAIT_CLOSE nosuch")
        with pytest.raises(psycopg.errors.ProtocolViolation, match="no such database: nosuch"):
            admin.execute("KILL nosuch")
        with pytest.raises(psycopg.errors.ProtocolViolation, match="cannot wait in admin db: pgbouncer"):
            admin.execute("WAIT_CLOSE pgbouncer")


def _psql(postgres, host: str, port: int, user: str, sql: str, password: str | None = None):
    env = harness.clean_env({"PGPASSWORD": password} if password else None)
    return subprocess.run([str(postgres.bin / "psql"), "-X", "-A", "-t", "-w", "-h", host, "-p", str(port), "-U", user,
                           "-d", "pgbouncer", "-c", sql], capture_output=True, text=True, timeout=30, env=env)


@pytest.fixture
def open_socket_dir():
    """A socket directory other OS users can reach (pytest's tmp_path is private to its owner)."""
    directory = tempfile.mkdtemp(prefix="lifeguard-peer-")
    os.chmod(directory, 0o755)
    try:
        yield pathlib.Path(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_peer_login_over_the_unix_socket_only(pooler, postgres, open_socket_dir):
    """As PgBouncer: user pgbouncer on the Unix socket, run by Lifeguard's own OS user, gets the console without a
    password; the same user over TCP authenticates as anyone does, and nobody else gets in by peer."""
    targets.require_lifeguard("its admin console")
    socket_dir = open_socket_dir
    target = pooler(mode="transaction", pool_size=2, auth_type="md5", auth_users={"app": "app-secret"},
                    extra=["--unix-socket-dir", str(socket_dir), "--admin-users", "app"])
    out = _psql(postgres, str(socket_dir), target.port, "pgbouncer", "SHOW VERSION")
    assert out.returncode == 0 and out.stdout.startswith("PgBouncer 1.25"), out.stderr
    out = _psql(postgres, str(socket_dir), target.port, "pgbouncer", "RECONNECT appdb")
    assert out.returncode == 0, out.stderr  # an admin, not a stats user
    # TCP: no peer identity, so auth_type applies (md5: a password, which pgbouncer does not have).
    out = _psql(postgres, target.host, target.port, "pgbouncer", "SHOW VERSION")
    assert out.returncode != 0 and "password" in out.stderr, out.stdout + out.stderr
    # Another user over the socket: no peer login, md5 as usual.
    out = _psql(postgres, str(socket_dir), target.port, "app", "SHOW VERSION")
    assert out.returncode != 0 and "password" in out.stderr, out.stdout + out.stderr
    out = _psql(postgres, str(socket_dir), target.port, "app", "SHOW VERSION", password="app-secret")
    assert out.returncode == 0 and out.stdout.startswith("PgBouncer 1.25"), out.stderr
    # Another OS user on the socket (the socket's mode is 0777 by default): no peer login either.
    if os.getuid() == 0:
        nobody = subprocess.run(["runuser", "-u", "nobody", "--", str(postgres.bin / "psql"), "-X", "-A", "-t", "-w",
                                 "-h", str(socket_dir), "-p", str(target.port), "-U", "pgbouncer", "-d", "pgbouncer",
                                 "-c", "SHOW VERSION"], capture_output=True, text=True, timeout=30,
                                env=harness.clean_env())
        assert nobody.returncode != 0 and "password" in nobody.stderr, nobody.stdout + nobody.stderr


def test_peer_login_over_tcp_with_trust_is_still_refused(pooler, postgres):
    """With trust over TCP (loopback), pgbouncer is let in only when listed, as every console user."""
    targets.require_lifeguard("its admin console")
    target = pooler(mode="transaction", pool_size=2, extra=CONSOLE_FLAGS)
    out = _psql(postgres, target.host, target.port, "pgbouncer", "SHOW VERSION")
    assert out.returncode != 0 and "not allowed" in out.stderr, out.stdout + out.stderr


def test_columns_match_pgbouncer_118(pooler, proxy):
    """Debian's PgBouncer 1.18 side by side: every SHOW both have, columns compared by name, order and type, and
    the differences are exactly those docs/admin-console.md lists (1.18 -> 1.25)."""
    if not os.path.exists(targets.PGBOUNCER):
        pytest.skip("pgbouncer is not installed")
    bouncer = pooler._pgbouncer("transaction", 3, 0, "10s", 100, pooler.passthrough_upstream(), None, None, None)
    with open(bouncer.config_path, "a") as f:
        f.write(f"admin_users = {ADMIN}\nstats_users = {STATS}\n")
    users = bouncer.config_path.parent / "userlist.txt"
    users.write_text(users.read_text() + f'"{ADMIN}" ""\n"{STATS}" ""\n')
    bouncer.signal(1)  # SIGHUP: reload
    harness.wait_until(lambda: _can_connect(bouncer), 10, what="pgbouncer admin console")
    # What 1.25 added (or renamed) since 1.18 (docs/admin-console.md); 1.18 has no SHOW STATE.
    added_in_125 = {
        "POOLS": ["load_balance_hosts"],
        "STATS": ["total_server_assignment_count", "total_client_parse_count", "total_server_parse_count",
                  "total_bind_count", "avg_server_assignment_count", "avg_client_parse_count",
                  "avg_server_parse_count", "avg_bind_count"],
        "STATS_TOTALS": ["server_assignment_count", "client_parse_count", "server_parse_count", "bind_count"],
        "STATS_AVERAGES": ["server_assignment_count", "avg_client_parse_count", "avg_server_parse_count",
                           "avg_bind_count"],
        "DATABASES": ["reserve_pool_size", "server_lifetime", "load_balance_hosts", "max_client_connections",
                      "current_client_connections"],
        "USERS": ["pool_size", "reserve_pool_size", "max_user_connections", "current_connections",
                  "max_user_client_connections", "current_client_connections"],
        "CLIENTS": ["replication", "prepared_statements", "id"],
        "SERVERS": ["replication", "prepared_statements", "id"],
    }
    only_in_118 = {"DATABASES": ["reserve_pool"]}
    with console(bouncer) as old, console(proxy) as new:
        for what in ["POOLS", "STATS", "STATS_TOTALS", "STATS_AVERAGES", "TOTALS", "SERVERS", "CLIENTS",
                     "DATABASES", "USERS", "CONFIG", "LISTS", "VERSION"]:
            ours = [c for c in described(new, what) if c[0] not in added_in_125.get(what, [])]
            theirs = [c for c in described(old, what) if c[0] not in only_in_118.get(what, [])]
            assert ours == theirs, what


def _can_connect(target) -> bool:
    try:
        with console(target) as conn:
            conn.execute("SHOW VERSION")
        return True
    except psycopg.Error:
        return False


def test_switchover_with_pause_reload_resume_under_pgbench(pooler, postgres, tmp_path):
    """The zero-downtime database switchover PgBouncer users run: PAUSE, point [databases] at another server,
    RELOAD, RESUME, while pgbench keeps going: no client transaction fails, and the new server takes the traffic."""
    targets.require_lifeguard("its admin console")
    other = harness.PostgresServer()
    try:
        other.start()
        env = harness.clean_env()
        # pgbench's tables in a schema of their own on the shared server, so that other tests' pgbench -i work.
        user = targets.role(postgres, "switchover")
        other.psql(f"CREATE ROLE {user} LOGIN; CREATE SCHEMA {user} AUTHORIZATION {user}", user=other.superuser)
        for server in (postgres, other):
            subprocess.run([str(harness.PG_BIN / "pgbench"), "-i", "-q", "-s", "1", "-h", server.host, "-p",
                            str(server.port), "-U", user, "appdb"], env=env, check=True, capture_output=True,
                           timeout=120)
        target = pooler(mode="transaction", pool_size=4, pool_timeout="30s", settings_in_file=True,
                        databases={"appdb": postgres.kv_dsn(user=user, dbname="appdb")}, extra=CONSOLE_FLAGS)
        original = target.config_path.read_text()
        bench = subprocess.Popen([str(harness.PG_BIN / "pgbench"), "-n", "-c", "8", "-j", "2", "-T", "8",
                                  "-h", target.host, "-p", str(target.port), "-U", user, "appdb"],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(2.5)
        with console(target) as admin:
            admin.execute("PAUSE")
            target.config_path.write_text(original.replace(f"port={postgres.port}", f"port={other.port}"))
            admin.execute("RELOAD")
            admin.execute("RESUME")
        out, _ = bench.communicate(timeout=60)
        assert bench.returncode == 0, out
        processed = int(out.split("number of transactions actually processed: ")[1].split()[0])
        failed = out.split("number of failed transactions: ")[1].split()[0] if "failed transactions" in out else "0"
        assert failed == "0", out
        moved = int(other.psql("select count(*) from pgbench_history", user=user))
        stayed = int(postgres.psql("select count(*) from pgbench_history", user=user))
        assert moved > 0, f"nothing reached the new server\n{out}"
        assert moved + stayed == processed, (moved, stayed, processed)
    finally:
        other.cleanup()
