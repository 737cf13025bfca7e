"""Self-tests of the harness: the fixtures must be right before the tests built on them mean anything.
None of these needs the lifeguard binary."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest

import harness


def test_free_port_is_free_loopback_and_below_32768(free_port):
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20, "a port was handed out twice"
    for port in ports:
        assert 1024 < port < 32768
        assert harness.port_is_free(port)


def test_port_helpers_see_a_listener(free_port):
    port = free_port()
    with socket.socket() as s:
        s.bind((harness.LOOPBACK, port))
        s.listen()
        assert not harness.port_is_free(port)
        assert harness.port_accepts(port)
    assert not harness.port_accepts(port)


def test_postgres_fixture_answers_on_loopback_only(postgres):
    assert postgres.port < 32768
    assert postgres.psql("select 1") == "1"
    assert postgres.psql("show listen_addresses", user="postgres") == "127.0.0.1"
    assert postgres.psql("select current_user || '@' || current_database()") == "app@appdb"


def test_postgres_fixture_outage_and_restart_keeps_the_port(postgres):
    port = postgres.port
    with postgres.outage():
        assert not postgres.is_running()
        assert not harness.port_accepts(port)
        with pytest.raises(RuntimeError):
            postgres.psql("select 1")
    assert postgres.port == port
    assert postgres.psql("select 2") == "2"


def _postmaster_pids_for(directory: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "postgres" in cmdline and directory in cmdline:
                pids.append(int(entry))
    return pids


def test_postgres_server_leaves_nothing_behind():
    server = harness.PostgresServer()
    server.start()
    directory, port = str(server.dir), server.port
    assert server.psql("select 1") == "1"
    assert _postmaster_pids_for(directory), "no postmaster found for the new cluster"
    server.stop()
    server.start()
    assert server.psql("select 3") == "3"
    server.cleanup()
    assert not os.path.exists(directory)
    assert not harness.port_accepts(port)
    assert harness.wait_until(lambda: not _postmaster_pids_for(directory), 10, what="postgres gone")


def test_exposition_parser_reads_labels_types_and_histograms():
    text = textwrap.dedent(
        """\
        # HELP lifeguard_pool_checkouts_total Connections handed out.
        # TYPE lifeguard_pool_checkouts_total counter
        lifeguard_pool_checkouts_total{database="appdb",user="app"} 0
        # TYPE lifeguard_pool_wait_seconds histogram
        lifeguard_pool_wait_seconds_bucket{database="appdb",user="app",le="0.0001"} 0
        lifeguard_pool_wait_seconds_bucket{database="appdb",user="app",le="+Inf"} 2
        lifeguard_pool_wait_seconds_count{database="appdb",user="app"} 2
        weird{label="a \\"quoted\\" \\\\ value, with comma"} 1.5e3
        """
    )
    exp = harness.Exposition(text)
    assert exp.value("lifeguard_pool_checkouts_total", database="appdb", user="app") == 0
    assert exp.type_of("lifeguard_pool_checkouts_total") == "counter"
    assert exp.type_of("lifeguard_pool_wait_seconds") == "histogram"
    buckets = exp.find("lifeguard_pool_wait_seconds_bucket", user="app")
    assert harness.bucket_bounds(buckets) == [0.0001, float("inf")]
    assert exp.find("weird")[0].labels == {"label": 'a "quoted" \\ value, with comma'}
    assert exp.value("weird") == 1500
    with pytest.raises(ValueError):
        harness.Exposition("not a metric line {")


def test_promtool_is_installed_and_lints(promtool_check):
    good = "# HELP x_total Things.\n# TYPE x_total counter\nx_total 0\n"
    assert promtool_check(good).returncode == 0
    assert promtool_check("# TYPE x counter\nx 0\n").returncode != 0


# A stand-in with lifeguard's command line, to check the process fixture itself (ports, waiting, logs, SIGINT,
# killing a hung process); the real binary is tested by the other files.
FAKE_LIFEGUARD = textwrap.dedent(
    """\
    import http.server, os, signal, sys
    args = sys.argv[1:]
    assert args[0] == "run", args
    host, port = args[args.index("--metrics-listen") + 1].rsplit(":", 1)
    if os.environ.get("FAKE_IGNORE_TERM"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *a):
            pass
    print("fake lifeguard up", os.environ.get("DATABASE_URL", "no DATABASE_URL"), flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    http.server.HTTPServer((host, int(port)), Handler).serve_forever()
    """
)


@pytest.fixture
def fake_binary(tmp_path):
    path = tmp_path / "fake-lifeguard"
    path.write_text(f"#!{sys.executable}\n{FAKE_LIFEGUARD}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_launcher_starts_waits_captures_and_stops(fake_binary, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://leaked@127.0.0.1/x")
    launcher = harness.LifeguardLauncher(fake_binary, tmp_path)
    process = launcher(upstream="postgresql://app@127.0.0.1:1/appdb")
    assert process.get("/healthz").status == 200
    assert process.get("/nope").status == 404
    assert process.listening_sockets() == {("127.0.0.1", process.metrics_port)}
    assert "--listen" in process.argv and f"127.0.0.1:{process.listen_port}" in process.argv
    assert process.stop() == 0
    assert "fake lifeguard up no DATABASE_URL" in process.stdout, "the test environment leaked into the child"
    assert "to stderr" in process.stderr
    assert launcher.close() == []


def test_launcher_kills_a_process_that_ignores_sigint(fake_binary, tmp_path):
    launcher = harness.LifeguardLauncher(fake_binary, tmp_path)
    process = launcher(env={"FAKE_IGNORE_TERM": "1"})
    started = time.monotonic()
    code = process.stop(grace=1)
    assert time.monotonic() - started < 10
    assert code == -signal.SIGKILL
    assert any("ignored SIGINT" in p for p in launcher.close())


def test_launcher_reports_early_exit(tmp_path):
    launcher = harness.LifeguardLauncher("/bin/false", tmp_path)
    with pytest.raises(AssertionError, match="exited before /healthz"):
        launcher(timeout=5)
    assert launcher.run("anything").returncode == 1
    launcher.close()
