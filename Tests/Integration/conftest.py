"""Fixtures of the black-box suite (see harness.py for the pieces).

- `postgres`: one throwaway PostgreSQL 15 for the session (127.0.0.1, trust auth, database `appdb` owned by role
  `app`); `.stop()`/`.start()` or `with postgres.outage():` for outage tests; always removed at the end.
- `lifeguard`: a factory that starts `$LIFEGUARD_BIN run` on free 127.0.0.1 ports and waits for /healthz;
  `.run(...)` runs one-shot commands. Every process is stopped with SIGINT at the end of the test (SIGKILL if it
  hangs, which fails the test, as does a crash).
- `free_port`: a function returning a free 127.0.0.1 port below 32768.
- `pooler`: a factory that starts the pooler under test for the proxy suites (targets.py): Lifeguard with the given
  pool mode and sizes; returns a `targets.Target` (port, dsn(), connect(), metrics(), the process).
- `monitor`: a direct superuser connection to the `postgres` server, to watch pg_stat_activity.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import harness
import targets


@pytest.fixture(scope="session")
def lifeguard_bin() -> Path:
    """The binary under test: $LIFEGUARD_BIN (scripts/test sets it), else the debug build."""
    path = Path(os.environ.get("LIFEGUARD_BIN") or harness.ROOT / ".build" / "debug" / "lifeguard")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"lifeguard binary not found at {path}: build it (`swift build`) or set LIFEGUARD_BIN")
    return path


@pytest.fixture(scope="session")
def postgres():
    server = harness.PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def free_port():
    return harness.free_port


@pytest.fixture
def lifeguard(lifeguard_bin, tmp_path):
    launcher = harness.LifeguardLauncher(lifeguard_bin, tmp_path)
    yield launcher
    problems = launcher.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def lifeguard_under_test(request):
    """Resolves the binary only when the pooler under test is Lifeguard (development runs against PgBouncer or
    PostgreSQL need no build)."""
    if targets.TARGET == "lifeguard":
        return request.getfixturevalue("lifeguard")
    return None


@pytest.fixture
def pooler(lifeguard_under_test, postgres, tmp_path):
    factory = targets.PoolerFactory(lifeguard_under_test, postgres, tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def monitor(postgres):
    m = targets.Monitor(postgres)
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def promtool_check():
    """Runs `promtool check metrics` on a text; fails (not skips) when promtool is missing."""
    def check(text: str):
        try:
            return harness.promtool_check_metrics(text)
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)

    return check
