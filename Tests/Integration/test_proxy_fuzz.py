"""A randomized protocol test: many raw-socket clients at once send malformed, truncated and
out-of-place messages while well-behaved psycopg clients keep running transactions through the same pool.
Lifeguard never crashes, keeps answering /healthz, every good client succeeds, and no server connection is left
in a transaction.

Seeded and bounded: LIFEGUARD_FUZZ_SEED picks the seed (printed on failure); the run stops starting new bad
clients after FUZZ_SECONDS."""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor


import harness
import targets
import wire

SEED = int(os.environ.get("LIFEGUARD_FUZZ_SEED", "20261125"))
FUZZ_SECONDS = 8.0
BAD_CLIENTS = 400
BAD_CONCURRENCY = 24
GOOD_CLIENTS = 4

FRONTEND_TYPES = b"BCdcfDEFHPpQSX"


def random_bytes(rng: random.Random, low: int, high: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(low, high)))


def random_message(rng: random.Random) -> tuple[bytes, bool]:
    """One malformed or out-of-place frontend message; the flag says whether it ends the conversation (a lie
    about its length, a truncation), after which the client only closes."""
    choice = rng.randrange(10)
    if choice == 0:
        return wire.query(rng.choice(["select 1", "BEGIN", "BEGIN; select 1", "select pg_sleep(0.05)",
                                      "COPY (select 1) TO STDOUT", "select 1/0"])), False
    if choice == 1:  # a well-framed message of a random type with a random body
        kind = bytes([rng.choice(FRONTEND_TYPES)])
        body = random_bytes(rng, 0, 64)
        if kind == b"F":  # a function call names a function by OID: never one that exists
            body = b"\xff\xff\xff\xf0" + body
        return wire.message(kind, body), False
    if choice == 2:  # an unknown type byte
        return bytes([rng.choice(b"\x00\x01AaGgzZ\x7f\xff")]) + struct.pack("!i", 8) + random_bytes(rng, 4, 4), True
    if choice == 3:  # a length below the header or negative
        return bytes([rng.choice(FRONTEND_TYPES)]) + struct.pack("!i", rng.choice([0, 1, 2, 3, -1, -2**31])), True
    if choice == 4:  # a length far above anything sensible
        return b"Q" + struct.pack("!i", rng.choice([0x40000001, 0x7FFFFFFF])) + b"select 1\0", True
    if choice == 5:  # a length that promises more than is sent, then silence
        body = random_bytes(rng, 0, 32)
        return b"Q" + struct.pack("!i", len(body) + 4 + rng.randint(1, 1000)) + body, True
    if choice == 6:  # a truncated header
        return b"Q" + struct.pack("!i", 13)[: rng.randint(0, 3)], True
    if choice == 7:  # an extended-protocol fragment, well framed but nonsensical
        parts = [wire.message(b"P", b"\0" + random_bytes(rng, 0, 16) + b"\0\0\0"),
                 wire.message(b"B", random_bytes(rng, 0, 24)), wire.message(b"E", b"\0\0\0\0\0"),
                 wire.message(b"S")]
        return b"".join(rng.sample(parts, rng.randint(1, len(parts)))), False
    if choice == 8:  # COPY messages out of place
        return rng.choice([wire.message(b"d", random_bytes(rng, 0, 32)), wire.message(b"c"),
                           wire.message(b"f", b"oops\0")]), False
    return random_bytes(rng, 1, 48), True  # plain garbage


def bad_client(port: int, user: str, seed: int) -> str:
    """One misbehaving client; returns what it did (for the failure message). Never raises on I/O errors."""
    rng = random.Random(seed)
    scenario = rng.randrange(5)
    try:
        sock = socket.create_connection((harness.LOOPBACK, port), timeout=2)
    except OSError as e:
        return f"connect failed: {e}"
    try:
        sock.settimeout(0.5)
        if scenario == 0:  # garbage instead of a startup packet
            sock.sendall(random_bytes(rng, 0, 64))
        elif scenario == 1:  # a truncated startup packet
            packet = wire.startup_packet(user, "appdb")
            sock.sendall(packet[: rng.randrange(len(packet))])
        else:
            sock.sendall(wire.startup_packet(user, "appdb"))
            drain(sock, 0.3)
            if scenario == 2:  # a COPY left unfinished
                sock.sendall(wire.query("COPY fuzz_rows FROM STDIN"))
                drain(sock, 0.2)
                sock.sendall(wire.message(b"d", random_bytes(rng, 0, 40)))
            for _ in range(rng.randint(1, 5)):
                data, final = random_message(rng)
                sock.sendall(data)
                drain(sock, rng.choice([0, 0.01, 0.05]))
                if final:
                    break
        if rng.random() < 0.3:  # leave with a reset instead of a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return f"scenario {scenario}"
    except OSError as e:
        return f"scenario {scenario}: {e}"
    finally:
        sock.close()


def drain(sock: socket.socket, seconds: float) -> None:
    if seconds <= 0:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return
        except (socket.timeout, BlockingIOError):
            return
        except OSError:
            return


class GoodClient(threading.Thread):
    def __init__(self, target, user: str, n: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.target, self.user, self.n, self.stop = target, user, n, stop
        self.done = 0
        self.failures: list[BaseException] = []

    def run(self):
        try:
            with self.target.connect(user=self.user) as conn:
                i = 0
                while not self.stop.is_set():
                    i += 1
                    with conn.transaction():
                        conn.execute("insert into fuzz_rows values (%s)", (self.n * 1_000_000 + i,))
                        got = conn.execute("select count(*) from fuzz_rows where n = %s",
                                           (self.n * 1_000_000 + i,)).fetchone()
                        assert got == (1,), got
                    assert conn.execute("select %s::int + 1", (i,)).fetchone() == (i + 1,)
                    self.done += 1
        except BaseException as e:  # noqa: BLE001 - any failure of a good client is the finding
            self.failures.append(e)


def test_malformed_clients_do_not_disturb_good_ones(pooler, postgres, monitor):
    user = targets.role(postgres, "fuzz")
    postgres.psql(f"DROP TABLE IF EXISTS {user}.fuzz_rows; CREATE TABLE {user}.fuzz_rows (n bigint)", user=user)
    target = pooler(mode="transaction", pool_size=4, max_overflow=2, pool_timeout="20s", max_client_conn=300)
    master = random.Random(SEED)
    seeds = [master.randrange(2**32) for _ in range(BAD_CLIENTS)]

    stop = threading.Event()
    good = [GoodClient(target, user, n, stop) for n in range(GOOD_CLIENTS)]
    for g in good:
        g.start()
    deadline = time.monotonic() + FUZZ_SECONDS
    health: list[int] = []

    def one(seed: int) -> str:
        if time.monotonic() > deadline:
            return "skipped"
        return bad_client(target.port, user, seed)

    try:
        with ThreadPoolExecutor(BAD_CONCURRENCY) as pool:
            futures = [pool.submit(one, s) for s in seeds]
            while not all(f.done() for f in futures):
                if targets.TARGET == "lifeguard":
                    try:
                        health.append(target.healthz())
                    except OSError:
                        health.append(0)
                time.sleep(0.2)
            outcomes = [f.result() for f in futures]
    finally:
        stop.set()
        for g in good:
            g.join(30)

    ran = [o for o in outcomes if o != "skipped"]
    context = f"(LIFEGUARD_FUZZ_SEED={SEED}, {len(ran)} bad clients)"
    assert target.alive(), f"the pooler died {context}\n{target.describe()}"
    assert len(ran) >= 50, f"only {len(ran)} bad clients ran in {FUZZ_SECONDS}s {context}"
    for g in good:
        assert not g.failures, f"good client {g.n} failed after {g.done} transactions {context}: {g.failures}"
        assert g.done > 0, f"good client {g.n} never finished a transaction {context}"
    if targets.TARGET == "lifeguard":
        assert health and all(code == 200 for code in health), f"/healthz answers during the run: {health}"
        assert target.healthz() == 200
    targets.wait_no_idle_in_transaction(monitor, user, timeout=10)
    assert monitor.count(user) <= 6, "more server connections than pool_size + max_overflow"
    with target.connect(user=user) as conn:
        assert conn.execute("select count(*) >= %s from fuzz_rows", (sum(g.done for g in good),)).fetchone() == (
            True,
        )
    print(f"fuzz {context}: good transactions {[g.done for g in good]}")
