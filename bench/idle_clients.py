#!/usr/bin/env python3
"""Open N PostgreSQL client connections to a pooler, log each in, hold them idle, and measure the pooler's memory.

    idle_clients.py --port P --user U --database D --clients N --pid POOLER_PID [--hold SECONDS]

Speaks the v3 protocol directly (a StartupMessage, then messages until ReadyForQuery), so it needs no driver and
works with trust authentication only. Prints one tab-separated line:
    clients_requested clients_ready errors rss_before_kb rss_after_kb rss_after_close_kb kb_per_client first_error
rss_before is read just before the first connection, rss_after once all are logged in and have been held for
--hold seconds, rss_after_close a few seconds after they were all closed.
"""

import argparse
import asyncio
import resource
import struct
import sys
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def startup_packet(user, database):
    body = struct.pack("!I", 196608)  # protocol 3.0
    for key, value in (("user", user), ("database", database), ("application_name", "bench-idle-clients")):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


async def login(host, port, packet, timeout):
    """Returns (reader, writer) once ReadyForQuery arrived; raises with the server's message otherwise."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    writer.write(packet)
    await writer.drain()
    while True:
        header = await asyncio.wait_for(reader.readexactly(5), timeout)
        kind, length = header[:1], struct.unpack("!I", header[1:])[0]
        body = await asyncio.wait_for(reader.readexactly(length - 4), timeout)
        if kind == b"Z":
            return reader, writer
        if kind == b"E":
            fields = dict((f[:1].decode(), f[1:].decode(errors="replace")) for f in body.split(b"\0") if f)
            writer.close()
            raise RuntimeError(f"{fields.get('S', '?')} {fields.get('C', '?')} {fields.get('M', '?')}")
        if kind == b"R" and struct.unpack("!I", body[:4])[0] != 0:
            writer.close()
            raise RuntimeError("the pooler asked for a password; idle_clients.py supports trust only")


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--hold", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.clients + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    packet = startup_packet(args.user, args.database)
    gate = asyncio.Semaphore(args.concurrency)
    connections, errors = [], []

    async def one():
        async with gate:
            try:
                connections.append(await login(args.host, args.port, packet, args.timeout))
            except Exception as error:  # every failure is counted and the first one printed
                errors.append(f"{type(error).__name__}: {error}")

    before = rss_kb(args.pid)
    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(args.clients)))
    elapsed = time.monotonic() - started
    await asyncio.sleep(args.hold)
    after = rss_kb(args.pid)
    for _, writer in connections:
        writer.write(b"X\0\0\0\4")  # Terminate
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in connections), return_exceptions=True)
    await asyncio.sleep(3)
    after_close = rss_kb(args.pid)
    ready = len(connections)
    per_client = (after - before) / ready if ready else float("nan")
    print(f"logged in {ready}/{args.clients} in {elapsed:.1f}s", file=sys.stderr)
    print(
        "\t".join(
            str(v)
            for v in (
                args.clients,
                ready,
                len(errors),
                before,
                after,
                after_close,
                f"{per_client:.2f}",
                (errors[0] if errors else "").replace("\t", " "),
            )
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
