"""The `lifeguard` command itself: `version`, `run` as the default, where it listens, and a clean SIGTERM."""

from __future__ import annotations

import re

import harness

POOL = {"database": "appdb", "user": "app"}


def test_version_prints_the_version_that_metrics_report(lifeguard, postgres):
    result = lifeguard.run("version")
    assert result.returncode == 0, result
    assert re.search(r"\d+\.\d+\.\d+", result.stdout), result.stdout
    lg = lifeguard("--min-size", "0", upstream=postgres.dsn())
    version = lg.metrics().find("lifeguard_build_info")[0].labels["version"]
    assert version in result.stdout, f"build_info says {version!r}, version says {result.stdout!r}"


def test_run_is_the_default_command(lifeguard, postgres):
    lg = lifeguard("--min-size", "0", upstream=postgres.dsn(), subcommand=())
    assert lg.metrics().find("lifeguard_pool_size", **POOL)


def test_listens_on_loopback_only_where_told(lifeguard, postgres):
    lg = lifeguard("--min-size", "0", upstream=postgres.dsn())
    sockets = lg.listening_sockets()
    assert ("127.0.0.1", lg.metrics_port) in sockets
    allowed = {("127.0.0.1", lg.metrics_port), ("127.0.0.1", lg.listen_port)}
    assert sockets <= allowed, f"listening beyond what it was told: {sockets - allowed}"


def test_sigterm_stops_cleanly_and_frees_the_ports(lifeguard, postgres):
    lg = lifeguard("--min-size", "0", upstream=postgres.dsn())
    assert lg.stop(grace=15) == 0, lg.describe()
    assert not lg.killed
    assert not harness.port_accepts(lg.metrics_port)
    assert not harness.port_accepts(lg.listen_port)
