"""Errors a user can act on, each with its SQLSTATE, and in each case another client keeps
working through the same Lifeguard: pool timeout (53300, naming the pool and the setting; in transaction mode the
client stays usable), max_client_conn (53300 at startup), unknown database (3D000), bad password (28P01, md5 and
scram-sha-256), upstream unreachable (08006 with the upstream's message), a server connection terminated mid-query
(the server's own 57P01, the pool replaces it) and protocol violations (08P01, nothing else affected)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import socket
import struct
import threading
import time

import asyncpg
import psycopg
import pytest

import harness
import targets
import wire


def error_text(e: psycopg.Error) -> str:
    d = e.diag
    return " ".join(x for x in (d.message_primary, d.message_detail, d.message_hint) if x) or str(e)


def startup_or_first_query_error(port: int, user: str, database: str) -> dict[str, str]:
    """The ErrorResponse a raw client gets at startup, or else for its first query; fails if there is none."""
    with wire.RawClient(port, timeout=10) as client:
        messages = client.startup(user=user, database=database)
        errs = wire.errors(messages)
        if not errs and messages[-1][0] == b"Z":
            messages = client.simple_query("select 1")
            errs = wire.errors(messages)
        assert errs, f"no error for {user}@{database}: {messages}"
        return errs[0]


# ---------------------------------------------------------------------------------------------------------------
# Pool timeout


def test_pool_timeout_is_53300_naming_the_pool_and_the_client_stays_usable(pooler, postgres):
    user = targets.role(postgres, "err_timeout")
    target = pooler(mode="transaction", pool_size=2, max_overflow=0, pool_timeout="1s")
    holders = [target.connect(user=user) for _ in range(2)]
    waiter = target.connect(user=user)
    try:
        for h in holders:  # each holds a server connection until its transaction ends
            h.execute("BEGIN")
            h.execute("select 1")
        started = time.monotonic()
        with pytest.raises(psycopg.Error) as info:
            waiter.execute("select 'waited'")
        took = time.monotonic() - started
        assert info.value.sqlstate == "53300", f"{info.value.sqlstate}: {info.value}"
        text = error_text(info.value)
        for needle in ("appdb", user, "pool_timeout", "2"):
            assert needle in text, f"the pool timeout error should mention {needle!r}: {text}"
        assert 0.8 <= took < 5, f"the timeout came after {took:.2f}s with pool_timeout 1s"
        # Other clients carry on; once a connection is free, the same client connection works again.
        assert holders[0].execute("select 'holder'").fetchone() == ("holder",)
        for h in holders:
            h.execute("COMMIT")
        assert waiter.execute("select 'usable again'").fetchone() == ("usable again",)
        assert holders[1].execute("select 2").fetchone() == (2,)
    finally:
        for c in [*holders, waiter]:
            c.close()


# ---------------------------------------------------------------------------------------------------------------
# max_client_conn


def test_over_max_client_conn_is_53300_at_startup(pooler, postgres):
    user = targets.role(postgres, "err_maxconn")
    target = pooler(mode="transaction", pool_size=2, max_client_conn=3)
    clients = [target.connect(user=user) for _ in range(3)]
    try:
        for c in clients:
            c.execute("select 1")
        err = startup_or_first_query_error(target.port, user, "appdb")
        assert err.get("C") == "53300", err
        for c in clients:  # the clients already in are not affected
            assert c.execute("select 'still in'").fetchone() == ("still in",)
        clients.pop().close()

        def admitted():
            try:
                with target.connect(user=user) as c:
                    return c.execute("select 'admitted'").fetchone()
            except psycopg.OperationalError:
                return None

        assert harness.wait_until(admitted, 5, what="a free client slot") == ("admitted",)
    finally:
        for c in clients:
            c.close()


# ---------------------------------------------------------------------------------------------------------------
# Unknown database


def test_unknown_database_is_3D000(pooler, postgres):
    target = pooler(mode="transaction", databases={"x": postgres.dsn()})
    with target.connect(dbname="x") as known:
        assert known.execute("select current_database()").fetchone() == ("appdb",)
        err = startup_or_first_query_error(target.port, "app", "nosuchdb")
        assert err.get("C") == "3D000", err
        assert "nosuchdb" in err.get("M", ""), err
        assert known.execute("select 'x still served'").fetchone() == ("x still served",)


# ---------------------------------------------------------------------------------------------------------------
# Bad password


def scram_secret(password: str, salt: bytes = b"lifeguard-salt16", iterations: int = 4096) -> str:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def asyncpg_login(port: int, user: str, password: str) -> str:
    conn = await asyncpg.connect(host=harness.LOOPBACK, port=port, user=user, password=password, database="appdb",
                                 statement_cache_size=0, timeout=10)
    try:
        return await conn.fetchval("select current_user")
    finally:
        await conn.close()


def login_error(port: int, user: str, password: str) -> str:
    try:
        asyncio.run(asyncpg_login(port, user, password))
    except asyncpg.PostgresError as e:
        return e.sqlstate
    raise AssertionError(f"{user} logged in with a wrong password")


@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256"])
def test_bad_password_is_28P01(auth_type, pooler, postgres):
    plain = targets.role(postgres, "auth_plain")
    scram = targets.role(postgres, "auth_scram")
    users = {plain: "plain-secret"}
    if auth_type == "scram-sha-256":
        users[scram] = scram_secret("scram-secret")
    target = pooler(mode="transaction", auth_type=auth_type, auth_users=users)

    with psycopg.connect(target.dsn(user=plain, password="plain-secret"), autocommit=True,
                         prepare_threshold=None) as other:
        assert other.execute("select current_user").fetchone() == (plain,)
        assert login_error(target.port, plain, "Wr0ng-pa55word") == "28P01"
        assert login_error(target.port, "nobody_in_the_file", "whatever") == "28P01"
        assert asyncio.run(asyncpg_login(target.port, plain, "plain-secret")) == plain
        if auth_type == "scram-sha-256":
            assert login_error(target.port, scram, "plain-secret") == "28P01"
            assert asyncio.run(asyncpg_login(target.port, scram, "scram-secret")) == scram
            # libpq (psql's library) with SCRAM, too.
            with psycopg.connect(target.dsn(user=scram, password="scram-secret"), prepare_threshold=None) as c:
                assert c.execute("select current_user").fetchone() == (scram,)
        assert other.execute("select 'other client still fine'").fetchone() == ("other client still fine",)
    log = target.describe()
    for secret in ("plain-secret", "scram-secret", "Wr0ng-pa55word"):
        assert secret not in log, f"a password ({secret}) appears in the output"


# ---------------------------------------------------------------------------------------------------------------
# Upstream unreachable


def test_unreachable_upstream_is_08006_with_the_upstreams_message(pooler, postgres):
    closed = harness.free_port()
    assert not harness.port_accepts(closed)
    target = pooler(mode="transaction", pool_timeout="2s", databases={
        "down": f"postgresql://app@127.0.0.1:{closed}/appdb",
        "appdb": postgres.dsn(),
    })
    with target.connect() as working:
        err = startup_or_first_query_error(target.port, "app", "down")
        assert err.get("C") == "08006", err
        text = (err.get("M", "") + " " + err.get("D", "")).lower()
        assert "refused" in text, f"the error should carry the upstream's own message (connection refused): {err}"
        assert working.execute("select 'up'").fetchone() == ("up",)
    with target.connect() as fresh:
        assert fresh.execute("select 'still up'").fetchone() == ("still up",)


# ---------------------------------------------------------------------------------------------------------------
# A server connection that dies mid-query


class Bystander(threading.Thread):
    """A client running short queries in a loop; records every failure."""

    def __init__(self, target, user: str):
        super().__init__(daemon=True)
        self.conn = target.connect(user=user)
        self.stopping = threading.Event()
        self.ok = 0
        self.failures: list[BaseException] = []

    def run(self):
        while not self.stopping.is_set():
            try:
                assert self.conn.execute("select 41 + 1").fetchone() == (42,)
                self.ok += 1
            except BaseException as e:  # noqa: BLE001 - every failure is the finding
                self.failures.append(e)
                return
            time.sleep(0.01)

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        self.conn.close()


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_server_connection_terminated_mid_query_tells_the_client_what_postgresql_said(mode, pooler, postgres, monitor):
    """pg_terminate_backend under a query: the client gets PostgreSQL's own FATAL 57P01 (drivers decide on
    reconnects from that SQLSTATE, psycopg raises AdminShutdown), its session ends as it would without a pooler,
    and the pool replaces the connection."""
    user = targets.role(postgres, f"err_die_{mode}")
    target = pooler(mode=mode, pool_size=2, max_overflow=0)
    victim = target.connect(user=user)
    bystander = Bystander(target, user)
    bystander.start()
    outcome: list = []

    def run_victim():
        try:
            victim.execute("select pg_sleep(10)")
            outcome.append(None)
        except psycopg.Error as e:
            outcome.append(e)
        outcome.append(time.monotonic())

    thread = threading.Thread(target=run_victim)
    thread.start()
    try:
        pid = monitor.wait_for_query(user, "select pg_sleep(10)%")
        killed_at = time.monotonic()
        assert monitor.value("select pg_terminate_backend(%s)", (pid,)) is True
        thread.join(10)
        assert outcome and outcome[0] is not None, "the victim's query did not fail"
        err = outcome[0]
        assert isinstance(err, psycopg.errors.AdminShutdown), f"expected AdminShutdown, got {type(err)}: {err}"
        assert err.sqlstate == "57P01", f"expected 57P01, got {err.sqlstate}: {err}"
        assert err.diag.severity_nonlocalized == "FATAL"
        assert "terminating connection due to administrator command" in str(err)
        assert outcome[1] - killed_at < 2, f"the error came {outcome[1] - killed_at:.2f}s after the kill"
        assert victim.closed or victim.broken, "the client's session ends with the server's"
        time.sleep(0.3)
    finally:
        bystander.stop()
        victim.close()
    assert not bystander.failures, f"another client failed: {bystander.failures}"
    assert bystander.ok > 0
    # The pool replaces the dead connection: pool_size clients at once each get a live server connection.
    conns = [target.connect(user=user) for _ in range(2)]
    try:
        pids = set()
        for c in conns:
            c.execute("BEGIN")
            pids.add(c.execute("select pg_backend_pid()").fetchone()[0])
        assert len(pids) == 2 and pid not in pids, f"server connections {pids}, the killed one was {pid}"
        for c in conns:
            c.execute("COMMIT")
    finally:
        for c in conns:
            c.close()


# ---------------------------------------------------------------------------------------------------------------
# Protocol violations


def violation_after_startup(port: int, payload: bytes) -> list[tuple[bytes, bytes]]:
    with wire.RawClient(port) as client:
        assert wire.errors(client.startup()) == []
        client.send(payload)
        return client.wait_closed(5)


VIOLATIONS = {
    "length shorter than the header": b"Q" + struct.pack("!i", 2),
    "negative length": b"Q" + struct.pack("!i", -8) + b"select 1\0",
    "length above the maximum": b"Q" + struct.pack("!i", 0x7FFFFFFF) + b"select 1\0",
    "unknown message type": b"\xff" + struct.pack("!i", 8) + b"abcd",
    "garbage (a bad type byte, then bytes)": bytes(range(7, 200)),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_protocol_violation_after_startup_is_08P01_and_nothing_else(name, pooler):
    target = pooler(mode="transaction", pool_size=2)
    with target.connect() as other:
        other.execute("BEGIN")
        other.execute("select 1")
        messages = violation_after_startup(target.port, VIOLATIONS[name])
        errs = wire.errors(messages)
        assert [e.get("C") for e in errs] == ["08P01"], f"{name}: expected one 08P01 then close, got {messages}"
        assert other.execute("select 'unaffected'").fetchone() == ("unaffected",)
        other.execute("COMMIT")
    assert target.alive()


STARTUP_VIOLATIONS = {
    "startup length 3": struct.pack("!i", 3),
    "startup length over 10 KB": struct.pack("!i", 20000) + b"\0" * 20000,
    "unknown protocol version": struct.pack("!ii", 16, 0x00090000) + b"user\0\0\0\0",
    "HTTP instead of PostgreSQL": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "startup without user": struct.pack("!ii", 9, 196608) + b"\0",
}


@pytest.mark.parametrize("name", list(STARTUP_VIOLATIONS))
def test_bad_startup_packet_closes_that_client_only(name, pooler):
    target = pooler(mode="transaction", pool_size=2)
    with target.connect() as other:
        with wire.RawClient(target.port) as client:
            try:
                client.send(STARTUP_VIOLATIONS[name])
            except OSError:
                pass
            messages = client.wait_closed(5)
        errs = wire.errors(messages)
        # PostgreSQL itself answers some of these with an error and closes others silently; an error, if any,
        # must be a protocol violation (08P01, 0A000 for the version) or, for the missing user, 28000.
        assert all(e.get("C") in ("08P01", "28000", "0A000") for e in errs), f"{name}: {messages}"
        assert [k for k, _ in messages if k not in (b"E", b"N")] == [], f"{name}: unexpected answer {messages}"
        assert other.execute("select 'unaffected'").fetchone() == ("unaffected",)
    assert target.alive()


@pytest.mark.parametrize("request_code", [wire.SSL_REQUEST, wire.GSSENC_REQUEST])
def test_ssl_and_gssenc_requests_are_refused_with_N_then_startup_works(request_code, pooler):
    target = pooler(mode="transaction", pool_size=2)
    with wire.RawClient(target.port) as client:
        client.send(struct.pack("!ii", 8, request_code))
        assert client.read_byte() == b"N"
        messages = client.startup()
        assert wire.errors(messages) == [] and messages[-1] == (b"Z", b"I"), messages
        assert wire.rows(client.simple_query("select 'plain text'")) == [["plain text"]]
        client.terminate()


def test_client_that_connects_and_leaves_without_a_word(pooler):
    target = pooler(mode="transaction", pool_size=2)
    for _ in range(20):
        s = socket.create_connection((harness.LOOPBACK, target.port), timeout=5)
        s.close()
    with target.connect() as c:
        assert c.execute("select 'fine'").fetchone() == ("fine",)
    assert target.alive()
    assert os.path.exists(f"/proc/{target.pid}")
