"""Scale and cancellation through Lifeguard: 500 concurrent clients over pool_size 10 and
max_overflow 5 never make more than 15 server connections, all their queries complete, and every checkout is a
wait sample; a client cancelling its own `pg_sleep(10)` gets 57014 within a second."""

from __future__ import annotations

import asyncio
import random
import resource
import threading
import time

import asyncpg
import psycopg
import pytest

import harness
import targets
import wire

CLIENTS = 500
QUERIES_PER_CLIENT = 3


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        assert target >= needed, f"the open-file limit ({hard}) is too low for {needed} sockets"


async def one_client(port: int, user: str, n: int) -> list:
    conn = await asyncpg.connect(host=harness.LOOPBACK, port=port, user=user, database="appdb",
                                 statement_cache_size=0, timeout=60)
    try:
        results = []
        for q in range(QUERIES_PER_CLIENT):
            results.append(await conn.fetchval("select $1::int * 1000 + $2::int from pg_sleep(0.005)", n, q,
                                               timeout=60))
        return results
    finally:
        await conn.close(timeout=30)


async def many_clients(port: int, user: str) -> list:
    return await asyncio.gather(*(one_client(port, user, n) for n in range(CLIENTS)), return_exceptions=True)


def test_500_clients_over_15_server_connections(pooler, postgres):
    raise_fd_limit(4 * CLIENTS)
    user = targets.role(postgres, "scale")
    target = pooler(mode="transaction", pool_size=10, max_overflow=5, pool_timeout="60s", max_client_conn=1000)
    started = time.monotonic()
    with targets.Sampler(postgres, user, interval=0.01) as sampler:
        results = asyncio.run(many_clients(target.port, user))
    took = time.monotonic() - started

    failures = [(n, r) for n, r in enumerate(results) if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {CLIENTS} clients failed, e.g. {failures[:5]}"
    for n, r in enumerate(results):
        assert r == [n * 1000 + q for q in range(QUERIES_PER_CLIENT)], f"client {n} got {r}"
    assert len(sampler.counts) > 10, "the sampler barely ran"
    if targets.TARGET == "postgres":
        return
    assert 0 < sampler.peak <= 15, f"PostgreSQL saw {sampler.peak} server connections from the pooler (max 15)"
    if targets.TARGET != "lifeguard":
        return
    pool = {"database": "appdb", "user": user}

    def settled():
        m = target.metrics()
        return m if m.value("lifeguard_pool_checked_out", **pool) == 0 else None

    metrics = harness.wait_until(settled, 10, what="all connections back in the pool")
    checkouts = metrics.value("lifeguard_pool_checkouts_total", **pool)
    waits = metrics.value("lifeguard_pool_wait_seconds_count", **pool)
    queries = CLIENTS * QUERIES_PER_CLIENT
    assert checkouts >= queries, f"{checkouts} checkouts for {queries} queries"
    assert waits == checkouts, f"wait samples ({waits}) differ from checkouts ({checkouts})"
    assert metrics.value("lifeguard_pool_timeouts_total", **pool) == 0
    assert metrics.value("lifeguard_pool_wait_seconds_bucket", le="+Inf", **pool) == waits
    print(f"{CLIENTS} clients in {took:.1f}s, peak {sampler.peak} server connections, {checkouts:.0f} checkouts")


# ---------------------------------------------------------------------------------------------------------------
# Cancel


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_psycopg_cancels_its_own_query(mode, pooler, postgres, monitor):
    user = targets.role(postgres, f"cancel_{mode}")
    target = pooler(mode=mode, pool_size=2)
    with target.connect(user=user) as conn, target.connect(user=user) as bystander:
        bystander.execute("select 1")
        cancelled_at: list[float] = []

        def cancel():
            monitor.wait_for_query(user, "select pg_sleep(10)%")
            cancelled_at.append(time.monotonic())
            conn.cancel()

        thread = threading.Thread(target=cancel)
        thread.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            conn.execute("select pg_sleep(10)")
        ended = time.monotonic()
        thread.join(10)
        assert info.value.sqlstate == "57014"
        assert cancelled_at and ended - cancelled_at[0] < 1.0, \
            f"57014 came {ended - cancelled_at[0]:.2f}s after the cancel request"
        assert ended - started < 5
        # The client and the other client carry on.
        assert conn.execute("select 'after cancel'").fetchone() == ("after cancel",)
        assert bystander.execute("select 2").fetchone() == (2,)
        assert not [b for b in monitor.backends(user) if "pg_sleep(10)" in (b[2] or "") and b[1] == "active"]


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_asyncpg_timeout_cancels_the_query(mode, pooler, postgres, monitor):
    user = targets.role(postgres, f"acancel_{mode}")
    target = pooler(mode=mode, pool_size=2)

    async def run():
        conn = await asyncpg.connect(host=harness.LOOPBACK, port=target.port, user=user, database="appdb",
                                     statement_cache_size=0 if mode != "session" else 100, timeout=10)
        try:
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval("select pg_sleep(10)", timeout=0.5)
            # asyncpg sent a CancelRequest and waits for the server to give the connection back.
            value = await conn.fetchval("select 'after timeout'")
            return value, time.monotonic() - started
        finally:
            await conn.close()

    value, took = asyncio.run(run())
    assert value == "after timeout"
    assert took < 1.5, f"the cancelled query held the connection for {took:.2f}s"
    assert not [b for b in monitor.backends(user) if "pg_sleep(10)" in (b[2] or "") and b[1] == "active"]


def test_a_cancel_key_that_maps_to_nothing_is_ignored(pooler, postgres):
    user = targets.role(postgres, "cancel_bogus")
    target = pooler(mode="transaction", pool_size=2)
    with target.connect(user=user) as conn:
        result: list = []
        thread = threading.Thread(target=lambda: result.append(conn.execute("select pg_sleep(1.5), 'done'")
                                                               .fetchone()))
        thread.start()
        time.sleep(0.3)
        rng = random.Random(3)
        for _ in range(3):
            wire.cancel_request(target.port, rng.randrange(1, 2**31), rng.randrange(0, 2**32))
        thread.join(10)
        assert result == [("", "done")], "a bogus cancel key cancelled somebody's query"
