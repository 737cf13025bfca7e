"""A password given in the upstream DSN, in any form and from any source, never appears in what lifeguard prints
or serves: check-config's output, run's logs, /metrics, /readyz."""

from __future__ import annotations

import pytest

from harness import toml_config

PASSWORD = "Pw7xq2Secret9zk"  # unusual enough that any occurrence is a leak; needs no URI escaping


def dsns(postgres):
    return {
        "uri": postgres.dsn(password=PASSWORD),
        "keyvalue": postgres.kv_dsn(password=PASSWORD),
    }


def assert_no_password(*texts: str):
    for text in texts:
        assert PASSWORD not in text, f"password leaked:\n{text}"


@pytest.mark.parametrize("form", ["uri", "keyvalue"])
@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_run_never_shows_the_password(lifeguard, postgres, form, source):
    dsn = dsns(postgres)[form]
    kwargs = {
        "flag": {"upstream": dsn},
        "env": {"env": {"DATABASE_URL": dsn}},
        "file": {"config": toml_config(upstream=dsn)},
    }[source]
    lg = lifeguard("--min-size", "0", **kwargs)
    bodies = [lg.get(path).body for path in ["/metrics", "/readyz", "/healthz"]]
    assert "lifeguard_pool_size" in bodies[0]
    assert lg.stop() == 0
    assert_no_password(lg.stdout, lg.stderr, *bodies)


@pytest.mark.parametrize("form", ["uri", "keyvalue"])
@pytest.mark.parametrize("source", ["env", "file"])
def test_check_config_masks_the_password(lifeguard, postgres, form, source):
    dsn = dsns(postgres)[form]
    if source == "file":
        path = lifeguard.write_config(toml_config(upstream=dsn))
        env = {}
    else:
        path = lifeguard.write_config(toml_config(pool_size=5))
        env = {"DATABASE_URL": dsn}
    result = lifeguard.run("check-config", str(path), env=env)
    assert result.returncode == 0, result
    assert str(postgres.port) in result.stdout, f"the upstream is not shown:\n{result.stdout}"
    assert_no_password(result.stdout, result.stderr)


def test_errors_about_a_dsn_do_not_show_its_password(lifeguard, postgres, free_port):
    # Both are refused by libpq's PQconninfoParse.
    broken = [
        f"host=127.0.0.1 port={postgres.port} password={PASSWORD} no_such_option=1",
        f"postgresql://app:{PASSWORD}@127.0.0.1:{postgres.port}/appdb?no_such_option=1",
    ]
    for dsn in broken:
        path = lifeguard.write_config(toml_config(upstream=dsn))
        result = lifeguard.run("check-config", str(path))
        assert result.returncode == 2, (dsn, result)
        assert result.stderr.strip(), f"no error for {dsn!r}"
        assert_no_password(result.stdout, result.stderr)
        run = lifeguard.run("run", "--config", str(path), "--listen", f"127.0.0.1:{free_port()}",
                            "--metrics-listen", f"127.0.0.1:{free_port()}", timeout=30)
        assert run.returncode == 2, (dsn, run)
        assert_no_password(run.stdout, run.stderr)


def test_a_bad_file_with_a_password_does_not_show_it(lifeguard, postgres):
    path = lifeguard.write_config(toml_config(upstream=postgres.dsn(password=PASSWORD), pool_size=-1))
    result = lifeguard.run("check-config", str(path))
    assert result.returncode == 2, result
    assert_no_password(result.stdout, result.stderr)
