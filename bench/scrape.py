#!/usr/bin/env python3
"""Scrape a /metrics URL at a fixed rate for a while and write each scrape's latency (seconds) one per line.

    scrape.py URL RATE_PER_SECOND DURATION_SECONDS OUTPUT

Like Prometheus, it keeps one HTTP/1.1 connection open and reconnects after an error. A scrape's latency runs
from sending the request to having read the whole body. Scrapes are scheduled on a fixed grid (not "sleep
1/rate after each"), so a slow scrape does not lower the rate. Failures are counted on stderr as "failures N".
"""

import http.client
import sys
import time
import urllib.parse


def main(url, rate, duration, output):
    parts = urllib.parse.urlsplit(url)
    interval = 1.0 / rate
    connection = None
    latencies, failures, size = [], 0, 0
    start = time.monotonic()
    n = 0
    while True:
        due = start + n * interval
        if due >= start + duration:
            break
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        n += 1
        try:
            if connection is None:
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            began = time.perf_counter()
            connection.request("GET", parts.path or "/")
            response = connection.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - began
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            latencies.append(elapsed)
            size = len(body)
        except Exception as error:  # counted; the next scrape reconnects
            failures += 1
            print(f"scrape failed: {type(error).__name__}: {error}", file=sys.stderr)
            if connection is not None:
                connection.close()
            connection = None
    with open(output, "w") as out:
        out.write("".join(f"{v:.6f}\n" for v in latencies))
    print(f"failures {failures}", file=sys.stderr)
    print(f"bytes {size}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
