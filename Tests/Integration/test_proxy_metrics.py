"""Every metric of the catalogue moves with real traffic through Lifeguard: checked-out up to
the pool size under load, clients waiting when they outnumber it, the wait and use histograms, transactions and
queries, client connections by state, and after the failure cases the timeouts, connection errors, closes and
rejections by reason."""

from __future__ import annotations

import struct
import threading
import time

import psycopg
import pytest

import harness
import targets
import wire

PASSWORD = "metrics-pw"


class MetricsSampler(threading.Thread):
    """Scrapes /metrics every few milliseconds and keeps the peak of each interesting series."""

    def __init__(self, target, pool: dict[str, str]):
        super().__init__(daemon=True)
        self.target, self.pool = target, pool
        self.stopping = threading.Event()
        self.peaks: dict[str, float] = {}
        self.scrapes = 0

    def _peak(self, key: str, value: float) -> None:
        self.peaks[key] = max(self.peaks.get(key, 0), value)

    def run(self):
        while not self.stopping.is_set():
            m = self.target.metrics()
            self.scrapes += 1
            self._peak("checked_out", m.value("lifeguard_pool_checked_out", **self.pool))
            self._peak("waiting", m.value("lifeguard_pool_waiting_clients", **self.pool))
            self._peak("used", m.value("lifeguard_pool_connections", state="used", **self.pool))
            for state in ("active", "waiting", "idle"):
                self._peak(f"clients_{state}", m.value("lifeguard_client_connections", state=state))
            time.sleep(0.02)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.join(10)


def test_metrics_move_with_traffic_and_failures(pooler, postgres, monitor, free_port):
    targets.require_lifeguard("its metrics")
    user = targets.role(postgres, "metrics_user")
    pool = {"database": "appdb", "user": user}
    closed = free_port()
    target = pooler(mode="transaction", pool_size=2, max_overflow=0, pool_timeout="1s", max_client_conn=12,
                    auth_type="md5", auth_users={user: PASSWORD, "app": PASSWORD},
                    upstream=pooler.passthrough_upstream(),
                    databases={"down": f"postgresql://app@127.0.0.1:{closed}/appdb"})

    def connect():
        return target.connect(user=user, password=PASSWORD)

    # -- load: 8 clients over a pool of 2
    conns = [connect() for _ in range(8)]
    barrier = threading.Barrier(len(conns))
    failures: list[BaseException] = []

    def work(conn):
        try:
            barrier.wait(10)
            for _ in range(4):
                conn.execute("select pg_sleep(0.1)")
        except BaseException as e:  # noqa: BLE001
            failures.append(e)

    with MetricsSampler(target, pool) as sampler:
        threads = [threading.Thread(target=work, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        time.sleep(0.1)
    assert not failures, failures
    assert sampler.scrapes >= 10
    peaks = sampler.peaks
    assert peaks["checked_out"] == 2, f"checked-out peak {peaks['checked_out']}, pool_size 2"
    assert peaks["used"] == 2
    assert peaks["waiting"] > 0, "no client was ever seen waiting with 8 clients over 2 connections"
    assert peaks["clients_waiting"] > 0 and peaks["clients_active"] > 0, peaks

    m = target.metrics()
    checkouts = m.value("lifeguard_pool_checkouts_total", **pool)
    assert checkouts >= 32
    assert m.value("lifeguard_pool_wait_seconds_count", **pool) == checkouts
    assert m.value("lifeguard_pool_wait_seconds_sum", **pool) > 0.1, "8 clients over 2 connections waited"
    assert m.value("lifeguard_pool_use_seconds_count", **pool) >= 32
    assert m.value("lifeguard_pool_use_seconds_sum", **pool) >= 32 * 0.1 * 0.9
    assert m.value("lifeguard_pool_connect_seconds_count", **pool) >= 2
    assert m.value("lifeguard_transactions_total", **pool) >= 32
    assert m.value("lifeguard_queries_total", **pool) >= 32
    assert m.value("lifeguard_pool_checked_out", **pool) == 0
    assert m.value("lifeguard_pool_connections", state="idle", **pool) == 2

    # -- client states: the 8 connected clients are idle now (transaction mode holds no server connection)
    harness.wait_until(lambda: target.metrics().value("lifeguard_client_connections", state="idle") == 8, 5,
                       what="8 idle clients")
    conns[0].execute("BEGIN")
    conns[0].execute("select 1")
    m = target.metrics()
    assert m.value("lifeguard_client_connections", state="active") == 1
    assert m.value("lifeguard_client_connections", state="idle") == 7

    # -- a pool timeout
    conns[1].execute("BEGIN")
    conns[1].execute("select 1")
    with pytest.raises(psycopg.Error) as info:
        conns[2].execute("select 1")
    assert info.value.sqlstate == "53300"
    assert target.metrics().value("lifeguard_pool_timeouts_total", **pool) == 1

    # -- a server connection that breaks
    pid = conns[1].execute("select pg_backend_pid()").fetchone()[0]
    monitor.value("select pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.Error):
        conns[1].execute("select 1")
    conns[1].close()
    conns[0].execute("COMMIT")

    def broken_counted():
        m = target.metrics()
        return (m.value("lifeguard_pool_connection_errors_total", reason="broken", **pool) >= 1
                and m.value("lifeguard_pool_connections_closed_total", reason="error", **pool) >= 1)

    harness.wait_until(broken_counted, 5, what="the broken connection counted (errors broken, closed error)")

    # -- rejections: max_client_conn (8 open + 4 = 12), bad password, protocol
    def clients():
        m = target.metrics()
        return sum(m.value("lifeguard_client_connections", state=s) for s in ("active", "waiting", "idle"))

    harness.wait_until(lambda: clients() == 7, 5, what="7 clients connected")
    extra = [connect() for _ in range(5)]
    with wire.RawClient(target.port) as client:
        errs = wire.errors(client.startup(user=user))
        assert [e.get("C") for e in errs] == ["53300"], errs
    for c in extra:
        c.close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(target.dsn(user=user, password="Wr0ng-pa55word"))
    with wire.RawClient(target.port) as client:
        client.send(struct.pack("!i", 3))
        client.wait_closed(5)

    # -- an upstream that refuses connections
    with pytest.raises(psycopg.Error):
        with target.connect(user="app", dbname="down", password=PASSWORD) as c:
            c.execute("select 1")

    def rejections_counted():
        m = target.metrics()
        got = {r: m.value("lifeguard_client_rejected_total", reason=r) for r in ("max_client_conn", "auth",
                                                                                   "protocol")}
        connect_errors = sum(s.value for s in m.find("lifeguard_pool_connection_errors_total", reason="connect"))
        return got if all(v >= 1 for v in got.values()) and connect_errors >= 1 else None

    try:
        harness.wait_until(rejections_counted, 5, what="rejections and connect errors counted")
    except TimeoutError:
        m = target.metrics()
        raise AssertionError(
            "rejections/connect errors not counted: "
            + str([(s.name, s.labels, s.value) for s in m.samples
                   if s.name in ("lifeguard_client_rejected_total", "lifeguard_pool_connection_errors_total")])
        ) from None

    for c in conns:
        c.close()
    harness.wait_until(
        lambda: all(target.metrics().value("lifeguard_client_connections", state=s) == 0
                    for s in ("active", "waiting", "idle")), 5, what="no client connections left")
