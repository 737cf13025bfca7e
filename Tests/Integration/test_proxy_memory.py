"""Memory that must not grow: a client that stops reading a large result holds back its server connection instead
of filling Lifeguard's memory, and thousands of client connections leave nothing behind. The bounds are generous
(several times what a correct build uses, a fraction of what a leak or an unbounded buffer costs) and depend on
nothing but byte counts, not on timing."""

import socket
import struct
import subprocess
import time
from pathlib import Path

import harness
import targets
import wire

ROWS = 100_000
WIDTH = 1_000  # about 100 MB of DataRows


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def read_result(sock: socket.socket) -> tuple[int, bytes]:
    """Reads up to ReadyForQuery: the number of DataRows and the CommandComplete tag."""
    rows, tag, data, done = 0, b"", b"", False
    while not done:
        chunk = sock.recv(1 << 20)
        assert chunk, "Lifeguard closed the connection mid-result"
        data += chunk
        offset = 0
        while len(data) - offset >= 5:
            kind = data[offset:offset + 1]
            length = struct.unpack("!i", data[offset + 1:offset + 5])[0]
            if len(data) - offset < 1 + length:
                break
            if kind == b"D":
                rows += 1
            elif kind == b"C":
                tag = data[offset + 5:offset + length].rstrip(b"\0")
            elif kind == b"Z":
                done = True
            offset += 1 + length
        data = data[offset:]
    return rows, tag


def test_a_client_that_stops_reading_holds_back_its_server_not_lifeguards_memory(pooler, postgres, monitor):
    targets.require_lifeguard("Lifeguard's own memory")
    user = targets.role(postgres, "mem_slow")
    target = pooler(mode="transaction", pool_size=2)
    # Warm up: a server connection exists, the first allocations are made.
    with target.connect(user=user) as conn:
        conn.execute("select 1")
    baseline = rss_mb(target.pid)
    sock = socket.create_connection((harness.LOOPBACK, target.port))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(wire.startup_packet(user, "appdb"))
        buffered = b""
        while b"Z\0\0\0\x05I" not in buffered:
            buffered += sock.recv(65536)
        sock.sendall(wire.query(f"select repeat('x', {WIDTH}) from generate_series(1, {ROWS})"))
        # PostgreSQL ends up waiting to send: the proof that nothing reads its results any more.
        deadline = time.monotonic() + 60
        waiting = None
        while time.monotonic() < deadline:
            found = monitor.rows(
                "select wait_event from pg_stat_activity where usename = %s and query like 'select repeat%%'",
                (user,),
            )
            waiting = found[0][0] if found else None
            if waiting == "ClientWrite":
                break
            time.sleep(0.1)
        assert waiting == "ClientWrite", f"PostgreSQL's backend is not held back (wait event {waiting})"
        time.sleep(1)
        held = rss_mb(target.pid) - baseline
        # The whole result is about 100 MB; a build without backpressure reads it all into memory.
        assert held < 32, f"Lifeguard's RSS grew by {held:.1f} MB while its client did not read"
        # Everyone else is served meanwhile.
        with target.connect(user=user) as other:
            assert other.execute("select 42").fetchone() == (42,)
        rows, tag = read_result(sock)
        assert (rows, tag) == (ROWS, f"SELECT {ROWS}".encode()), "the client gets the whole result when it reads"
        after = rss_mb(target.pid) - baseline
        assert after < 32, f"Lifeguard's RSS grew by {after:.1f} MB after the result was read"
    finally:
        sock.close()


def test_thousands_of_client_connections_leave_nothing_behind(pooler, postgres, tmp_path):
    targets.require_lifeguard("Lifeguard's own memory")
    user = targets.role(postgres, "mem_churn")
    target = pooler(mode="transaction", pool_size=4, max_client_conn=100)
    script = tmp_path / "select.sql"
    script.write_text("select 1;\n")

    def churn(connections: int) -> None:
        # -C: a new client connection for every transaction.
        result = subprocess.run(
            [str(harness.PG_BIN / "pgbench"), "-n", "-C", "-f", str(script), "-c", "4", "-j", "2",
             "-t", str(connections // 4), "-h", harness.LOOPBACK, "-p", str(target.port), "-U", user, "appdb"],
            env=harness.clean_env({"PGCONNECT_TIMEOUT": "10"}), stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=600,
        )
        assert result.returncode == 0, f"pgbench failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        assert f"number of transactions actually processed: {connections}" in result.stdout, result.stdout[-2000:]

    churn(2_000)  # warm-up: allocator caches and pools filled
    before = rss_mb(target.pid)
    churn(12_000)
    grown = rss_mb(target.pid) - before
    # A leak of 1 KB per client connection (what a reference cycle through a handler costs) would add ~12 MB.
    assert grown < 4, f"Lifeguard's RSS grew by {grown:.2f} MB over 12,000 client connections"
