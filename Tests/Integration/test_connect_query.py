"""`connect_query`, as PgBouncer's: run once on every new server connection before a client gets it, from a
pgbouncer.ini's [databases] line or Lifeguard's TOML; its failure is a failed connect; a reload that changes it
replaces the open connections."""

from __future__ import annotations

import signal

import psycopg
import pytest

import harness
import targets
from test_pgbouncer_ini import PASSWORD, connect, start, write_ini

TAG = "select set_config('lifeguard.tag', 'tagged', false)"


@pytest.fixture(autouse=True)
def _lifeguard_only():
    targets.require_lifeguard("its connect_query")


def tag(conn: psycopg.Connection) -> str | None:
    return conn.execute("select current_setting('lifeguard.tag', true)").fetchone()[0]


def toml(postgres, *top: str, appdb: str = "", pool_mode: str = "transaction") -> str:
    return "\n".join([f'pool_mode = "{pool_mode}"', "pool_size = 2", 'pool_timeout = "3s"', *top,
                      "[databases.appdb]", f'dsn = "host={postgres.host} port={postgres.port} dbname=appdb"',
                      appdb, ""])


def test_every_server_connection_of_an_ini_database_runs_it(lifeguard, postgres, tmp_path):
    databases = (f"appdb = host={postgres.host} port={postgres.port} dbname=appdb pool_size=2 "
                 f"connect_query='{TAG.replace(chr(39), chr(39) * 2)}'\n"
                 f"* = host={postgres.host} port={postgres.port}\n")
    ini = write_ini(tmp_path, postgres, "listen_addr = 127.0.0.1", "auth_type = md5", "pool_mode = transaction",
                    databases=databases)
    lg = start(lifeguard, ini)
    assert "connect_query" not in lg.stderr, lg.stderr
    # Two transactions at once: two server connections, each of which ran it.
    with connect(lg) as a, connect(lg) as b:
        a.execute("BEGIN")
        b.execute("BEGIN")
        pids = {a.execute("select pg_backend_pid()").fetchone()[0], b.execute("select pg_backend_pid()").fetchone()[0]}
        assert len(pids) == 2
        assert tag(a) == "tagged" and tag(b) == "tagged"
        a.execute("COMMIT")
        b.execute("COMMIT")
    # Only appdb's: the fallback database has none.
    with connect(lg, dbname="postgres") as other:
        assert tag(other) in (None, "")
    assert PASSWORD not in lg.output


def test_a_failing_connect_query_is_a_failed_connect(lifeguard, postgres):
    lg = lifeguard(config=toml(postgres, appdb='connect_query = "select no_such_function()"'))
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect(f"host={harness.LOOPBACK} port={lg.listen_port} dbname=appdb user=app connect_timeout=10")
    assert "connect_query failed" in str(raised.value) and "no_such_function" in str(raised.value), raised.value
    errors = lg.metrics().value("lifeguard_pool_connection_errors_total", database="appdb", user="app",
                                reason="server")
    assert errors >= 1
    assert "connect_query failed" in lg.stderr and "no_such_function" in lg.stderr


def test_the_top_level_value_applies_and_a_reload_that_changes_it_reconnects(lifeguard, postgres, tmp_path):
    config = tmp_path / "lifeguard.toml"
    config.write_text(toml(postgres, f'connect_query = "{TAG}"'))
    lg = lifeguard(config=config)

    def client():
        return psycopg.connect(f"host={harness.LOOPBACK} port={lg.listen_port} dbname=appdb user=app "
                               "connect_timeout=10", autocommit=True, prepare_threshold=None)
    with client() as conn:
        assert tag(conn) == "tagged"  # appdb inherits the top-level value
        config.write_text(toml(postgres, 'connect_query = "select set_config(\'lifeguard.tag\', \'v2\', false)"'))
        lg.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: tag(conn) == "v2", 10, what="a new server connection with the new query")
        # The per-database value wins, and "" turns it off.
        config.write_text(toml(postgres, f'connect_query = "{TAG}"', appdb='connect_query = ""'))
        lg.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: tag(conn) in (None, ""), 10, what="server connections without the query")


def test_session_mode_keeps_it_with_a_reset_query_that_keeps_settings(lifeguard, postgres):
    """Session mode: the first client sees its SET; DISCARD ALL at release undoes it for the next, as in PgBouncer,
    unless reset_query keeps session settings."""
    lg = lifeguard(config=toml(postgres, 'reset_query = "DEALLOCATE ALL"', appdb=f'connect_query = "{TAG}"',
                               pool_mode="session"))
    url = f"host={harness.LOOPBACK} port={lg.listen_port} dbname=appdb user=app connect_timeout=10"
    for _ in range(2):
        with psycopg.connect(url, autocommit=True) as conn:
            assert tag(conn) == "tagged"

