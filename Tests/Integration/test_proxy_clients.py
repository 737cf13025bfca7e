"""Real clients through Lifeguard in every pool mode that allows them: psql, pgbench, psycopg 3, asyncpg and the
PostgreSQL JDBC driver. Each client runs the same workload directly against PostgreSQL and through Lifeguard, and
the results must be equal."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import io
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import asyncpg
import psycopg
import pytest

import harness
import targets

PSQL = harness.PG_BIN / "psql"
PGBENCH = harness.PG_BIN / "pgbench"
JDBC_JAR = Path("/usr/share/java/postgresql.jar")
MODES = ["session", "transaction", "statement"]


class Direct:
    """PostgreSQL itself, with the Target interface the workloads use."""

    def __init__(self, postgres):
        self.port = postgres.port
        self.kind = "direct"

    def dsn(self, user="app", dbname="appdb", **params):
        return targets.Target("direct", self.port).dsn(user, dbname, **params)


def drop(postgres, *tables):
    postgres.psql(f"DROP TABLE IF EXISTS {', '.join(tables)}", user=postgres.superuser)


# ---------------------------------------------------------------------------------------------------------------
# psql

PSQL_COMMON = r"""
select 1 as one, 'two'::text as two, 3.5::numeric as three, null::int as nothing, array[1,2] as arr,
       '{"a": 1}'::jsonb as j, date '2024-01-02' as d, 'héllo wörld ✓' as unicode;
create table psql_items (id int primary key, name text, price numeric(10,2));
insert into psql_items select g, 'item ' || g, g * 1.25 from generate_series(1, 500) g;
select count(*), sum(price), min(name), max(name) from psql_items;
select id, name from psql_items where id % 100 = 0 order by id;
select 1 as a \; select 2 as b \; select 'multi-statement' as c;
update psql_items set price = price * 2 where id <= 10;
delete from psql_items where id > 490;
\copy (select id, name, price from psql_items order by id) to '@DIR@/out.csv' with csv
create table psql_copy (id int, name text, price numeric(10,2));
\copy psql_copy from '@DIR@/out.csv' with csv
copy psql_copy from stdin;
1001	inline one	1.00
1002	inline two	2.00
\.
select count(*), sum(price) from psql_copy;
\copy (select * from psql_copy order by id desc limit 5) to stdout with csv header
copy (select * from psql_copy order by id limit 3) to stdout;
\d psql_items
select 1/0;
select 'still here after an error' as status;
"""

PSQL_TRANSACTIONS = r"""
begin;
insert into psql_items values (9001, 'kept', 1);
savepoint s1;
insert into psql_items values (9002, 'rolled back', 1);
rollback to s1;
commit;
begin;
delete from psql_items;
rollback;
begin;
select 1/0;
select 'not run';
rollback;
select id, name from psql_items where id >= 9000 order by id;
select count(*) from psql_items;
"""

PSQL_SESSION = r"""
prepare doubled(int) as select $1 * 2 as doubled;
execute doubled(21);
set work_mem = '7MB';
show work_mem;
create temp table psql_tmp as select 42 as answer;
select * from psql_tmp;
"""


def run_psql(port: int, script: Path, user: str = "app") -> tuple[int, str, str]:
    r = subprocess.run(
        [str(PSQL), "-X", "-A", "-h", harness.LOOPBACK, "-p", str(port), "-U", user, "-d", "appdb", "-f",
         str(script)],
        env=harness.clean_env({"PGCONNECT_TIMEOUT": "10"}), stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=60,
    )
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("mode", MODES)
def test_psql_gives_the_same_output_as_directly(mode, pooler, postgres, tmp_path):
    script = PSQL_COMMON
    if mode != "statement":
        script += PSQL_TRANSACTIONS
    if mode == "session":
        script += PSQL_SESSION
    path = tmp_path / "script.sql"
    path.write_text(script.replace("@DIR@", str(tmp_path)))
    target = pooler(mode=mode, pool_size=2)

    drop(postgres, "psql_items", "psql_copy")
    direct = run_psql(postgres.port, path)
    drop(postgres, "psql_items", "psql_copy")
    proxied = run_psql(target.port, path)
    drop(postgres, "psql_items", "psql_copy")

    assert direct[0] == 0 and "multi-statement" in direct[1] and "division by zero" in direct[2], direct
    assert proxied[1] == direct[1], "psql's output through the pooler differs from PostgreSQL's"
    assert proxied[2] == direct[2], "psql's errors through the pooler differ from PostgreSQL's"
    assert proxied[0] == direct[0]


def test_statement_mode_refuses_an_explicit_transaction_clearly(pooler):
    targets.require_pooler("statement mode")
    target = pooler(mode="statement", pool_size=2)
    with pytest.raises(psycopg.Error) as info:
        with target.connect() as conn:
            conn.execute("BEGIN")
            conn.execute("SELECT 1")
    assert "statement" in str(info.value).lower(), f"the error should name statement pooling: {info.value}"
    with target.connect() as conn:  # the pooler serves the next client
        assert conn.execute("SELECT 7").fetchone() == (7,)


# ---------------------------------------------------------------------------------------------------------------
# pgbench


def pgbench(port: int, *args: str, user: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PGBENCH), "-h", harness.LOOPBACK, "-p", str(port), "-U", user, *args, "appdb"],
        env=harness.clean_env({"PGCONNECT_TIMEOUT": "10"}), stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=timeout,
    )


def pgbench_init(postgres, user: str) -> None:
    r = pgbench(postgres.port, "-i", "-q", "-s", "1", user=user)
    assert r.returncode == 0, r.stderr


def processed(result: subprocess.CompletedProcess) -> int:
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"pgbench failed ({result.returncode}):\n{out[-3000:]}"
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert failed and failed.group(1) == "0", f"pgbench reports failed transactions:\n{out[-3000:]}"
    count = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    assert count > 0, out
    return count


def check_tpcb_consistent(postgres, user: str, transactions: int) -> None:
    """Every TPC-B-like transaction pgbench counted was applied whole, once: the history has one row per
    transaction and the balances add up to its deltas."""
    out = postgres.psql(
        "select (select count(*) from pgbench_history), (select coalesce(sum(delta), 0) from pgbench_history),"
        " (select sum(abalance) from pgbench_accounts), (select sum(tbalance) from pgbench_tellers),"
        " (select sum(bbalance) from pgbench_branches)",
        user=user,
    )
    count, delta, a, t, b = (int(x) for x in out.split("|"))
    assert count == transactions, f"pgbench counted {transactions} transactions, the history holds {count}"
    assert a == t == b == delta, f"balances disagree: accounts {a}, tellers {t}, branches {b}, history {delta}"


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_pgbench_50_clients_over_a_pool_of_5_in_transaction_mode(protocol, pooler, postgres):
    user = targets.role(postgres, "bench_tx")
    pgbench_init(postgres, user)
    target = pooler(mode="transaction", pool_size=5, max_overflow=0, pool_timeout="30s")
    with targets.Sampler(postgres, user) as sampler:
        result = pgbench(target.port, "-n", "-c", "50", "-j", "2", "-T", "5", "-M", protocol, user=user)
    count = processed(result)
    check_tpcb_consistent(postgres, user, count)
    if targets.TARGET != "postgres":
        assert 0 < sampler.peak <= 5, f"server connections seen: peak {sampler.peak}, expected 1..5"


def test_pgbench_in_session_mode(pooler, postgres):
    user = targets.role(postgres, "bench_session")
    pgbench_init(postgres, user)
    target = pooler(mode="session", pool_size=5, max_overflow=0, pool_timeout="30s")
    with targets.Sampler(postgres, user) as sampler:
        result = pgbench(target.port, "-n", "-c", "5", "-j", "1", "-T", "3", "-M", "extended", user=user)
    check_tpcb_consistent(postgres, user, processed(result))
    assert sampler.peak <= 5


def test_pgbench_select_only_in_statement_mode(pooler, postgres):
    user = targets.role(postgres, "bench_stmt")
    pgbench_init(postgres, user)
    target = pooler(mode="statement", pool_size=3, max_overflow=0, pool_timeout="30s")
    with targets.Sampler(postgres, user) as sampler:
        result = pgbench(target.port, "-n", "-b", "select-only", "-c", "12", "-j", "2", "-T", "3", user=user)
    processed(result)
    if targets.TARGET != "postgres":
        assert 0 < sampler.peak <= 3


# ---------------------------------------------------------------------------------------------------------------
# psycopg 3


def psycopg_workload(target, mode: str) -> dict:
    """What psycopg gets for a fixed workload; the caller compares two of these."""
    out: dict = {}
    # psycopg's defaults: it prepares named server-side statements after 5 runs, which Lifeguard keeps working in
    # transaction and statement mode by tracking them per client.
    with psycopg.connect(target.dsn(), autocommit=True) as conn:
        params = (42, 2.5, decimal.Decimal("12.345"), "héllo ✓", b"\x00\x01\xff", None, True,
                  datetime.date(2024, 2, 29), datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
                  [1, 2, 3], uuid.UUID("12345678-1234-5678-1234-567812345678"))
        out["types"] = conn.execute(
            "select %s::int, %s::float8, %s::numeric, %s::text, %s::bytea, %s::int, %s::bool, %s::date,"
            " %s::timestamptz, %s::int[], %s::uuid", params,
        ).fetchone()
        out["binary"] = conn.cursor(binary=True).execute("select %s::int8, %s::text", (7, "bin")).fetchone()
        conn.execute("create table pg3_items (id int primary key, name text, qty int)")
        with conn.cursor() as cur:
            cur.executemany("insert into pg3_items values (%s, %s, %s)", [(i, f"n{i}", i % 7) for i in range(200)])
        out["repeated"] = [conn.execute("select count(*) from pg3_items where qty = %s", (q,)).fetchone()
                           for q in range(7) for _ in range(2)]
        try:
            conn.execute("select 1/0")
        except psycopg.Error as e:
            out["error"] = (type(e).__name__, e.sqlstate)
        out["after_error"] = conn.execute("select 'ok'").fetchone()
        out["many_rows"] = conn.execute("select g, md5(g::text) from generate_series(1, 5000) g").fetchall()

        if mode != "statement":
            with conn.transaction():
                conn.execute("insert into pg3_items values (1000, 'kept', 0)")
            try:
                with conn.transaction():
                    conn.execute("insert into pg3_items values (1001, 'rolled back', 0)")
                    conn.execute("insert into pg3_items values (1000, 'duplicate', 0)")
            except psycopg.errors.UniqueViolation as e:
                out["tx_error"] = e.sqlstate
            with conn.transaction():
                with conn.cursor(name="server_side") as cur:  # DECLARE ... inside the transaction
                    cur.execute("select id from pg3_items order by id")
                    out["named_cursor"] = [cur.fetchmany(5), cur.fetchmany(5)]

        with conn.pipeline():
            cur1 = conn.execute("insert into pg3_items values (2000, 'piped', 1) returning id")
            cur2 = conn.execute("select count(*) from pg3_items")
            cur3 = conn.execute("select name from pg3_items where id = %s", (2000,))
            cur4 = conn.execute("update pg3_items set qty = qty + 1 where id < %s", (50,))
        out["pipeline"] = [cur1.fetchone(), cur2.fetchone(), cur3.fetchone(), cur4.rowcount]
        try:
            with conn.pipeline():
                conn.execute("select 1")
                conn.execute("select 1/0")
                conn.execute("select 2")
        except psycopg.Error as e:
            out["pipeline_error"] = e.sqlstate
        out["after_pipeline_error"] = conn.execute("select 'fine'").fetchone()

        conn.execute("create table pg3_copy (id int, name text, data bytea)")
        with conn.cursor() as cur:
            with cur.copy("COPY pg3_copy (id, name, data) FROM STDIN") as copy:
                for i in range(1000):
                    copy.write_row((i, f"row\t{i}\n", bytes([i % 256]) * 3))
            with cur.copy("COPY pg3_copy (id, name, data) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "text", "bytea"])
                for i in range(1000, 1100):
                    copy.write_row((i, "binary", b"\x00"))
            with cur.copy("COPY (select * from pg3_copy order by id) TO STDOUT") as copy:
                out["copy_out_text"] = b"".join(bytes(block) for block in copy)
            with cur.copy("COPY (select id, name from pg3_copy where id % 97 = 0 order by id) TO STDOUT "
                          "(FORMAT BINARY)") as copy:
                copy.set_types(["int4", "text"])
                out["copy_out_rows"] = list(copy.rows())
        out["final"] = conn.execute("select count(*), sum(qty) from pg3_items").fetchone()
    return out


@pytest.mark.parametrize("mode", MODES)
def test_psycopg_gives_the_same_results_as_directly(mode, pooler, postgres):
    target = pooler(mode=mode, pool_size=2)
    drop(postgres, "pg3_items", "pg3_copy")
    direct = psycopg_workload(Direct(postgres), mode)
    drop(postgres, "pg3_items", "pg3_copy")
    proxied = psycopg_workload(target, mode)
    drop(postgres, "pg3_items", "pg3_copy")
    assert direct["error"] == ("DivisionByZero", "22012") and len(direct["copy_out_text"]) > 10000
    for key in direct:
        assert proxied.get(key) == direct[key], f"psycopg's {key!r} differs through the pooler"
    assert proxied.keys() == direct.keys()


def test_psycopg_listen_notify_in_session_mode(pooler):
    target = pooler(mode="session", pool_size=3)
    with target.connect() as listener, target.connect() as notifier:
        listener.execute("LISTEN lifeguard_events")
        notifier.execute("NOTIFY lifeguard_events, 'first'")
        notifier.execute("SELECT pg_notify('lifeguard_events', 'second')")
        got = list(listener.notifies(timeout=5, stop_after=2))
        assert [n.payload for n in got] == ["first", "second"]
        assert [n.channel for n in got] == ["lifeguard_events"] * 2
        # The pid of a notification is the notifying backend's: the notifier's own session.
        notifier_pid = notifier.execute("select pg_backend_pid()").fetchone()[0]
        assert {n.pid for n in got} == {notifier_pid}
        # A notification that arrives while the listener is idle (no query running) is delivered too.
        notifier.execute("NOTIFY lifeguard_events, 'while idle'")
        time.sleep(0.3)
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
        assert got == ["while idle"]


# ---------------------------------------------------------------------------------------------------------------
# asyncpg


async def asyncpg_workload(target, mode: str) -> dict:
    out: dict = {}
    cache = 100  # asyncpg's default: named statements, tracked by Lifeguard outside session mode
    conn = await asyncpg.connect(host=harness.LOOPBACK, port=target.port, user="app", database="appdb",
                                 statement_cache_size=cache, timeout=10)
    try:
        row = await conn.fetchrow(
            "select $1::int, $2::float8, $3::numeric, $4::text, $5::bytea, $6::int, $7::bool, $8::date,"
            " $9::timestamptz, $10::int[], $11::jsonb",
            42, 2.5, decimal.Decimal("12.345"), "héllo ✓", b"\x00\xff", None, False, datetime.date(2024, 2, 29),
            datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), [4, 5], '{"k": [1, 2]}',
        )
        out["types"] = tuple(row)
        await conn.execute("create table apg_items (id int primary key, name text, qty int)")
        await conn.executemany("insert into apg_items values ($1, $2, $3)",
                               [(i, f"n{i}", i % 5) for i in range(300)])
        out["repeated"] = [await conn.fetchval("select count(*) from apg_items where qty = $1", q)
                           for q in range(5) for _ in range(3)]
        try:
            await conn.fetchval("select 1/0")
        except asyncpg.PostgresError as e:
            out["error"] = e.sqlstate
        out["after_error"] = await conn.fetchval("select 'ok'")
        out["many"] = [tuple(r) for r in await conn.fetch("select g, g * 2 from generate_series(1, 3000) g")]
        if mode != "statement":
            async with conn.transaction():
                await conn.execute("insert into apg_items values (1000, 'kept', 0)")
            try:
                async with conn.transaction():
                    await conn.execute("insert into apg_items values (1001, 'rolled back', 0)")
                    await conn.execute("insert into apg_items values (1000, 'duplicate', 0)")
            except asyncpg.UniqueViolationError as e:
                out["tx_error"] = e.sqlstate
            async with conn.transaction():
                out["cursor"] = [r["id"] async for r in conn.cursor("select id from apg_items order by id limit 25")]
        if mode == "session":
            stmt = await conn.prepare("select name from apg_items where id = $1")
            out["prepared"] = [await stmt.fetchval(i) for i in (1, 2, 3, 299)]
        await conn.execute("create table apg_copy (id int, name text)")
        out["copy_in"] = await conn.copy_records_to_table("apg_copy", records=[(i, f"c{i}") for i in range(2000)])
        buf = io.BytesIO()
        out["copy_out"] = await conn.copy_from_query("select * from apg_copy order by id", output=buf)
        out["copy_out_bytes"] = buf.getvalue()
        out["final"] = tuple(await conn.fetchrow("select count(*), sum(qty) from apg_items"))
    finally:
        await conn.close()
    return out


@pytest.mark.parametrize("mode", MODES)
def test_asyncpg_gives_the_same_results_as_directly(mode, pooler, postgres):
    target = pooler(mode=mode, pool_size=2)
    drop(postgres, "apg_items", "apg_copy")
    direct = asyncio.run(asyncpg_workload(Direct(postgres), mode))
    drop(postgres, "apg_items", "apg_copy")
    proxied = asyncio.run(asyncpg_workload(target, mode))
    drop(postgres, "apg_items", "apg_copy")
    assert direct["error"] == "22012" and direct["copy_in"] == "COPY 2000"
    for key in direct:
        assert proxied.get(key) == direct[key], f"asyncpg's {key!r} differs through the pooler"
    assert proxied.keys() == direct.keys()


# ---------------------------------------------------------------------------------------------------------------
# JDBC (Debian's libpostgresql-jdbc-java)

JDBC_PROBE = r"""
import java.sql.*;

public class JdbcProbe {
    static void print(ResultSet rs) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        StringBuilder sb = new StringBuilder();
        for (int i = 1; i <= md.getColumnCount(); i++) sb.append(i > 1 ? "|" : "").append(md.getColumnLabel(i));
        System.out.println(sb);
        while (rs.next()) {
            sb = new StringBuilder();
            for (int i = 1; i <= md.getColumnCount(); i++) sb.append(i > 1 ? "|" : "").append(rs.getString(i));
            System.out.println(sb);
        }
    }

    public static void main(String[] args) throws Exception {
        String mode = args[1];
        try (Connection c = DriverManager.getConnection(args[0])) {
            Statement st = c.createStatement();
            print(st.executeQuery("select 1 as one, 'two' as two, 3.5::numeric as three, null::int as nothing,"
                + " array[1,2] as arr, date '2024-01-02' as d, true as t, 'héllo ✓' as u"));
            st.execute("create table jdbc_items (id int primary key, name text, price numeric(10,2))");
            PreparedStatement ins = c.prepareStatement("insert into jdbc_items values (?, ?, ?)");
            for (int i = 1; i <= 60; i++) {
                ins.setInt(1, i);
                ins.setString(2, "item " + i);
                ins.setBigDecimal(3, new java.math.BigDecimal(i + ".25"));
                ins.addBatch();
            }
            System.out.println("batch " + ins.executeBatch().length);
            PreparedStatement q = c.prepareStatement("select name, price from jdbc_items where id = ?");
            for (int i = 1; i <= 12; i++) {  // more than prepareThreshold (5) runs: named statements
                q.setInt(1, i * 4);
                print(q.executeQuery());
            }
            if (!mode.equals("statement")) {
                c.setAutoCommit(false);
                st.executeUpdate("insert into jdbc_items values (1000, 'rolled back', 1)");
                c.rollback();
                st.executeUpdate("insert into jdbc_items values (1001, 'kept', 1)");
                Savepoint sp = c.setSavepoint();
                st.executeUpdate("insert into jdbc_items values (1002, 'to savepoint', 1)");
                c.rollback(sp);
                c.commit();
                c.setAutoCommit(true);
            }
            try {
                st.executeQuery("select 1/0");
            } catch (SQLException e) {
                System.out.println("error " + e.getSQLState());
            }
            print(st.executeQuery("select count(*), sum(price) from jdbc_items"));
            print(st.executeQuery("select id, name from jdbc_items where id > 999 order by id"));
            ResultSet cols = c.getMetaData().getColumns(null, "public", "jdbc_items", null);
            while (cols.next()) {
                System.out.println("column " + cols.getString("COLUMN_NAME") + " " + cols.getString("TYPE_NAME"));
            }
            CallableStatement call = c.prepareCall("{? = call upper(?)}");
            call.registerOutParameter(1, Types.VARCHAR);
            call.setString(2, "called");
            call.execute();
            System.out.println("call " + call.getString(1));
        }
    }
}
"""


@pytest.fixture(scope="session")
def jdbc_probe(tmp_path_factory) -> Path:
    javac = shutil.which("javac")
    if javac is None or not JDBC_JAR.exists():
        pytest.fail("javac or /usr/share/java/postgresql.jar missing: scripts/test installs default-jdk-headless "
                    "and libpostgresql-jdbc-java", pytrace=False)
    directory = tmp_path_factory.mktemp("jdbc")
    (directory / "JdbcProbe.java").write_text(JDBC_PROBE)
    r = subprocess.run([javac, "-encoding", "UTF-8", "-cp", str(JDBC_JAR), "-d", str(directory),
                        str(directory / "JdbcProbe.java")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return directory


def run_jdbc(classes: Path, port: int, mode: str) -> tuple[int, str, str]:
    params = "user=app&connectTimeout=10&ApplicationName=jdbcprobe"
    url = f"jdbc:postgresql://{harness.LOOPBACK}:{port}/appdb?{params}"
    r = subprocess.run(["java", "-Dfile.encoding=UTF-8", "-cp", f"{classes}:{JDBC_JAR}", "JdbcProbe", url, mode],
                       capture_output=True, text=True, timeout=120, env=harness.clean_env())
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("mode", MODES)
def test_jdbc_gives_the_same_results_as_directly(mode, jdbc_probe, pooler, postgres):
    target = pooler(mode=mode, pool_size=2)
    drop(postgres, "jdbc_items")
    direct = run_jdbc(jdbc_probe, postgres.port, mode)
    drop(postgres, "jdbc_items")
    proxied = run_jdbc(jdbc_probe, target.port, mode)
    drop(postgres, "jdbc_items")
    assert direct[0] == 0 and "error 22012" in direct[1] and "call CALLED" in direct[1], direct
    assert proxied[0] == 0, f"the JDBC probe failed through the pooler:\n{proxied[2][-3000:]}"
    assert proxied[1] == direct[1]
