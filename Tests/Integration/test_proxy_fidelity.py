"""What PostgreSQL says reaches the client as PostgreSQL says it: the same client, once directly and once through
Lifeguard, must see the same thing, in every pool mode the behaviour applies to.

Login refusals that will not pass by waiting (a database that does not exist, a role the server does not know) are
relayed at once with the server's own SQLSTATE, severity and message, not retried until pool_timeout."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

import harness
import targets
import wire

MODES = ["session", "transaction", "statement"]


def login_error(port: int, user: str, database: str) -> tuple[dict[str, str], float]:
    """The ErrorResponse a raw client gets at startup (or else for its first query), and how long it took."""
    started = time.monotonic()
    with wire.RawClient(port, timeout=30) as client:
        messages = client.startup(user=user, database=database)
        errs = wire.errors(messages)
        if not errs and messages[-1][0] == b"Z":
            errs = wire.errors(client.simple_query("select 1"))
    took = time.monotonic() - started
    assert errs, f"no error for {user}@{database}"
    return errs[0], took


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "case, user, database",
    [
        ("unknown database", "app", "fidelity_no_such_db"),
        ("unknown role", "fidelity_no_such_role", "appdb"),
    ],
)
def test_a_login_the_server_refuses_is_relayed_at_once(mode, case, user, database, pooler, postgres):
    # A long pool_timeout: waiting it out would show.
    target = pooler(mode=mode, pool_timeout="10s")
    direct, _ = login_error(postgres.port, user, database)
    through, took = login_error(target.port, user, database)
    assert took < 1, f"{case}: the refusal came after {took:.2f}s (pool_timeout 10s)"
    for field, name in (("S", "severity"), ("C", "SQLSTATE"), ("M", "message")):
        assert through.get(field) == direct.get(field), (
            f"{case}, {mode} mode: {name} {through.get(field)!r} through Lifeguard, {direct.get(field)!r} directly"
        )
    # Again: every client gets its own answer (the database may exist by now), not a cached one.
    again, took = login_error(target.port, user, database)
    assert (again.get("C"), took < 1) == (direct.get("C"), True), (again, took)
    if targets.TARGET == "lifeguard":
        # The pool the refused name created is gone again, series included: typos must not pile up pools.
        assert target.metrics().find("lifeguard_pool_size", database=database, user=user) == []
    # Everyone else is served as before.
    with target.connect() as conn:
        assert conn.execute("select 'still served'").fetchone() == ("still served",)


def test_a_refusal_once_fixed_is_not_remembered(pooler, postgres):
    """A database created after a refusal is served at once: the refusal is not cached."""
    target = pooler(mode="transaction", pool_timeout="10s")
    name = "fidelity_created_later"
    postgres.psql(f"DROP DATABASE IF EXISTS {name}", user=postgres.superuser, dbname="postgres")
    first, _ = login_error(target.port, "app", name)
    assert first.get("C") == "3D000", first
    postgres.psql(f"CREATE DATABASE {name} OWNER app", user=postgres.superuser, dbname="postgres")
    try:
        started = time.monotonic()
        with target.connect(dbname=name) as conn:
            assert conn.execute("select current_database()").fetchone() == (name,)
        assert time.monotonic() - started < 1
    finally:
        postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", user=postgres.superuser, dbname="postgres")


def test_waiting_clients_are_told_together(pooler, postgres):
    """Clients that asked at the same moment all get the refusal, well before pool_timeout."""
    target = pooler(mode="session", pool_timeout="10s")
    results: list[tuple[dict[str, str], float]] = []
    threads = [threading.Thread(target=lambda: results.append(login_error(target.port, "app", "fidelity_nope")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert len(results) == 4, results
    for err, took in results:
        assert err.get("C") == "3D000" and took < 1, (err, took)


def test_a_configured_pool_counts_refusals_by_reason_and_stays(pooler, postgres):
    """A [databases] entry whose server database does not exist: refused at once, counted as `rejected`."""
    targets.require_lifeguard("its /metrics")
    target = pooler(mode="transaction", pool_timeout="10s",
                    databases={"ghost": postgres.dsn(dbname="fidelity_ghost"), "appdb": postgres.dsn()})
    err, took = login_error(target.port, "app", "ghost")
    assert err.get("C") == "3D000" and took < 1, (err, took)
    assert '"fidelity_ghost"' in err.get("M", ""), err
    errors = target.metrics().value("lifeguard_pool_connection_errors_total", database="ghost", user="app",
                                    reason="rejected")
    assert errors == 1, errors
    with target.connect() as conn:
        assert conn.execute("select 'still served'").fetchone() == ("still served",)


# ---------------------------------------------------------------------------------------------------------------
# ParameterStatus


def parameter_status(port: int, **params: str) -> dict[str, str]:
    """The ParameterStatus values a raw client is greeted with."""
    with wire.RawClient(port, timeout=10) as client:
        messages = client.startup(**params)
        assert messages[-1][0] == b"Z", messages
        return {name.decode(): value.decode()
                for kind, payload in messages if kind == b"S"
                for name, value, _ in [payload.split(b"\0")]}


SPELLINGS = [
    {"client_encoding": "utf8"},
    {"client_encoding": "eucjp"},
    {"client_encoding": "utf-8", "DateStyle": "iso", "TimeZone": "utc"},
    {"application_name": "fidelity app", "IntervalStyle": "ISO_8601"},
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("params", SPELLINGS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_parameter_status_is_the_servers_spelling(mode, params, pooler, postgres):
    target = pooler(mode=mode)
    direct = parameter_status(postgres.port, **params)
    # The first client teaches the pool how the server spells the values; the second is greeted from what it learnt.
    for attempt in ("first", "second"):
        through = parameter_status(target.port, **params)
        for name in params:
            assert through.get(name) == direct.get(name), (
                f"{mode} mode, {attempt} client: {name} is {through.get(name)!r} through Lifeguard, "
                f"{direct.get(name)!r} directly"
            )
    # The connection the client then gets speaks the encoding it was told.
    with target.connect(client_encoding=params.get("client_encoding", "UTF8")) as conn:
        assert conn.execute("show client_encoding").fetchone()[0] == direct["client_encoding"]


# ---------------------------------------------------------------------------------------------------------------
# The server's FATAL


def idle_in_transaction_timeout(port: int) -> list[tuple[str, str]]:
    """BEGIN with idle_in_transaction_session_timeout 300 ms, then idle: what the client reads until the end."""
    with wire.RawClient(port, timeout=10) as client:
        messages = client.startup(options="-c idle_in_transaction_session_timeout=300")
        assert messages[-1][0] == b"Z", messages
        begun = client.simple_query("BEGIN")
        assert begun[-1] == (b"Z", b"T"), begun
        time.sleep(1)
        seen: list[tuple[str, str]] = []
        while True:
            try:
                kind, payload = client.read_message()
            except wire.Closed:
                seen.append(("closed", ""))
                return seen
            if kind == b"E":
                fields = wire.error_fields(payload)
                seen.append((fields.get("S", ""), fields.get("C", "")))
            elif kind != b"N":
                seen.append((kind.decode(), ""))


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_a_fatal_from_the_server_reaches_the_client_as_sent_and_ends_its_session(mode, pooler, postgres):
    """idle_in_transaction_session_timeout: PostgreSQL sends FATAL 25P03 and closes. A client holding that server
    connection (session mode; transaction mode inside its transaction) reads the same FATAL, then its connection
    ends, as directly; the pool replaces the server connection and serves the next client."""
    target = pooler(mode=mode)
    direct = idle_in_transaction_timeout(postgres.port)
    assert direct == [("FATAL", "25P03"), ("closed", "")], direct
    assert idle_in_transaction_timeout(target.port) == direct
    with target.connect() as conn:
        assert conn.execute("select 'next client served'").fetchone() == ("next client served",)


# ---------------------------------------------------------------------------------------------------------------
# Counting closes as what they are


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_a_client_gone_mid_query_is_a_close_not_a_broken_connection(mode, pooler, postgres):
    """A client that disconnects while its query runs leaves a server connection that still owes the reply: it is
    closed (reason dirty), which is normal work; lifeguard_pool_connection_errors_total{reason="broken"}, which
    pages someone, stays at 0. A server connection that PostgreSQL ends is still counted as broken."""
    targets.require_lifeguard("its /metrics")
    user = targets.role(postgres, "fidelity_gone")
    target = pooler(mode=mode)
    pool = {"database": "appdb", "user": user}
    for _ in range(3):
        client = wire.RawClient(target.port, timeout=10)
        assert client.startup(user=user)[-1][0] == b"Z"
        client.send(wire.query("select pg_sleep(0.5)"))
        time.sleep(0.1)
        client.close()

    def counted():
        return target.metrics().value("lifeguard_pool_connections_closed_total", reason="dirty", **pool) == 3

    harness.wait_until(counted, 10, what="three dirty closes")
    metrics = target.metrics()
    assert metrics.value("lifeguard_pool_connection_errors_total", reason="broken", **pool) == 0
    assert metrics.value("lifeguard_pool_connections_closed_total", reason="error", **pool) == 0
    with target.connect(user=user) as conn:
        assert conn.execute("select 'served'").fetchone() == ("served",)


# ---------------------------------------------------------------------------------------------------------------
# Prepared statements and schema changes


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_a_new_client_never_gets_a_statement_planned_before_a_schema_change(mode, pooler, postgres):
    """Named statements are shared on server connections by their text. After a migration drops and recreates a
    table and a type, a brand-new client that prepares the same text must get what it would get on a connection of
    its own, not `cached plan must not change result type` or `cache lookup failed for type`."""
    target = pooler(mode=mode, pool_size=1)
    table, mood = f"fidelity_stmt_{mode}", f"fidelity_mood_{mode}"
    create = (f"CREATE TYPE {mood} AS ENUM ('sad', 'ok'); "
              f"CREATE TABLE {table} (id int, m {mood}); INSERT INTO {table} VALUES (1, 'ok')")
    postgres.psql(f"DROP TABLE IF EXISTS {table}; DROP TYPE IF EXISTS {mood}; {create}")
    by_table = f"select * from {table} where id = %s"
    by_type = f"select %s::{mood} as m"

    def run(queries, port):
        # Every query a named, prepared statement.
        with psycopg.connect(f"host=127.0.0.1 port={port} user=app dbname=appdb", autocommit=True,
                             prepare_threshold=0) as conn:
            try:
                return [conn.execute(sql, params).fetchall() for sql, params in queries]
            except psycopg.Error as e:
                return f"{e.sqlstate}: {e}"

    def both(queries):
        """What a new client gets directly, and through Lifeguard; they must agree."""
        direct, through = run(queries, postgres.port), run(queries, target.port)
        assert through == direct, f"through Lifeguard {through!r}, directly {direct!r}"
        return through

    assert both([(by_table, (1,)), (by_type, ("ok",))]) == [[(1, "ok")], [("ok",)]]
    # The migration: the table gets other columns, the type other values (and a new OID).
    postgres.psql(f"DROP TABLE {table}; DROP TYPE {mood}; CREATE TYPE {mood} AS ENUM ('ok', 'great'); "
                  f"CREATE TABLE {table} (id int, m {mood}, note text); INSERT INTO {table} VALUES (1, 'great', 'n')")
    assert both([(by_table, (1,)), (by_type, ("great",))]) == [[(1, "great", "n")], [("great",)]]
    # And again: the server connection serves further clients as well.
    assert both([(by_table, (1,))]) == [[(1, "great", "n")]]


def test_a_clients_statement_is_never_run_from_a_copy_older_than_its_own_parse(pooler, postgres):
    """Two server connections both hold a statement prepared before a migration. A client that prepares it after the
    migration, on one of them, and then runs it on the other must get what it gets directly: the older copy there is
    prepared again first."""
    target = pooler(mode="transaction", pool_size=2, max_overflow=0)
    table = "fidelity_stmt_copies"
    postgres.psql(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int, v text); "
                  f"INSERT INTO {table} VALUES (1, 'old')")
    query = f"select * from {table} where id = %s"

    def prepared_client():
        return target.connect(prepare_threshold=0)

    # Both server connections get the statement, planned for the old table.
    a, b = prepared_client(), prepared_client()
    for conn in (a, b):
        conn.execute("BEGIN")
        assert conn.execute(query, (1,)).fetchall() == [(1, "old")]
    for conn in (a, b):
        conn.execute("COMMIT")
        conn.close()
    postgres.psql(f"DROP TABLE {table}; CREATE TABLE {table} (id int, v text, added int); "
                  f"INSERT INTO {table} VALUES (1, 'new', 2)")

    holder1, holder2, client = target.connect(), target.connect(), prepared_client()
    try:
        holder1.execute("BEGIN")
        holder1.execute("select 1")  # holds one server connection
        assert client.execute(query, (1,)).fetchall() == [(1, "new", 2)]  # prepared on the other one
        holder2.execute("BEGIN")
        holder2.execute("select 1")  # takes the connection the client just used
        holder1.execute("COMMIT")
        # The client's next use runs on the first connection, whose copy predates the client's Parse.
        assert client.execute(query, (1,)).fetchall() == [(1, "new", 2)]
        holder2.execute("COMMIT")
    finally:
        for conn in (holder1, holder2, client):
            conn.close()
