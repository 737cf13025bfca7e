"""`max_db_connections`, as PgBouncer's: the pools of one database (one per user) share one cap on server
connections. A client of a pool without room waits; room is made by evicting another pool's idle connection, and
the wait ends in 53300 naming max_db_connections when none comes."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

import harness
import targets

ADMIN = "admin"


@pytest.fixture
def capped(lifeguard, postgres):
    targets.require_lifeguard("its max_db_connections")
    config = "\n".join([
        'pool_mode = "transaction"', "pool_size = 2", 'pool_timeout = "3s"', f'admin_users = "{ADMIN}"',
        "[databases.appdb]", f'dsn = "host={postgres.host} port={postgres.port} dbname=appdb"',
        "max_db_connections = 2", "",
    ])
    return lifeguard(config=config)


def client(lg, user: str) -> psycopg.Connection:
    return psycopg.connect(f"host={harness.LOOPBACK} port={lg.listen_port} dbname=appdb user={user} "
                           "connect_timeout=10", autocommit=True, prepare_threshold=None)


def server_connections(postgres, *users: str) -> int:
    names = ", ".join(f"'{u}'" for u in users)
    return int(postgres.psql(f"select count(*) from pg_stat_activity where usename in ({names})",
                             user=postgres.superuser))


def test_the_pools_of_a_database_share_its_cap(capped, postgres):
    alice, bob = targets.role(postgres, "dbcap_alice"), targets.role(postgres, "dbcap_bob")
    a1, a2, b = client(capped, alice), client(capped, alice), client(capped, bob)
    try:
        for conn in (a1, a2):
            conn.execute("BEGIN")
            conn.execute("SELECT 1")  # both of the database's connections, held
        results: list = []
        errors: list[Exception] = []

        def bobs_query():
            try:
                results.append(b.execute("SELECT 'bob'").fetchone()[0])
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        thread = threading.Thread(target=bobs_query)
        thread.start()
        time.sleep(0.5)
        assert not results and not errors, "bob got a connection beyond max_db_connections"
        assert server_connections(postgres, alice, bob) == 2
        with psycopg.connect(f"host={harness.LOOPBACK} port={capped.listen_port} dbname=pgbouncer user={ADMIN}",
                             autocommit=True, cursor_factory=psycopg.ClientCursor) as admin:
            cur = admin.execute("SHOW DATABASES")
            columns = [d.name for d in cur.description]
            row = dict(zip(columns, next(r for r in cur.fetchall() if r[0] == "appdb")))
            assert (row["max_connections"], row["current_connections"]) == (2, 2)
        # Alice's transaction ends: her connection is idle, and evicted for bob's waiting client.
        a1.execute("COMMIT")
        thread.join(5)
        assert results == ["bob"] and not errors, errors
        assert server_connections(postgres, alice, bob) <= 2
        a2.execute("COMMIT")
        # Both users keep working within the cap.
        for _ in range(5):
            for conn in (a1, a2, b):
                assert conn.execute("SELECT 1").fetchone() == (1,)
            assert server_connections(postgres, alice, bob) <= 2
    finally:
        for conn in (a1, a2, b):
            conn.close()


def test_a_client_that_finds_no_room_gets_53300_naming_max_db_connections(capped, postgres):
    alice, bob = targets.role(postgres, "dbcap_alice"), targets.role(postgres, "dbcap_bob")
    a1, a2, b = client(capped, alice), client(capped, alice), client(capped, bob)
    try:
        for conn in (a1, a2):
            conn.execute("BEGIN")
            conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.TooManyConnections, match="max_db_connections"):
            b.execute("SELECT 1")
        # The client stays usable once there is room (transaction mode: an ERROR, not a FATAL).
        a1.execute("COMMIT")
        assert b.execute("SELECT 2").fetchone() == (2,)
    finally:
        for conn in (a1, a2, b):
            conn.close()
