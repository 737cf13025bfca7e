"""Configuration from the outside: `check-config` on good and bad files, `run` refusing a bad configuration
before it opens a port, and the precedence flags > LIFEGUARD_* environment > file, DATABASE_URL last."""

from __future__ import annotations

import re
import time

import harness
from harness import RawToml, toml_config

POOL = {"database": "appdb", "user": "app"}

# Exactly three mistakes, one per key, each of a different kind (range, enum, duration).
THREE_MISTAKES = {"pool_size": -3, "pool_mode": "sometimes", "pool_timeout": "soon"}


def bad_file(postgres, **extra) -> str:
    return toml_config(upstream=postgres.dsn(), **THREE_MISTAKES, **extra)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_check_config_reports_each_mistake_on_its_own_line(lifeguard, postgres):
    path = lifeguard.write_config(bad_file(postgres))
    result = lifeguard.run("check-config", str(path))
    assert result.returncode == 2, result
    lines = error_lines(result.stderr)
    assert len(lines) == 3, f"expected one line per mistake, got:\n{result.stderr}"
    for key in THREE_MISTAKES:
        naming = [line for line in lines if key in line]
        assert len(naming) == 1, f"{key} should be named by exactly one line:\n{result.stderr}"


def test_check_config_names_the_line_of_a_toml_syntax_error(lifeguard):
    path = lifeguard.write_config("pool_size = 5\npool_mode = \"session\"\nthis is not toml\n")
    result = lifeguard.run("check-config", str(path))
    assert result.returncode == 2, result
    assert error_lines(result.stderr), "no message for a syntax error"
    assert "3" in result.stderr, f"the line number (3) is not given:\n{result.stderr}"


def test_check_config_rejects_a_wrong_type(lifeguard, postgres):
    path = lifeguard.write_config(toml_config(upstream=postgres.dsn(), max_overflow=RawToml('"ten"')))
    result = lifeguard.run("check-config", str(path))
    assert result.returncode == 2, result
    assert "max_overflow" in result.stderr


def test_check_config_missing_file_is_a_config_error(lifeguard, tmp_path):
    result = lifeguard.run("check-config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2, result
    assert "nope.toml" in result.stderr


def test_check_config_prints_the_effective_configuration(lifeguard, postgres):
    path = lifeguard.write_config(
        toml_config(upstream=postgres.dsn(), pool_mode="transaction", pool_size=7, max_overflow=3,
                    pool_timeout="250ms", pre_ping=False)
    )
    result = lifeguard.run("check-config", str(path))
    assert result.returncode == 0, result
    out = result.stdout

    def line_with(key, value):
        return any(key in line and re.search(rf"\b{re.escape(value)}\b", line) for line in out.splitlines())

    assert line_with("pool_size", "7"), out
    assert line_with("max_overflow", "3"), out
    assert line_with("pool_mode", "transaction"), out
    # Effective means defaults too, not only what the file says.
    for key in ["min_size", "pool_recycle", "idle_timeout", "leak_threshold", "max_client_conn", "metrics_listen"]:
        assert key in out, f"{key} (a default) missing from the effective configuration:\n{out}"
    assert str(postgres.port) in out, f"the upstream is not shown:\n{out}"


def test_run_with_a_bad_config_exits_2_before_opening_any_port(lifeguard, postgres, free_port):
    path = lifeguard.write_config(bad_file(postgres))
    listen, metrics = free_port(), free_port()
    lg = lifeguard(config=path, listen=listen, metrics=metrics, wait=False)
    opened = set()
    deadline = time.monotonic() + 20
    while lg.returncode is None and time.monotonic() < deadline:
        for port in (listen, metrics):
            if harness.port_accepts(port, timeout=0.05):
                opened.add(port)
        time.sleep(0.01)
    assert lg.wait_exit(1) == 2, lg.describe()
    assert not opened, f"ports {opened} were opened by a run with a bad configuration"
    assert harness.port_is_free(listen) and harness.port_is_free(metrics)
    # The same messages as check-config.
    checked = lifeguard.run("check-config", str(path))
    for line in error_lines(checked.stderr):
        assert line.strip() in lg.stderr, f"run did not report {line!r}:\n{lg.stderr}"


def test_flags_override_environment_override_file(lifeguard, postgres):
    path = lifeguard.write_config(toml_config(upstream=postgres.dsn(), pool_size=3, min_size=0))
    env = {"LIFEGUARD_POOL_SIZE": "4"}
    cases = [
        ({}, [], 3),
        (env, [], 4),
        (env, ["--pool-size", "6"], 6),
    ]
    for case_env, flags, expected in cases:
        lg = lifeguard(*flags, config=path, env=case_env)
        assert lg.metrics().value("lifeguard_pool_size", **POOL) == expected, (case_env, flags)
        assert lg.stop() == 0


def test_database_url_is_the_upstream_when_nothing_else_names_one(lifeguard, postgres):
    lg = lifeguard("--min-size", "0", env={"DATABASE_URL": postgres.dsn()})
    exp = lg.metrics()
    assert exp.find("lifeguard_pool_size", **POOL), "no pool for the DATABASE_URL upstream"
    assert lg.stop() == 0
    # A named upstream wins over DATABASE_URL.
    lg = lifeguard("--min-size", "0", upstream=postgres.dsn(), env={"DATABASE_URL": postgres.dsn(dbname="other")})
    exp = lg.metrics()
    assert exp.find("lifeguard_pool_size", **POOL)
    assert not exp.find("lifeguard_pool_size", database="other")


def test_key_value_connection_strings_work_like_uris(lifeguard, postgres):
    lg = lifeguard("--min-size", "0", upstream=postgres.kv_dsn())
    assert lg.metrics().find("lifeguard_pool_size", **POOL)
    lg.wait_status("/readyz", 200, timeout=10)
