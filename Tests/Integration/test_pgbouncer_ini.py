"""Lifeguard started with a PgBouncer pgbouncer.ini (and userlist) instead of its TOML.

The first half re-runs scenarios of the proxy suites unchanged, with this module's `pooler` writing the pgbouncer.ini
that targets.py would give PgBouncer itself (LIFEGUARD_TEST_TARGET=pgbouncer): the clients must see the same. The
second half checks what only the ini path has: PgBouncer's defaults and its settings in /metrics, check-config and
convert-config output, warnings and errors, and SIGHUP reading the ini again.
"""

from __future__ import annotations

import re
import signal
import tomllib

import psycopg
import pytest

import harness
import targets

# Scenarios of the proxy suites, collected again here with this module's `pooler` (an ini-configured Lifeguard).
from test_proxy_clients import (  # noqa: F401
    test_psql_gives_the_same_output_as_directly,
    test_psycopg_gives_the_same_results_as_directly,
    test_statement_mode_refuses_an_explicit_transaction_clearly,
)
from test_proxy_errors import (  # noqa: F401
    test_bad_password_is_28P01,
    test_pool_timeout_is_53300_naming_the_pool_and_the_client_stays_usable,
    test_unknown_database_is_3D000,
)
from test_proxy_isolation import test_session_state_is_not_visible_to_the_next_client  # noqa: F401
from test_proxy_metrics import test_metrics_move_with_traffic_and_failures  # noqa: F401


@pytest.fixture
def pooler(lifeguard_under_test, postgres, tmp_path):
    targets.require_lifeguard("reads a pgbouncer.ini")
    factory = targets.PoolerFactory(lifeguard_under_test, postgres, tmp_path)
    factory.config_format = "ini"
    try:
        yield factory
    finally:
        factory.close()
    # The scenarios above must really have run on a pgbouncer.ini.
    for process in lifeguard_under_test.processes:
        assert process.argv[process.argv.index("--config") + 1].endswith("pgbouncer.ini"), process.argv


# ---------------------------------------------------------------------------------------------------------------
# What only the ini path has

POOL = {"database": "appdb", "user": "app"}
PASSWORD = "ini-Pa55word"


def write_ini(tmp_path, postgres, *pgbouncer_lines: str, databases: str | None = None, users=None):
    """A pgbouncer.ini (and userlist.txt) for the test PostgreSQL: a named entry `appdb`, `*` as the fallback."""
    userlist = tmp_path / "userlist.txt"
    userlist.write_text("".join(f'"{u}" "{p}"\n' for u, p in (users or {"app": PASSWORD}).items()))
    if databases is None:
        databases = (f"appdb = host={postgres.host} port={postgres.port} dbname=appdb pool_size=3\n"
                     f"* = host={postgres.host} port={postgres.port}\n")
    text = (
        "; written by test_pgbouncer_ini\n"
        "[databases]\n" + databases + "\n"
        "[pgbouncer]\n"
        f"auth_file = {userlist}\n" + "".join(line + "\n" for line in pgbouncer_lines)
    )
    path = tmp_path / "pgbouncer.ini"
    path.write_text(text)
    return path


def start(lifeguard, ini, *args: str):
    process = lifeguard(*args, config=ini)
    harness.wait_until(lambda: harness.port_accepts(process.listen_port), 10, interval=0.05,
                       what="lifeguard accepting PostgreSQL clients")
    return process


def connect(process, dbname: str = "appdb", user: str = "app", password: str = PASSWORD) -> psycopg.Connection:
    return psycopg.connect(f"host={harness.LOOPBACK} port={process.listen_port} dbname={dbname} user={user} "
                           f"password={password} connect_timeout=10", autocommit=True, prepare_threshold=None)


def values(rendered: str) -> list[str]:
    """The `key = value` lines and table headers of a rendered configuration, without the comments."""
    out = []
    for line in rendered.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        out.append(re.sub(r"  # .*$", "", line))
    return out


@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256"])
def test_transactions_through_an_ini_with_pgbouncer_defaults(lifeguard, postgres, tmp_path, auth_type):
    ini = write_ini(tmp_path, postgres, "listen_addr = 127.0.0.1", f"auth_type = {auth_type}",
                    "pool_mode = transaction", "default_pool_size = 4", "logfile = /nonexistent/pgbouncer.log")
    lg = start(lifeguard, ini)
    with connect(lg) as a, connect(lg) as b:
        a.execute("BEGIN")
        a.execute("select 1")
        assert b.execute("select current_user, current_database()").fetchone() == ("app", "appdb")
        a.execute("COMMIT")
        with a.transaction():
            assert a.execute("select 41 + 1").fetchone() == (42,)
    # Through the fallback database too: its own pool, with [pgbouncer]'s sizes.
    with connect(lg, dbname="postgres") as other:
        assert other.execute("select current_database()").fetchone() == ("postgres",)
    with pytest.raises(psycopg.OperationalError) as info:
        connect(lg, password="wrong")
    assert "password authentication failed" in str(info.value)

    metrics = lg.metrics()
    assert metrics.value("lifeguard_pool_size", **POOL) == 3  # the entry's pool_size
    assert metrics.value("lifeguard_pool_max_overflow", **POOL) == 0  # PgBouncer's reserve_pool_size default
    assert metrics.value("lifeguard_pool_size", database="postgres", user="app") == 4
    assert metrics.value("lifeguard_client_max_connections") == 100
    assert "logfile: not supported by Lifeguard" in lg.stderr
    assert PASSWORD not in lg.output


def test_check_config_shows_the_mapping_and_convert_config_round_trips(lifeguard, postgres, tmp_path):
    ini = write_ini(
        tmp_path, postgres, "listen_addr = 127.0.0.1", "listen_port = 6499", "auth_type = md5",
        "pool_mode = transaction", "reserve_pool_size = 2", "server_lifetime = 1800", "stats_period = 30",
        "server_tls_sslmode = disable",
        databases=(f"appdb = host={postgres.host} port={postgres.port} dbname=appdb user=app "
                   f"password=hunter2secret pool_size=3\n"
                   f"* = host={postgres.host} port={postgres.port} datestyle='ISO, DMY'\n"),
    )
    check = lifeguard.run("check-config", str(ini))
    assert check.returncode == 0, check.stderr
    assert "hunter2secret" not in check.stdout + check.stderr
    assert "password=********" in check.stdout
    assert f'listen = "127.0.0.1:6499"  # {ini}:' in check.stdout
    assert "pool_timeout = \"2m\"  # PgBouncer default" in check.stdout
    assert "pool_recycle = \"30m\"  #" in check.stdout
    warnings = [line for line in check.stderr.splitlines() if line.startswith("warning: ")]
    assert any("stats_period" in w for w in warnings), check.stderr
    assert any("reserve_pool_timeout" in w for w in warnings), check.stderr

    convert = lifeguard.run("convert-config", str(ini))
    assert convert.returncode == 0, convert.stderr
    assert "hunter2secret" not in convert.stdout + convert.stderr
    converted = tomllib.loads(convert.stdout)
    assert converted["pool_size"] == 20 and converted["max_overflow"] == 2
    assert "stats_period" in convert.stdout  # named among what was not carried over
    assert "; PgBouncer reserve_pool_size: opened at once" in convert.stdout

    # The TOML gives the same effective configuration once the masked password is written back.
    toml = tmp_path / "converted.toml"
    toml.write_text(convert.stdout.replace("password=********", "password=hunter2secret"))
    again = lifeguard.run("check-config", str(toml))
    assert again.returncode == 0, again.stderr
    assert values(again.stdout) == values(check.stdout)
    assert not again.stderr


def test_behaviour_changing_settings_stop_the_start(lifeguard, postgres, tmp_path):
    ini = write_ini(tmp_path, postgres, "auth_type = hba", "so_reuseport = 1", "listen_addr = 127.0.0.1")
    run = lifeguard.run("run", "--config", str(ini), "--listen", f"127.0.0.1:{harness.free_port()}",
                        "--metrics-listen", f"127.0.0.1:{harness.free_port()}")
    assert run.returncode == 2, run
    lines = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert len(lines) == 2, run.stderr
    assert any("auth_type: hba is not supported" in line for line in lines)
    assert any("so_reuseport" in line for line in lines)
    check = lifeguard.run("check-config", str(ini))
    assert check.returncode == 2 and check.stderr == run.stderr


def test_sighup_reads_the_ini_again(lifeguard, postgres, tmp_path):
    ini = write_ini(tmp_path, postgres, "listen_addr = 127.0.0.1", "auth_type = md5", "pool_mode = transaction",
                    databases=f"* = host={postgres.host} port={postgres.port}\n")
    lg = start(lifeguard, ini)
    with connect(lg) as c:
        assert c.execute("select 1").fetchone() == (1,)
    assert lg.metrics().value("lifeguard_pool_size", **POOL) == 20

    ini.write_text(ini.read_text().replace("pool_mode = transaction", "pool_mode = transaction\n"
                                           "default_pool_size = 7\nreserve_pool_size = 1"))
    lg.proc.send_signal(signal.SIGHUP)
    harness.wait_until(lambda: lg.metrics().value("lifeguard_pool_size", **POOL) == 7, 10, what="pool_size 7")
    assert lg.metrics().value("lifeguard_pool_max_overflow", **POOL) == 1
    assert lg.metrics().value("lifeguard_config_last_reload_successful") == 1

    # A reload the ini refuses keeps the configuration in force.
    ini.write_text(ini.read_text() + "auth_type = pam\n")
    lg.proc.send_signal(signal.SIGHUP)
    harness.wait_until(lambda: lg.metrics().value("lifeguard_config_last_reload_successful") == 0, 10,
                       what="the failed reload reported")
    assert lg.metrics().value("lifeguard_pool_size", **POOL) == 7
    with connect(lg) as c:
        assert c.execute("select 2").fetchone() == (2,)
