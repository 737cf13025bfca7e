#!/usr/bin/env python3
"""Open N TCP connections to 127.0.0.1:PORT, optionally send each a PostgreSQL StartupMessage, and hold them
open until killed (SIGTERM) or until the server closes them. Prints "held N" once every connection is open."""
import argparse
import resource
import signal
import socket
import struct
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--clients", type=int, required=True)
ap.add_argument("--startup", action="store_true", help="send a StartupMessage (user, database) after connecting")
a = ap.parse_args()

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = min(20000, hard) if hard != resource.RLIM_INFINITY else 20000
resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

body = struct.pack("!I", 196608) + b"user\0bench_user\0database\0bench_db\0\0"
startup = struct.pack("!I", len(body) + 4) + body

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
socks = []
for i in range(a.clients):
    for attempt in range(50):
        try:
            s = socket.create_connection(("127.0.0.1", a.port))
            break
        except OSError:
            time.sleep(0.05)
    else:
        sys.exit(f"connection {i} failed")
    if a.startup:
        s.sendall(startup)
    socks.append(s)
print(f"held {len(socks)}", flush=True)
while True:
    time.sleep(3600)
