"""Clients reach Lifeguard through a Unix socket as they reach PostgreSQL and PgBouncer: `unix_socket_dir` makes
Lifeguard listen on DIR/.s.PGSQL.<port> beside TCP, and libpq clients connect with host=DIR."""

from __future__ import annotations

import os
import stat
import subprocess

import psycopg
import pytest

import harness
import targets

pytestmark = pytest.mark.skipif(targets.TARGET != "lifeguard", reason="Lifeguard's unix_socket_dir")


@pytest.fixture
def socket_dir(tmp_path):
    directory = tmp_path / "sock"
    directory.mkdir()
    return directory


def test_psql_psycopg_and_pgbench_over_the_unix_socket(pooler, postgres, socket_dir):
    target = pooler(mode="transaction", pool_size=3,
                    extra=["--unix-socket-dir", str(socket_dir), "--unix-socket-mode", "0770"])
    path = socket_dir / f".s.PGSQL.{target.port}"
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o770

    r = subprocess.run([str(harness.PG_BIN / "psql"), "-X", "-A", "-t", "-h", str(socket_dir), "-p", str(target.port),
                        "-U", "app", "-d", "appdb", "-c", "select 'over the socket'"],
                       env=harness.clean_env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "over the socket", r.stderr

    with psycopg.connect(host=str(socket_dir), port=target.port, user="app", dbname="appdb", autocommit=True) as conn:
        assert conn.execute("select 1 + 1").fetchone() == (2,)
        # The client is counted like any other.
        assert target.metrics().value("lifeguard_client_connections", state="idle") >= 1

    user = targets.role(postgres, "unix_bench")  # pgbench's tables in a schema of its own
    subprocess.run([str(harness.PG_BIN / "pgbench"), "-i", "-q", "-s", "1", "-h", postgres.host, "-p",
                    str(postgres.port), "-U", user, "appdb"], env=harness.clean_env(), check=True,
                   capture_output=True, timeout=120)
    r = subprocess.run([str(harness.PG_BIN / "pgbench"), "-n", "-S", "-c", "6", "-j", "2", "-t", "50", "-h",
                        str(socket_dir), "-p", str(target.port), "-U", user, "appdb"],
                       env=harness.clean_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "processed: 300/300" in r.stdout, r.stdout + r.stderr

    # TCP still serves beside it.
    with target.connect() as conn:
        assert conn.execute("select 3").fetchone() == (3,)

    # The socket file goes with the process.
    target.process.stop()
    assert not path.exists()


def test_a_missing_directory_is_a_configuration_error(lifeguard_under_test, tmp_path):
    result = lifeguard_under_test.run("check-config", "--upstream", "postgresql://127.0.0.1:5432",
                                      "--unix-socket-dir", str(tmp_path / "nope"))
    assert result.returncode == 2 and "--unix-socket-dir: no such directory" in result.stderr, result.stderr
