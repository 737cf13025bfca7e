"""Building blocks of the black-box suite: free ports, a throwaway PostgreSQL, a running `lifeguard`, plain HTTP,
and the Prometheus text format. conftest.py turns them into fixtures; the proxy and client suites reuse them.

Everything listens on 127.0.0.1 only, lives in a temporary directory and is removed at the end.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("LIFEGUARD_PG_BIN", "/usr/lib/postgresql/15/bin"))
LOOPBACK = "127.0.0.1"
IS_ROOT = os.geteuid() == 0

# ---------------------------------------------------------------------------------------------------------------
# Ports

_handed_out: set[int] = set()


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing is bound to host:port (no SO_REUSEADDR, so lingering connections count as busy)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A free TCP port on 127.0.0.1 below 32768 (the kernel's outgoing range starts there), never the same twice
    in one test run, so two servers started in one test cannot be handed the same port."""
    for _ in range(1000):
        port = random.randint(20000, 32767)
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError("no free TCP port found between 20000 and 32767")


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Polls predicate until it returns something truthy; returns that, or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout:g}s")
        time.sleep(interval)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without anything that configures lifeguard or libpq behind a test's back
    (LIFEGUARD_*, DATABASE_URL, PG*), plus extra."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("LIFEGUARD_") or k.startswith("PG") or k == "DATABASE_URL")
    }
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------------------------------------------
# HTTP (http.client: no proxies, no redirects, any method)


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: str


def http_request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 5.0) -> Response:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data.decode("utf-8", "replace"))
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------------------
# Prometheus text exposition format 0.0.4


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_RE = re.compile(rf"^({_NAME})(\{{.*\}})?\s+(\S+)(\s+-?\d+)?\s*$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _parse_labels(text: str) -> dict[str, str]:
    inner = text[1:-1]
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(inner):
        m = _LABEL_RE.match(inner, pos)
        if not m:
            raise ValueError(f"bad label set {text!r}")
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return labels


class Exposition:
    """A parsed /metrics body: samples plus the # TYPE and # HELP of each family."""

    def __init__(self, text: str):
        self.text = text
        self.samples: list[Sample] = []
        self.types: dict[str, str] = {}
        self.helps: dict[str, str] = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip() if len(parts) > 3 else ""
                elif len(parts) >= 3 and parts[1] == "HELP":
                    self.helps[parts[2]] = parts[3] if len(parts) > 3 else ""
                continue
            m = _SAMPLE_RE.match(line)
            if not m:
                raise ValueError(f"not a sample line: {line!r}")
            labels = _parse_labels(m.group(2)) if m.group(2) else {}
            self.samples.append(Sample(m.group(1), labels, float(m.group(3))))

    def find(self, name: str, **labels: str) -> list[Sample]:
        """Samples of this exact name whose labels include the given ones."""
        return [
            s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The value of the one sample that matches; fails when none or several do."""
        found = self.find(name, **labels)
        if len(found) != 1:
            raise AssertionError(f"expected one sample {name}{labels}, found {len(found)}: {found}")
        return found[0].value

    def type_of(self, family: str) -> str | None:
        """The # TYPE of a family; counters may be declared with or without their _total suffix."""
        if family in self.types:
            return self.types[family]
        if family.endswith("_total"):
            return self.types.get(family[: -len("_total")])
        return None

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


def bucket_bounds(samples: Sequence[Sample]) -> list[float]:
    return sorted(float(s.labels["le"]) for s in samples if "le" in s.labels)


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    if promtool is None:
        raise RuntimeError("promtool not found: install Debian's prometheus package (scripts/test does)")
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


# ---------------------------------------------------------------------------------------------------------------
# A throwaway PostgreSQL 15


class PostgresServer:
    """initdb in a temporary directory (as the `postgres` user when we are root), 127.0.0.1 only, trust
    authentication. After start(): the superuser `postgres` and a login role `app` (password `app_password`,
    not checked under trust) owning the database `appdb`. stop()/start() keep the port, for outage tests.

    hba: pg_hba.conf lines that replace the trust rules for everyone but the superuser (which the harness's own psql
    uses), for example ["host all all 127.0.0.1/32 scram-sha-256"]."""

    superuser = "postgres"
    user = "app"
    password = "app_password"
    dbname = "appdb"
    host = LOOPBACK

    def __init__(self, settings: Mapping[str, str] | None = None, bin_dir: Path = PG_BIN,
                 hba: Sequence[str] | None = None):
        """settings: postgresql.conf values; hba: pg_hba.conf lines that replace initdb's (trust everywhere),
        after local trust and the superuser's own line."""
        self.bin = bin_dir
        if not (self.bin / "initdb").exists():
            raise RuntimeError(f"PostgreSQL 15 not found in {self.bin}: install postgresql-15 (scripts/test does)")
        self.settings = dict(settings or {})
        self.hba = list(hba) if hba is not None else None
        self.dir = Path(tempfile.mkdtemp(prefix="lifeguard-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port: int | None = None
        self._bootstrapped = False
        if IS_ROOT:
            shutil.chown(self.dir, "postgres", "postgres")

    # -- processes

    def _owner_argv(self, argv: Sequence[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if IS_ROOT else list(argv)

    def _run_owner(self, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            self._owner_argv(argv),
            cwd=self.dir,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _options(self) -> str:
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
            "fsync": "off",
            **self.settings,
        }
        return " ".join(f"-c {k}={v}" for k, v in settings.items())

    def start(self) -> None:
        """Starts the server (initdb first time); a no-op while it runs. Keeps its port across restarts."""
        if self.is_running():
            return
        if not self.data.exists():
            r = self._run_owner(
                [str(self.bin / "initdb"), "-D", str(self.data), "-U", self.superuser, "--auth=trust", "-E", "UTF8",
                 "--no-sync", "--no-instructions"]
            )
            if r.returncode != 0:
                raise RuntimeError(f"initdb failed:\n{r.stdout}{r.stderr}")
            if self.hba is not None:
                # The superuser's own line keeps the harness's psql working; TLS-only servers get it as hostssl.
                kind = "hostssl" if self.settings.get("ssl") == "on" else "host"
                rules = ["local all all trust", f"{kind} all {self.superuser} {LOOPBACK}/32 trust", *self.hba]
                hba_file = self.data / "pg_hba.conf"
                hba_file.write_text("\n".join(rules) + "\n")
                if IS_ROOT:
                    shutil.chown(hba_file, "postgres", "postgres")
        attempts = 1 if self.port is not None else 3
        for attempt in range(attempts):
            if self.port is None or attempt > 0:
                self.port = free_port()
            r = self._run_owner(
                [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "-s",
                 "-o", self._options(), "start"]
            )
            if r.returncode == 0:
                break
        else:
            raise RuntimeError(f"PostgreSQL did not start on port {self.port}:\n{r.stderr}\n{self.log_tail()}")
        if not self._bootstrapped:
            self.psql(
                f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'",
                user=self.superuser,
                dbname="postgres",
            )
            self.psql(f"CREATE DATABASE {self.dbname} OWNER {self.user}", user=self.superuser, dbname="postgres")
            self._bootstrapped = True

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m MODE; a no-op when it is not running."""
        if not self.is_running():
            return
        r = self._run_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30", "-s", "-m", mode,
                             "stop"])
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed:\n{r.stderr}")

    def is_running(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        return self._run_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), "status"]).returncode == 0

    @contextlib.contextmanager
    def outage(self, mode: str = "fast") -> Iterator[None]:
        """Stops the server for the body of the with-block and always starts it again afterwards."""
        self.stop(mode)
        try:
            yield
        finally:
            self.start()

    def cleanup(self) -> None:
        """Stops the server however it can and removes its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30", "-s", "-m",
                                 "immediate", "stop"])
        finally:
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():  # pg_ctl failed: kill the postmaster directly
                with contextlib.suppress(Exception):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- connecting

    def dsn(self, user: str | None = None, dbname: str | None = None, password: str | None = None,
            port: int | None = None) -> str:
        """A postgresql:// URI (with the password only when one is given)."""
        auth = user or self.user
        if password is not None:
            auth += f":{password}"
        return f"postgresql://{auth}@{self.host}:{port or self.port}/{dbname or self.dbname}"

    def kv_dsn(self, user: str | None = None, dbname: str | None = None, password: str | None = None,
               port: int | None = None) -> str:
        """The same as a libpq key=value string."""
        dsn = f"host={self.host} port={port or self.port} user={user or self.user} dbname={dbname or self.dbname}"
        if password is not None:
            dsn += f" password={password}"
        return dsn

    def psql(self, sql: str, user: str | None = None, dbname: str | None = None, port: int | None = None,
             timeout: float = 60) -> str:
        """Runs sql with psql over TCP (unaligned, tuples only) and returns its output; raises on an error.
        Pass port= to go through something else listening on 127.0.0.1 (lifeguard)."""
        r = subprocess.run(
            [str(self.bin / "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p",
             str(port or self.port), "-U", user or self.user, "-d", dbname or self.dbname, "-c", sql],
            env=clean_env({"PGCONNECT_TIMEOUT": "10"}),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise RuntimeError(f"psql failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout.strip()


# ---------------------------------------------------------------------------------------------------------------
# A running lifeguard


_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGILL, signal.SIGBUS, signal.SIGTRAP, signal.SIGFPE}


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, read from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state != "0A" or inode not in inodes:  # 0A = LISTEN
                    continue
                addr_hex, port_hex = local.split(":")
                raw = bytes.fromhex(addr_hex)
                # /proc prints the address as host-order 32-bit words.
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add((socket.inet_ntop(family, raw), int(port_hex, 16)))
    return found


class LifeguardProcess:
    """One `lifeguard` process, its stdout/stderr in files, its ports, and how to talk to it."""

    def __init__(self, argv: list[str], env: dict[str, str], workdir: Path, name: str,
                 listen_port: int | None, metrics_port: int | None):
        self.argv = argv
        self.listen_port = listen_port
        self.metrics_port = metrics_port
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.killed = False
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (f"lifeguard {' '.join(self.argv[1:])} (exit {self.returncode})\n--- stdout\n{self.stdout[-4000:]}"
                f"\n--- stderr\n{self.stderr[-4000:]}")

    # -- HTTP on the metrics port

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 5.0) -> Response:
        assert self.metrics_port is not None, "started without a metrics port"
        return http_request(self.metrics_port, method, path, body, timeout)

    def get(self, path: str, timeout: float = 5.0) -> Response:
        return self.request("GET", path, timeout=timeout)

    def metrics(self) -> Exposition:
        resp = self.get("/metrics")
        assert resp.status == 200, f"GET /metrics: {resp.status} {resp.body[:500]}"
        return Exposition(resp.body)

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until GET /healthz answers 200; fails at once if the process exits."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.returncode is not None:
                raise AssertionError(f"lifeguard exited before /healthz answered\n{self.describe()}")
            try:
                resp = self.get("/healthz", timeout=2)
                if resp.status == 200:
                    return
                last = f"{resp.status} {resp.body[:200]}"
            except OSError as e:
                last = str(e)
            time.sleep(0.1)
        raise AssertionError(f"/healthz did not answer 200 within {timeout:g}s ({last})\n{self.describe()}")

    def wait_status(self, path: str, status: int, timeout: float) -> Response:
        """Polls GET path until it answers with status; returns that response."""
        last: list[Response | Exception] = []

        def check():
            try:
                resp = self.get(path, timeout=3)
            except OSError as e:
                last[:] = [e]
                return None
            last[:] = [resp]
            return resp if resp.status == status else None

        try:
            return wait_until(check, timeout, what=f"GET {path} -> {status}")
        except TimeoutError as e:
            raise AssertionError(f"{e}; last answer: {last}\n{self.describe()}") from None

    # -- lifecycle

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 15) -> int:
        """SIGINT (PgBouncer's safe shutdown: idle clients are closed at once, the rest as their transactions end),
        then SIGKILL after grace seconds (self.killed says so). Returns the exit code. SIGINT rather than SIGTERM,
        which waits for clients to leave by themselves: a test that ends with a client still connected is stopped
        without waiting for drain_timeout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            if self.wait_exit(grace) is None:
                self.killed = True
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def problems(self) -> list[str]:
        """What went wrong with the process itself, whatever the test checked: hanging on SIGINT, crashing."""
        found = []
        if self.killed:
            found.append(f"lifeguard (pid {self.pid}) ignored SIGINT and was killed")
        code = self.proc.returncode
        if code is not None and code < 0 and -code in {int(s) for s in _CRASH_SIGNALS}:
            found.append(f"lifeguard (pid {self.pid}) crashed with signal {signal.Signals(-code).name}")
        if found:
            found.append(self.describe())
        return found

    def listening_sockets(self) -> set[tuple[str, int]]:
        """(address, port) of every TCP socket this process listens on, read from /proc."""
        return listening_sockets(self.pid)


class LifeguardLauncher:
    """Starts `lifeguard` processes for one test and stops them all at the end (see conftest.lifeguard).

    launcher(*args, upstream=..., config=..., env=...) starts `lifeguard run --listen 127.0.0.1:FREE
    --metrics-listen 127.0.0.1:FREE ARGS` and waits for /healthz. launcher.run(*args) runs a one-shot command
    (version, check-config) and returns the CompletedProcess."""

    def __init__(self, binary: Path, workdir: Path):
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.processes: list[LifeguardProcess] = []
        self._files = 0

    def write_config(self, text: str, name: str | None = None) -> Path:
        self._files += 1
        path = self.workdir / (name or f"lifeguard-{self._files}.toml")
        path.write_text(text)
        return path

    def _config_path(self, config: str | Path) -> Path:
        return config if isinstance(config, Path) else self.write_config(config)

    def __call__(self, *args: str, upstream: str | None = None, config: str | Path | None = None,
                 env: Mapping[str, str] | None = None, subcommand: Sequence[str] = ("run",),
                 listen: bool | int = True, metrics: bool | int = True, wait: bool = True,
                 timeout: float = 30) -> LifeguardProcess:
        argv = [str(self.binary), *subcommand]
        if config is not None:
            argv += ["--config", str(self._config_path(config))]
        if upstream is not None:
            argv += ["--upstream", upstream]
        listen_port = free_port() if listen is True else (listen or None)
        metrics_port = free_port() if metrics is True else (metrics or None)
        if listen_port:
            argv += ["--listen", f"{LOOPBACK}:{listen_port}"]
        if metrics_port:
            argv += ["--metrics-listen", f"{LOOPBACK}:{metrics_port}"]
        argv += list(args)
        process = LifeguardProcess(argv, clean_env(env), self.workdir, f"lifeguard-{len(self.processes) + 1}",
                                   listen_port, metrics_port)
        self.processes.append(process)
        if wait:
            process.wait_healthy(timeout)
        return process

    start = __call__

    def run(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), *args], env=clean_env(env), cwd=self.workdir,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def close(self) -> list[str]:
        """Stops every process still running; returns the problems seen (hangs, crashes)."""
        problems = []
        for process in self.processes:
            process.stop()
            problems += process.problems()
        return problems


def is_finite(x: float) -> bool:
    return not (math.isinf(x) or math.isnan(x))


# ---------------------------------------------------------------------------------------------------------------
# Configuration files

def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, RawToml):
        return value.text
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


class RawToml:
    """A value written into the file as is (to write deliberately wrong types)."""

    def __init__(self, text: str):
        self.text = text


def toml_config(**settings) -> str:
    """A lifeguard config file with these settings. The only place in the suite that knows the file's layout
    (see docs/configuration.md): the settings are top-level keys named as the flags, with `_` for `-`."""
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in settings.items())
