"""The pooler under test for the proxy suites: Lifeguard, started with the flags and file of each test.

`PoolerFactory(...)(mode=..., pool_size=..., ...)` starts one and returns a `Target`: where clients connect, its
metrics, its process. Its server connections are found in `pg_stat_activity` by role: a test that counts them
connects through its own role (`role(postgres, "name")`) and watches from a direct superuser connection (`Monitor`).

For developing the suite without the proxy, LIFEGUARD_TEST_TARGET=pgbouncer runs PgBouncer (Debian's 1.18) with
the equivalent settings, and LIFEGUARD_TEST_TARGET=postgres points the clients at PostgreSQL itself. Only the
default, `lifeguard`, is what scripts/test runs; a test that needs Lifeguard itself (its metrics, its SQLSTATEs)
skips under the others.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

import psycopg
import pytest

import harness

TARGET = os.environ.get("LIFEGUARD_TEST_TARGET", "lifeguard")
if TARGET not in ("lifeguard", "pgbouncer", "postgres"):
    raise RuntimeError(f"LIFEGUARD_TEST_TARGET={TARGET!r}: expected lifeguard, pgbouncer or postgres")

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"

# Roles the suites create (pgbouncer's `trust` still wants every user in its auth_file).
_ROLES: set[str] = {"app", "postgres"}


def require_lifeguard(why: str) -> None:
    """Skips (only while developing against another target) a test that checks Lifeguard itself."""
    if TARGET != "lifeguard":
        pytest.skip(f"needs Lifeguard ({why}); LIFEGUARD_TEST_TARGET={TARGET}")


def require_pooler(why: str = "pools connections") -> None:
    if TARGET == "postgres":
        pytest.skip(f"needs a pooler ({why}); LIFEGUARD_TEST_TARGET=postgres")


def role(postgres: harness.PostgresServer, name: str) -> str:
    """A login role (no password; the server trusts) with a schema of its own in appdb (first on its default
    search_path, so its tables do not collide with other tests'), that may use the public schema. Pools are
    keyed by (database, user), so a test with its own role sees its own pool's server connections in
    pg_stat_activity.usename and nobody else's."""
    if name not in _ROLES:
        postgres.psql(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN "
            f"CREATE ROLE {name} LOGIN; END IF; END $$; GRANT ALL ON SCHEMA public TO {name}; "
            f"CREATE SCHEMA IF NOT EXISTS {name} AUTHORIZATION {name}",
            user=postgres.superuser,
        )
        _ROLES.add(name)
    return name


class Monitor:
    """A direct superuser connection to PostgreSQL, for watching what the pooler does to the server."""

    def __init__(self, postgres: harness.PostgresServer):
        # In appdb: advisory locks are per database.
        self.conn = psycopg.connect(postgres.kv_dsn(user=postgres.superuser), autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def rows(self, sql: str, params: Sequence | None = None) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def value(self, sql: str, params: Sequence | None = None):
        return self.conn.execute(sql, params).fetchone()[0]

    def backends(self, user: str) -> list[tuple]:
        """(pid, state, query) of every client backend of this role."""
        return self.rows(
            "SELECT pid, state, query FROM pg_stat_activity WHERE usename = %s AND backend_type = 'client backend'"
            " AND pid <> pg_backend_pid() ORDER BY pid",
            (user,),
        )

    def count(self, user: str) -> int:
        return self.value(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND backend_type = 'client backend'",
            (user,),
        )

    def idle_in_transaction(self, user: str) -> list[tuple]:
        return [b for b in self.backends(user) if b[1] and b[1].startswith("idle in transaction")]

    def wait_for_query(self, user: str, like: str, timeout: float = 10) -> int:
        """The pid of the backend of this role whose active query matches the LIKE pattern."""

        def find():
            rows = self.rows(
                "SELECT pid FROM pg_stat_activity WHERE usename = %s AND state = 'active' AND query LIKE %s",
                (user, like),
            )
            return rows[0][0] if rows else None

        return harness.wait_until(find, timeout, interval=0.02, what=f"a backend of {user} running {like!r}")

    def terminate_all(self, user: str) -> None:
        self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
            (user,),
        )


class Sampler(threading.Thread):
    """Counts a role's backends in pg_stat_activity every few milliseconds, from a direct connection."""

    def __init__(self, postgres, user: str, interval: float = 0.02):
        super().__init__(daemon=True)
        self.monitor = Monitor(postgres)
        self.user = user
        self.interval = interval
        self.counts: list[int] = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            self.counts.append(self.monitor.count(self.user))
            time.sleep(self.interval)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.join(10)
        self.monitor.close()

    @property
    def peak(self) -> int:
        return max(self.counts, default=0)


class Target:
    """Something PostgreSQL clients connect to on 127.0.0.1:port."""

    host = harness.LOOPBACK

    def __init__(self, kind: str, port: int, process=None, metrics_port: int | None = None,
                 config_path: Path | None = None, pid_file: Path | None = None, log: Path | None = None):
        self.kind = kind
        self.port = port
        self.process = process  # harness.LifeguardProcess for lifeguard, a Popen for pgbouncer
        self.metrics_port = metrics_port
        self.config_path = config_path
        self._pid_file = pid_file
        self._log = log

    # -- connecting

    def dsn(self, user: str = "app", dbname: str = "appdb", password: str | None = None, **params: str) -> str:
        dsn = f"host={self.host} port={self.port} user={user} dbname={dbname} connect_timeout=10"
        if password is not None:
            dsn += f" password={password}"
        return dsn + "".join(f" {k}={v}" for k, v in params.items())

    def uri(self, user: str = "app", dbname: str = "appdb") -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{dbname}"

    def connect(self, user: str = "app", dbname: str = "appdb", password: str | None = None,
                **kwargs) -> psycopg.Connection:
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("prepare_threshold", None)  # no named server-side statements (transaction mode)
        return psycopg.connect(self.dsn(user, dbname, password), **kwargs)

    # -- the process

    @property
    def pid(self) -> int:
        if self.kind == "pgbouncer":
            return int(self._pid_file.read_text().split()[0])
        return self.process.pid

    def alive(self) -> bool:
        if self.kind == "lifeguard":
            return self.process.returncode is None
        if self.kind == "pgbouncer":
            return self.process.poll() is None
        return True

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def metrics(self) -> harness.Exposition:
        require_lifeguard("its /metrics")
        return self.process.metrics()

    def healthz(self) -> int:
        require_lifeguard("its /healthz")
        return self.process.get("/healthz").status

    def describe(self) -> str:
        if self.kind == "lifeguard":
            return self.process.describe()
        if self._log is not None and self._log.exists():
            return self._log.read_text(errors="replace")[-4000:]
        return self.kind


def _seconds(duration: str | float) -> float:
    if isinstance(duration, (int, float)):
        return float(duration)
    if duration.endswith("ms"):
        return float(duration[:-2]) / 1000
    return float(duration.rstrip("s"))


class PoolerFactory:
    """Starts poolers for one test and stops them at its end (conftest's `pooler` fixture)."""

    def __init__(self, lifeguard: harness.LifeguardLauncher, postgres: harness.PostgresServer, workdir: Path):
        self.lifeguard = lifeguard
        self.postgres = postgres
        self.workdir = Path(workdir)
        self._bouncers: list[tuple[subprocess.Popen, Path]] = []
        # "toml": Lifeguard's own file and flags; "ini": the pgbouncer.ini PgBouncer would get (test_pgbouncer_ini).
        self.config_format = "toml"

    def passthrough_upstream(self) -> str:
        """The upstream DSN that pins neither user nor database: clients' own pass through."""
        return f"postgresql://{self.postgres.host}:{self.postgres.port}"

    def __call__(self, mode: str = "transaction", pool_size: int = 5, max_overflow: int = 0,
                 pool_timeout: str = "10s", max_client_conn: int = 100, upstream: str | None = None,
                 databases: Mapping[str, str] | None = None, auth_type: str | None = None,
                 auth_users: Mapping[str, str] | None = None, extra: Sequence[str] = (),
                 settings_in_file: bool = False) -> Target:
        """Starts the pooler. databases: NAME -> DSN entries (then no upstream unless given); auth_users: the
        auth_file's user -> password or SCRAM secret; settings_in_file: pool settings in the TOML file instead of
        flags (so that SIGHUP can change them)."""
        if TARGET == "postgres":
            return Target("postgres", self.postgres.port)
        if upstream is None and databases is None:
            upstream = self.passthrough_upstream()
        if TARGET == "pgbouncer":
            return self._pgbouncer(mode, pool_size, max_overflow, pool_timeout, max_client_conn, upstream,
                                   databases, auth_type, auth_users)
        return self._lifeguard(mode, pool_size, max_overflow, pool_timeout, max_client_conn, upstream, databases,
                               auth_type, auth_users, extra, settings_in_file)

    # -- Lifeguard

    def _lifeguard(self, mode, pool_size, max_overflow, pool_timeout, max_client_conn, upstream, databases,
                   auth_type, auth_users, extra, settings_in_file) -> Target:
        if self.config_format == "ini":
            directory = Path(tempfile.mkdtemp(prefix="ini-", dir=self.workdir))
            config = pgbouncer_ini(directory, port=6432, mode=mode, pool_size=pool_size,
                                   max_overflow=max_overflow, pool_timeout=pool_timeout,
                                   max_client_conn=max_client_conn, upstream=upstream, databases=databases,
                                   auth_type=auth_type or "trust", auth_users=auth_users)
            # The launcher's --listen and --metrics-listen (free ports) override the file's listen_port.
            process = self.lifeguard(*extra, config=config)
            harness.wait_until(lambda: harness.port_accepts(process.listen_port), 10, interval=0.05,
                               what="lifeguard accepting PostgreSQL clients")
            return Target("lifeguard", process.listen_port, process, process.metrics_port, config_path=config)
        settings = {
            "pool_mode": mode,
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_timeout": pool_timeout,
            "max_client_conn": max_client_conn,
        }
        args: list[str] = []
        file_settings: dict = {}
        if settings_in_file:
            file_settings.update(settings)
        else:
            for key, value in settings.items():
                args += [f"--{key.replace('_', '-')}", str(value)]
        if auth_type is not None:
            file_settings["auth_type"] = auth_type
        if auth_users is not None:
            userlist = self.workdir / "userlist.txt"
            userlist.write_text("".join(f'"{u}" "{p}"\n' for u, p in auth_users.items()))
            file_settings["auth_file"] = str(userlist)
        config = None
        if file_settings or databases or (settings_in_file and upstream):
            if upstream is not None:
                file_settings = {"upstream": upstream, **file_settings}
            text = harness.toml_config(**file_settings)
            for name, dsn in (databases or {}).items():
                text += f"\n[databases.{name}]\ndsn = {harness.toml_value(dsn)}\n"
            config = self.lifeguard.write_config(text)
            upstream = None
        process = self.lifeguard(*args, *extra, upstream=upstream, config=config)
        # /healthz may answer a moment before the client listener is bound.
        try:
            harness.wait_until(lambda: harness.port_accepts(process.listen_port), 10, interval=0.05,
                               what="lifeguard accepting PostgreSQL clients")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{process.describe()}") from None
        return Target("lifeguard", process.listen_port, process, process.metrics_port, config_path=config)

    # -- PgBouncer (development only)

    def _pgbouncer(self, mode, pool_size, max_overflow, pool_timeout, max_client_conn, upstream, databases,
                   auth_type, auth_users) -> Target:
        directory = Path(tempfile.mkdtemp(prefix="lifeguard-pgbouncer-"))
        port = harness.free_port()
        users = dict(auth_users) if auth_users is not None else {u: "" for u in _ROLES}
        config = pgbouncer_ini(directory, port=port, mode=mode, pool_size=pool_size, max_overflow=max_overflow,
                               pool_timeout=pool_timeout, max_client_conn=max_client_conn, upstream=upstream,
                               databases=databases, auth_type=auth_type or "trust", auth_users=users,
                               extra_lines=[f"logfile = {directory / 'pgbouncer.log'}",
                                            f"pidfile = {directory / 'pgbouncer.pid'}"])
        argv = [PGBOUNCER, str(config)]
        if harness.IS_ROOT:  # pgbouncer refuses to run as root
            shutil.chown(directory, "postgres", "postgres")
            for f in directory.iterdir():
                shutil.chown(f, "postgres", "postgres")
            argv = ["runuser", "-u", "postgres", "--", *argv]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=harness.clean_env())
        self._bouncers.append((proc, directory))
        harness.wait_until(lambda: harness.port_accepts(port) or proc.poll() is not None, 10, what="pgbouncer up")
        if proc.poll() is not None:
            raise RuntimeError(f"pgbouncer exited: {(directory / 'pgbouncer.log').read_text(errors='replace')}")
        harness.wait_until(lambda: (directory / "pgbouncer.pid").exists(), 5, what="pgbouncer pid file")
        return Target("pgbouncer", port, proc, config_path=config, pid_file=directory / "pgbouncer.pid",
                      log=directory / "pgbouncer.log")

    def close(self) -> None:
        for proc, directory in self._bouncers:
            with contextlib.suppress(Exception):
                pid = int((directory / "pgbouncer.pid").read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(Exception):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            shutil.rmtree(directory, ignore_errors=True)


def pgbouncer_ini(directory: Path, *, port: int, mode: str, pool_size: int, max_overflow: int, pool_timeout,
                  max_client_conn: int, upstream: str | None, databases: Mapping[str, str] | None, auth_type: str,
                  auth_users: Mapping[str, str] | None, extra_lines: Sequence[str] = ()) -> Path:
    """Writes directory/pgbouncer.ini (and userlist.txt when auth_users is given) with these settings, as PgBouncer
    reads them; returns its path. The one place that knows how the suite's settings look in PgBouncer's file."""
    lines = ["[databases]"]
    for name, dsn in (databases or {}).items():
        lines.append(f"{name} = {_libpq_to_bouncer(dsn)}")
    if upstream is not None:
        lines.append(f"* = {_libpq_to_bouncer(upstream)}")
    lines += [
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        f"auth_type = {auth_type}",
    ]
    if auth_users is not None:
        (directory / "userlist.txt").write_text("".join(f'"{u}" "{p}"\n' for u, p in auth_users.items()))
        lines.append(f"auth_file = {directory / 'userlist.txt'}")
    lines += [
        f"pool_mode = {mode}",
        f"default_pool_size = {pool_size}",
        f"reserve_pool_size = {max_overflow}",
        "reserve_pool_timeout = 0.1",
        f"max_client_conn = {max_client_conn}",
        f"query_wait_timeout = {max(1, round(_seconds(pool_timeout)))}",
        "server_reset_query = DISCARD ALL",
        "ignore_startup_parameters = extra_float_digits",
        *extra_lines,
    ]
    config = directory / "pgbouncer.ini"
    config.write_text("\n".join(lines) + "\n")
    return config


def _libpq_to_bouncer(dsn: str) -> str:
    """postgresql://[user@]host:port[/db] -> PgBouncer's key=value form."""
    from urllib.parse import urlparse

    if "://" not in dsn:
        return dsn
    u = urlparse(dsn)
    parts = [f"host={u.hostname}", f"port={u.port or 5432}"]
    if u.username:
        parts.append(f"user={u.username}")
    if u.path.strip("/"):
        parts.append(f"dbname={u.path.strip('/')}")
    return " ".join(parts)


def wait_no_idle_in_transaction(monitor: Monitor, user: str, timeout: float = 5) -> None:
    """Until no backend of this role is idle in a transaction; fails with what it saw otherwise."""
    seen: list = []

    def clean():
        seen[:] = monitor.idle_in_transaction(user)
        return not seen

    try:
        harness.wait_until(clean, timeout, interval=0.05, what="no idle-in-transaction backend")
    except TimeoutError:
        raise AssertionError(f"server connections of {user} left in a transaction: {seen}") from None
