"""Graceful lifecycle: SIGTERM stops accepting, lets the transaction in flight finish (its
COMMIT succeeds) and waits for clients to leave, then exits 0; past --drain-timeout it closes anyway, rolled back,
still exit 0. SIGINT closes idle clients at once; SIGQUIT or a second signal exits at once. SIGHUP reloads
pool sizes without dropping clients; a broken file keeps the old configuration and sets
lifeguard_config_last_reload_successful to 0."""

from __future__ import annotations

import signal
import threading
import time

import psycopg
import pytest

import harness
import targets


def new_client_refused(target, user: str) -> bool:
    """True when a new client cannot get a working session (connection refused, or an error at startup)."""
    try:
        with psycopg.connect(target.dsn(user=user), autocommit=True, connect_timeout=3) as c:
            c.execute("select 1")
    except psycopg.Error:
        return True
    return False


def drain_signal() -> int:
    # PgBouncer (development runs only) drains on SIGINT; SIGTERM is its immediate shutdown.
    return signal.SIGINT if targets.TARGET == "pgbouncer" else signal.SIGTERM


def exit_code(target, timeout: float) -> int | None:
    if target.kind == "lifeguard":
        return target.process.wait_exit(timeout)
    try:
        return target.process.wait(timeout)
    except Exception:  # noqa: BLE001
        return None


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_sigterm_lets_the_transaction_in_flight_commit_and_exits_0(mode, pooler, postgres):
    targets.require_pooler("a process to signal")
    user = targets.role(postgres, f"drain_{mode}")
    postgres.psql(f"DROP TABLE IF EXISTS {user}.drained; CREATE TABLE {user}.drained (x int)", user=user)
    target = pooler(mode=mode, pool_size=2)
    conn = target.connect(user=user)
    try:
        conn.execute("BEGIN")
        conn.execute("insert into drained values (1)")
        target.signal(drain_signal())
        harness.wait_until(lambda: new_client_refused(target, user), 5, what="new clients refused while draining")
        assert target.alive(), "the pooler exited with a transaction in flight"
        conn.execute("insert into drained values (2)")
        conn.execute("COMMIT")
    finally:
        conn.close()
    code = exit_code(target, 10)
    assert code == 0, f"exit code {code} after draining\n{target.describe()}"
    assert postgres.psql(f"select count(*) from {user}.drained", user=user) == "2"


def test_sigterm_past_the_drain_timeout_rolls_back_and_exits_0(pooler, postgres, monitor):
    targets.require_lifeguard("--drain-timeout")
    user = targets.role(postgres, "drain_timeout")
    postgres.psql(f"DROP TABLE IF EXISTS {user}.drained; CREATE TABLE {user}.drained (x int)", user=user)
    target = pooler(mode="transaction", pool_size=2, extra=["--drain-timeout", "1s"])
    conn = target.connect(user=user)
    try:
        conn.execute("BEGIN")
        conn.execute("insert into drained values (1)")
        started = time.monotonic()
        target.signal(signal.SIGTERM)
        code = exit_code(target, 10)
        took = time.monotonic() - started
        assert code == 0, f"exit code {code}\n{target.describe()}"
        assert 0.8 <= took < 5, f"exited {took:.2f}s after SIGTERM with drain_timeout 1s"
        with pytest.raises(psycopg.Error):
            conn.execute("COMMIT")
    finally:
        conn.close()
    targets.wait_no_idle_in_transaction(monitor, user)
    assert monitor.count(user) == 0, "server connections outlived lifeguard"
    assert postgres.psql(f"select count(*) from {user}.drained", user=user) == "0"


def test_sighup_reloads_the_pool_size_without_dropping_clients(pooler, postgres):
    targets.require_lifeguard("its metrics and config file")
    user = targets.role(postgres, "reload")
    pool = {"database": "appdb", "user": user}
    target = pooler(mode="transaction", pool_size=3, max_overflow=0, pool_timeout="1s", settings_in_file=True)
    original = target.config_path.read_text()
    assert "pool_size = 3" in original

    client = target.connect(user=user)
    try:
        pid_before = client.execute("select pg_backend_pid()").fetchone()[0]
        m = target.metrics()
        assert m.value("lifeguard_pool_size", **pool) == 3
        assert m.value("lifeguard_config_last_reload_successful") == 1

        def concurrent_transactions(n: int) -> set[int]:
            conns = [target.connect(user=user) for _ in range(n)]
            try:
                pids = set()
                for c in conns:
                    c.execute("BEGIN")
                    pids.add(c.execute("select pg_backend_pid()").fetchone()[0])
                for c in conns:
                    c.execute("COMMIT")
                return pids
            finally:
                for c in conns:
                    c.close()

        with pytest.raises(psycopg.Error) as info:  # four at once do not fit in three
            concurrent_transactions(4)
        assert info.value.sqlstate == "53300"

        # A valid change.
        target.config_path.write_text(original.replace("pool_size = 3", "pool_size = 7"))
        target.signal(signal.SIGHUP)
        harness.wait_until(lambda: target.metrics().value("lifeguard_pool_size", **pool) == 7, 10,
                           what="lifeguard_pool_size 7 after SIGHUP")
        assert target.metrics().value("lifeguard_config_last_reload_successful") == 1
        assert client.execute("select 'same client after reload'").fetchone() == ("same client after reload",)
        assert len(concurrent_transactions(7)) == 7, "the new pool_size does not apply"

        # A broken file: the old configuration stays.
        target.config_path.write_text(original.replace("pool_size = 3", 'pool_size = "five"'))
        target.signal(signal.SIGHUP)
        harness.wait_until(lambda: target.metrics().value("lifeguard_config_last_reload_successful") == 0, 10,
                           what="lifeguard_config_last_reload_successful 0 after a broken file")
        assert target.metrics().value("lifeguard_pool_size", **pool) == 7
        assert client.execute("select 'still served'").fetchone() == ("still served",)
        assert len(concurrent_transactions(7)) == 7, "the old configuration stopped serving"
        assert target.alive()

        # Fixed again: reloads succeed again.
        target.config_path.write_text(original.replace("pool_size = 3", "pool_size = 4"))
        target.signal(signal.SIGHUP)
        harness.wait_until(lambda: target.metrics().value("lifeguard_config_last_reload_successful") == 1, 10,
                           what="lifeguard_config_last_reload_successful back to 1")
        assert target.metrics().value("lifeguard_pool_size", **pool) == 4
        assert client.execute("select pg_backend_pid()").fetchone()[0] > 0
    finally:
        client.close()
    assert pid_before > 0
    assert "five" in target.process.output, "the reload error should be logged"


def test_sigterm_while_clients_wait_for_a_connection(pooler, postgres):
    """Clients queued for a server connection when SIGTERM arrives get an answer (a result or an error), not a
    hang, and the process still exits 0."""
    targets.require_lifeguard("drain behaviour")
    user = targets.role(postgres, "drain_waiters")
    target = pooler(mode="transaction", pool_size=1, max_overflow=0, pool_timeout="5s",
                    extra=["--drain-timeout", "2s"])
    holder = target.connect(user=user)
    holder.execute("BEGIN")
    holder.execute("select 1")
    outcomes: list = []

    def wait_for_connection():
        try:
            with target.connect(user=user) as c:
                outcomes.append(c.execute("select 'served'").fetchone())
        except psycopg.Error as e:
            outcomes.append(e)

    threads = [threading.Thread(target=wait_for_connection) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    target.signal(signal.SIGTERM)
    time.sleep(0.3)
    holder.execute("COMMIT")
    holder.close()
    for t in threads:
        t.join(15)
    assert len(outcomes) == 3, f"waiting clients hung: {outcomes}"
    assert exit_code(target, 10) == 0, target.describe()


# PgBouncer's signals (1.23 and later): SIGTERM waits for clients to leave, SIGINT for server connections to be
# released, SIGQUIT or a second signal exits at once.


def test_sigterm_waits_for_an_idle_client_to_leave(pooler, postgres):
    targets.require_lifeguard("PgBouncer 1.23's SIGTERM (Debian's 1.18 differs)")
    target = pooler(mode="transaction", pool_size=2, extra=["--drain-timeout", "20s"])
    conn = target.connect()
    try:
        target.signal(signal.SIGTERM)
        harness.wait_until(lambda: new_client_refused(target, "app"), 5, what="new clients refused")
        # The connected client keeps working, in transactions too, until it leaves.
        time.sleep(0.5)
        assert conn.execute("select 'still served'").fetchone() == ("still served",)
        with conn.transaction():
            assert conn.execute("select 2").fetchone() == (2,)
        assert target.alive(), "SIGTERM did not wait for the client"
        assert target.metrics().value("lifeguard_pool_size", database="appdb", user="app") == 2, \
            "/metrics stops answering during the shutdown"
        ready = target.process.get("/readyz")
        assert ready.status == 503 and "shutting down" in ready.body, (ready.status, ready.body)
        assert target.healthz() == 200
    finally:
        conn.close()
    started = time.monotonic()
    assert exit_code(target, 10) == 0, target.describe()
    assert time.monotonic() - started < 5


def test_sigint_closes_idle_clients_at_once(pooler):
    targets.require_lifeguard("PgBouncer 1.23's SIGINT")
    target = pooler(mode="transaction", pool_size=2, extra=["--drain-timeout", "20s"])
    conn = target.connect()
    try:
        target.signal(signal.SIGINT)
        assert exit_code(target, 10) == 0, target.describe()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    finally:
        conn.close()


@pytest.mark.parametrize("signals", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT),
                                     (signal.SIGQUIT,)], ids=["term-term", "term-int", "quit"])
def test_sigquit_or_a_second_signal_exits_at_once(pooler, signals):
    targets.require_lifeguard("PgBouncer 1.23's signals")
    target = pooler(mode="session", pool_size=2, extra=["--drain-timeout", "30s"])
    conn = target.connect()
    try:
        conn.execute("BEGIN")
        conn.execute("select 1")
        started = time.monotonic()
        for sig in signals:
            target.signal(sig)
            time.sleep(0.3)
        assert exit_code(target, 10) == 0, target.describe()
        assert time.monotonic() - started < 6, "did not exit at once"
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    finally:
        conn.close()


def test_sigusr1_pauses_and_sigusr2_resumes(pooler):
    targets.require_lifeguard("PgBouncer's SIGUSR1/SIGUSR2")
    target = pooler(mode="transaction", pool_size=2, pool_timeout="20s")
    pool = {"database": "appdb", "user": "app"}
    with target.connect() as warm:
        warm.execute("select 1")
    target.signal(signal.SIGUSR1)
    harness.wait_until(lambda: target.metrics().value("lifeguard_pool_paused", **pool) == 1, 10,
                       what="lifeguard_pool_paused 1 after SIGUSR1")
    result: list = []

    def query():
        with target.connect() as c:
            result.append(c.execute("select 'after resume'").fetchone())

    worker = threading.Thread(target=query)
    worker.start()
    time.sleep(1.0)
    assert result == [], "a query ran while paused"
    target.signal(signal.SIGUSR2)
    worker.join(10)
    assert result == [("after resume",)]
    assert target.metrics().value("lifeguard_pool_paused", **pool) == 0
