"""Session state never leaks from one client to the next: session settings, temp
tables, prepared statements, advisory locks and LISTEN of a session-mode client are gone when the next client gets
the same server connection; a client that dies mid-transaction or mid-COPY leaves no open transaction on any
server connection (checked in pg_stat_activity from a direct connection)."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time

import psycopg
import pytest

import harness
import targets
import wire


def fresh_settings(postgres, user: str) -> tuple:
    """What a brand-new session of this role sees, straight from PostgreSQL."""
    with psycopg.connect(postgres.kv_dsn(user=user), autocommit=True) as conn:
        return conn.execute(
            "select current_setting('statement_timeout'), current_setting('work_mem'), "
            "current_setting('search_path'), current_setting('DateStyle')"
        ).fetchone()


def test_session_state_is_not_visible_to_the_next_client(pooler, postgres, monitor):
    targets.require_pooler("reuses server connections")
    user = targets.role(postgres, "iso_session")
    baseline = fresh_settings(postgres, user)
    target = pooler(mode="session", pool_size=1, max_overflow=0)

    with target.connect(user=user) as first:
        first_pid = first.execute("select pg_backend_pid()").fetchone()[0]
        first.execute("SET statement_timeout = '4321s'")
        first.execute("SET work_mem = '7MB'")
        first.execute("SET search_path = pg_catalog")
        first.execute("SET DateStyle = 'German'")
        first.execute("CREATE TEMP TABLE leak_tmp AS SELECT 1 AS x")
        first.execute("PREPARE leak_stmt AS SELECT 42")
        first.execute("SELECT pg_advisory_lock(4242)")
        first.execute("LISTEN leak_channel")
        # The state is really there (so its absence later means something).
        assert first.execute("select current_setting('statement_timeout')").fetchone() == ("4321s",)
        assert first.execute("select count(*) from pg_prepared_statements").fetchone() == (1,)
        assert first.execute("select to_regclass('leak_tmp') is not null").fetchone() == (True,)
        assert monitor.value("select pg_try_advisory_lock(4242)") is False

    with target.connect(user=user) as second:
        second_pid = second.execute("select pg_backend_pid()").fetchone()[0]
        assert second_pid == first_pid, "pool_size 1 should have handed the same server connection to both clients"
        settings = second.execute(
            "select current_setting('statement_timeout'), current_setting('work_mem'), "
            "current_setting('search_path'), current_setting('DateStyle')"
        ).fetchone()
        assert settings == baseline, "SET from the previous client is visible"
        assert second.execute("select to_regclass('pg_temp.leak_tmp')").fetchone() == (None,), "temp table leaked"
        assert second.execute("select count(*) from pg_class where relname = 'leak_tmp'").fetchone() == (0,)
        assert second.execute("select name from pg_prepared_statements").fetchall() == [], "PREPARE leaked"
        assert second.execute(
            "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"
        ).fetchone() == (0,), "advisory lock leaked"
        assert second.execute("select pg_listening_channels()").fetchall() == [], "LISTEN leaked"
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            second.execute("EXECUTE leak_stmt")
    # The lock is free for everybody else too.
    assert monitor.value("select pg_try_advisory_lock(4242)") is True
    monitor.value("select pg_advisory_unlock(4242)")


# ---------------------------------------------------------------------------------------------------------------
# Clients that die mid-transaction or mid-COPY


def prepare_table(postgres, user: str) -> None:
    postgres.psql(f"DROP TABLE IF EXISTS {user}.killed; CREATE TABLE {user}.killed (x int)", user=user)


def check_clean_after(target, postgres, monitor, user: str) -> None:
    """No server connection of this role is left in a transaction or a COPY, the dead client's work was rolled
    back, and the pool serves the next client with a clean connection."""
    targets.wait_no_idle_in_transaction(monitor, user, timeout=5)

    def no_copy():
        return not [b for b in monitor.backends(user) if b[1] == "active" and "COPY" in (b[2] or "").upper()]

    harness.wait_until(no_copy, 5, what="no server connection stuck in COPY")
    assert postgres.psql(f"select count(*) from {user}.killed", user=user) == "0", "the dead client's rows stayed"
    with target.connect(user=user) as conn:
        row = conn.execute(
            "select count(*), pg_current_xact_id_if_assigned() is null from killed"
        ).fetchone()
        assert row == (0, True), "the next client got a server connection inside the dead client's transaction"
        conn.execute("insert into killed values (7)")
    assert postgres.psql(f"select count(*) from {user}.killed", user=user) == "1"
    assert monitor.idle_in_transaction(user) == []


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_psql_killed_mid_transaction_leaves_no_open_transaction(mode, pooler, postgres, monitor):
    user = targets.role(postgres, f"iso_kill_{mode}")
    prepare_table(postgres, user)
    target = pooler(mode=mode, pool_size=1, max_overflow=0)
    psql = subprocess.Popen(
        [str(harness.PG_BIN / "psql"), "-X", "-q", "-h", harness.LOOPBACK, "-p", str(target.port), "-U", user, "-d",
         "appdb"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=harness.clean_env({"PGCONNECT_TIMEOUT": "10"}),
    )
    try:
        psql.stdin.write(b"BEGIN;\nINSERT INTO killed VALUES (1);\n")
        psql.stdin.flush()
        harness.wait_until(lambda: monitor.idle_in_transaction(user), 10, interval=0.05,
                           what="psql's transaction open on the server")
        os.kill(psql.pid, signal.SIGKILL)
        psql.wait(10)
    finally:
        if psql.poll() is None:
            psql.kill()
            psql.wait()
    check_clean_after(target, postgres, monitor, user)


@pytest.mark.parametrize("mode", ["session", "transaction"])
@pytest.mark.parametrize("how", ["close", "reset"])
def test_raw_client_gone_mid_transaction_leaves_no_open_transaction(mode, how, pooler, postgres, monitor):
    user = targets.role(postgres, f"iso_raw_{mode}")
    prepare_table(postgres, user)
    target = pooler(mode=mode, pool_size=1, max_overflow=0)
    client = wire.RawClient(target.port)
    assert wire.errors(client.startup(user=user)) == []
    messages = client.simple_query("BEGIN; INSERT INTO killed VALUES (2)")
    assert messages[-1] == (b"Z", b"T"), f"expected ReadyForQuery in a transaction, got {messages}"
    assert monitor.idle_in_transaction(user), "the transaction should be open on a server connection"
    if how == "reset":  # RST instead of FIN
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    check_clean_after(target, postgres, monitor, user)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_raw_client_gone_mid_copy_leaves_the_connection_clean(mode, pooler, postgres, monitor):
    user = targets.role(postgres, f"iso_copy_{mode}")
    prepare_table(postgres, user)
    target = pooler(mode=mode, pool_size=1, max_overflow=0)
    client = wire.RawClient(target.port)
    assert wire.errors(client.startup(user=user)) == []
    client.send(wire.query("COPY killed FROM STDIN"))
    kind, _ = client.read_message()
    assert kind == b"G", f"expected CopyInResponse, got {kind!r}"
    client.send(wire.message(b"d", b"3\n4\n"))  # rows, but neither CopyDone nor CopyFail
    time.sleep(0.2)
    client.close()
    check_clean_after(target, postgres, monitor, user)
