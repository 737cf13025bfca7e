#!/usr/bin/env python3
"""The client side of bench/soak: long-running memory behaviour and correctness of a PostgreSQL pooler.

    soak.py slow-reader  --port P --pid PID --out FILE.json [--rows 300000 --width 1000 --pause 10]
    soak.py client-churn --port P --pid PID --out FILE.json --pgbench PATH [--rounds 5 --duration 15 --clients 4]
    soak.py server-churn --port P --pid PID --out FILE.json --pgbench PATH --pg-port Q [--metrics URL] [...]
    soak.py resetters    --port P --pid PID --out FILE.json --pg-port Q [--duration 60 --resetters 4 --checkers 4]
    soak.py report       --work DIR --markdown FILE.md [--max-slow-reader-mb M ...]

Every measuring command reads the pooler's resident memory (VmRSS in /proc/PID/status) while it drives the pooler
on --port and writes one JSON file; `report` turns the JSON files of a run into Markdown, prints a short summary and
exits 1 when a wrong answer was seen or a threshold given to it is exceeded. The slow reader and the resetters speak
the v3 protocol themselves (trust authentication only), so that what is read, and when, is exact; the checkers beside
the resetters use psycopg 3.
"""

import argparse
import glob
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

# ---------------------------------------------------------------------------------------------------------------
# Measuring


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def write_json(path, data):
    with open(path, "w") as out:
        json.dump(data, out, indent=1)


def least_squares_slope(points):
    """Slope of y over x by least squares; None with fewer than two distinct x."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


# ---------------------------------------------------------------------------------------------------------------
# The v3 protocol, just enough for a client with trust authentication


class ProtocolError(Exception):
    pass


def startup_packet(user, database, application_name):
    body = struct.pack("!I", 196608)
    for key, value in (("user", user), ("database", database), ("application_name", application_name)):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def message(kind, body=b""):
    return kind + struct.pack("!I", len(body) + 4) + body


def query_message(sql):
    return message(b"Q", sql.encode() + b"\0")


TERMINATE = message(b"X")


def error_text(body):
    fields = {}
    for field in bytes(body).split(b"\0"):
        if field:
            fields[field[:1].decode()] = field[1:].decode(errors="replace")
    return f"{fields.get('S', '?')} {fields.get('C', '?')}: {fields.get('M', '?')}"


class Wire:
    """A blocking client socket with a receive buffer and message framing."""

    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0

    def login(self, user, database, application_name):
        """Sends the StartupMessage and reads until ReadyForQuery; returns the transaction status."""
        self.sock.sendall(startup_packet(user, database, application_name))
        while True:
            kind, body = self.read_message()
            if kind == b"Z":
                return bytes(body)
            if kind == b"E":
                raise ProtocolError(error_text(body))
            if kind == b"R" and struct.unpack("!I", body[:4])[0] != 0:
                raise ProtocolError("the pooler asked for a password; soak.py supports trust only")

    def fill(self, at_least):
        while len(self.buf) - self.pos < at_least:
            if self.pos > 1 << 20:
                del self.buf[: self.pos]
                self.pos = 0
            chunk = self.sock.recv(1 << 18)
            if not chunk:
                raise ProtocolError("the pooler closed the connection")
            self.buf += chunk

    def read_message(self):
        self.fill(5)
        kind = bytes(self.buf[self.pos : self.pos + 1])
        (length,) = struct.unpack_from("!I", self.buf, self.pos + 1)
        self.fill(1 + length)
        body = self.buf[self.pos + 5 : self.pos + 1 + length]
        self.pos += 1 + length
        return kind, body

    def read_until_ready(self):
        """Reads until ReadyForQuery; returns (status, [error texts])."""
        errors = []
        while True:
            kind, body = self.read_message()
            if kind == b"E":
                errors.append(error_text(body))
            elif kind == b"Z":
                return bytes(body), errors

    def send(self, data):
        self.sock.sendall(data)

    def reset(self):
        """Closes with SO_LINGER 0: the peer gets a TCP RST instead of a FIN."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()

    def close(self):
        try:
            self.sock.sendall(TERMINATE)
        except OSError:
            pass
        self.sock.close()


# ---------------------------------------------------------------------------------------------------------------
# slow-reader


def slow_reader(args):
    sql = f"select repeat('x',{args.width}) from generate_series(1,{args.rows})"
    result = {
        "scenario": "slow-reader",
        "pooler": args.pooler,
        "mode": args.mode,
        "setup": args.setup,
        "query": sql,
        "pause_s": args.pause,
        "interval_s": args.interval,
        "rss_at_start_kb": rss_kb(args.pid),
        "samples": [],
        "error": None,
    }
    samples = result["samples"]
    started = None

    def sample(phase):
        samples.append([round(time.monotonic() - started, 2) if started else 0.0, phase, rss_kb(args.pid)])

    direct = None
    try:
        direct = Direct(args) if args.pg_port else None
        wire = Wire(args.host, args.port, args.timeout)
        wire.login(args.user, args.database, "bench-soak-slow-reader")
        time.sleep(1)
        result["rss_baseline_kb"] = rss_kb(args.pid)
        sample("before")
        started = time.monotonic()
        wire.send(query_message(sql))
        ticks = 1
        while ticks * args.interval <= args.pause:
            time.sleep(max(0.0, started + ticks * args.interval - time.monotonic()))
            sample("paused")
            ticks += 1
        if direct:
            result["backend_after_pause"] = direct.conn.execute(
                "select state, wait_event_type, wait_event from pg_stat_activity"
                " where query = %s and pid <> pg_backend_pid()",
                (sql,),
            ).fetchall()

        expected = struct.pack("!hi", 1, args.width) + b"x" * args.width
        datarows = bad_rows = 0
        tag = None
        errors = []
        read_started = time.monotonic()
        next_sample = read_started + args.interval
        while True:
            kind, body = wire.read_message()
            if kind == b"D":
                datarows += 1
                if body != expected:
                    bad_rows += 1
                if datarows % 2000 == 0 and time.monotonic() >= next_sample:
                    sample("reading")
                    next_sample += args.interval
            elif kind == b"C":
                tag = bytes(body).rstrip(b"\0").decode()
            elif kind == b"E":
                errors.append(error_text(body))
            elif kind == b"Z":
                break
        result["read_seconds"] = round(time.monotonic() - read_started, 2)
        result.update(datarows=datarows, bad_rows=bad_rows, tag=tag, errors=errors)
        result["rss_after_read_kb"] = rss_kb(args.pid)
        sample("read")
        time.sleep(2)
        result["rss_after_read_2s_kb"] = rss_kb(args.pid)
        sample("read+2s")
        wire.close()
        time.sleep(3)
        result["rss_after_close_kb"] = rss_kb(args.pid)
        sample("closed+3s")
    except Exception as error:  # recorded in the result: the pooler may have died or closed the connection
        result["error"] = f"{type(error).__name__}: {error}"
    if direct:
        direct.close()
    values = [s[2] for s in samples if s[2] is not None]
    result["rss_peak_kb"] = max(values) if values else None
    ok = (
        result["error"] is None
        and result.get("datarows") == args.rows
        and result.get("bad_rows") == 0
        and result.get("tag") == f"SELECT {args.rows}"
        and not result.get("errors")
    )
    result["correct"] = ok
    write_json(args.out, result)
    base, peak = result.get("rss_baseline_kb"), result["rss_peak_kb"]
    growth = f"{(peak - base) / 1024:.1f} MB" if base and peak else "?"
    print(
        f"slow-reader {args.pooler}: {result.get('datarows')} rows, tag {result.get('tag')}, peak growth {growth}"
        + (f", error {result['error']}" if result["error"] else ""),
        file=sys.stderr,
    )


# ---------------------------------------------------------------------------------------------------------------
# client-churn and server-churn: pgbench rounds


def pgbench_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return env


def run_pgbench(args, options):
    command = [
        args.pgbench, "-n", *options, "-M", "simple", "-c", str(args.clients), "-j", str(min(args.clients, 2)),
        "-T", str(args.duration), "-h", args.host, "-p", str(args.port), "-U", args.user, args.database,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=pgbench_env(), timeout=args.duration + 120
        )
        out, err, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        out, err, code = expired.stdout or "", (expired.stderr or "") + "\n(pgbench timed out)", -1
        out = out.decode() if isinstance(out, bytes) else out
        err = err.decode() if isinstance(err, bytes) else err

    def number(pattern, kind=int):
        found = re.search(pattern, out)
        return kind(found.group(1)) if found else None

    errors = sorted({re.sub(r"\d+", "N", line) for line in err.splitlines() if line.strip()})
    return command, {
        "transactions": number(r"number of transactions actually processed: (\d+)"),
        "failed": number(r"number of failed transactions: (\d+)") or 0,
        "tps": number(r"tps = ([\d.]+)", float),
        "exit": code,
        "stderr": errors[:5],
    }


def metrics_totals(url):
    """Lifeguard's server connects (connect histogram count) and recycle closes, summed over pools."""
    if not url:
        return None, None
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None, None
    connects = recycled = 0
    for line in text.splitlines():
        if line.startswith("lifeguard_pool_connect_seconds_count"):
            connects += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("lifeguard_pool_connections_closed_total") and 'reason="recycle"' in line:
            recycled += int(float(line.rsplit(" ", 1)[1]))
    return connects, recycled


class Direct:
    """A connection straight to PostgreSQL (not through the pooler) for what only PostgreSQL can tell."""

    def __init__(self, args):
        import psycopg

        self.conn = psycopg.connect(
            host=args.host, port=args.pg_port, user=args.pg_user, dbname=args.database, autocommit=True,
            connect_timeout=10, application_name="bench-soak-direct",
        )  # fmt: skip

    def value(self, sql):
        return self.conn.execute(sql).fetchone()[0]

    def sessions(self):
        return self.value("select sessions from pg_stat_database where datname = current_database()")

    def idle_in_transaction(self):
        return self.value(
            "select count(*) from pg_stat_activity where state like 'idle in transaction%' and pid <> pg_backend_pid()"
        )

    def server_backends(self, user):
        return self.conn.execute(
            "select count(*) from pg_stat_activity where usename = %s and pid <> pg_backend_pid()", (user,)
        ).fetchone()[0]

    def close(self):
        self.conn.close()


def churn(args, scenario):
    options = ["-C", "-S"] if scenario == "client-churn" else ["-S"]
    direct = Direct(args) if args.pg_port else None
    result = {
        "scenario": scenario,
        "pooler": args.pooler,
        "mode": args.mode,
        "setup": args.setup,
        "rounds": [],
    }
    time.sleep(1)
    connects, recycled = metrics_totals(args.metrics)
    previous = {
        "rss_kb": rss_kb(args.pid),
        "sessions": direct.sessions() if direct else None,
        "connects": connects,
        "recycled": recycled,
    }
    result["before"] = dict(previous)
    for number in range(1, args.rounds + 1):
        command, run = run_pgbench(args, options)
        result["command"] = " ".join(command)
        time.sleep(args.settle)
        connects, recycled = metrics_totals(args.metrics)
        now = {
            "rss_kb": rss_kb(args.pid),
            "sessions": direct.sessions() if direct else None,
            "connects": connects,
            "recycled": recycled,
        }
        row = {"round": number, **run, **now}
        for key in ("sessions", "connects", "recycled"):
            if now[key] is not None and previous[key] is not None:
                row[f"{key}_delta"] = now[key] - previous[key]
        result["rounds"].append(row)
        previous = now
        print(
            f"{scenario} {args.pooler} round {number}: {run['transactions']} transactions, RSS {now['rss_kb']} kB"
            + (f", server sessions +{row.get('sessions_delta')}" if direct else ""),
            file=sys.stderr,
        )
    if direct:
        direct.close()
    write_json(args.out, result)


# ---------------------------------------------------------------------------------------------------------------
# resetters and checkers


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.examples = {}

    def add(self, key, example=None, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n
            if example is not None:
                kept = self.examples.setdefault(key, [])
                if len(kept) < 5 and example not in kept:
                    kept.append(example)


RESET_KINDS = ("startup", "query", "in-transaction", "extended-unsynced")


def resetter(args, stop, tally, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        kind = rng.choice(RESET_KINDS)
        rows = rng.choice((10, 1000, 20000, 200000))
        sql = f"select n, repeat('r', 100) from pg_sleep(random() * 0.02), generate_series(1, {rows}) n"
        tally.add(f"reset {kind}")
        try:
            wire = Wire(args.host, args.port, args.timeout)
        except OSError as error:
            tally.add("resetter connect errors", f"{type(error).__name__}: {error}")
            time.sleep(0.05)
            continue
        try:
            if kind == "startup":
                wire.send(startup_packet(args.user, args.database, "bench-soak-resetter"))
                time.sleep(rng.random() * 0.005)
            else:
                wire.login(args.user, args.database, "bench-soak-resetter")
                if kind == "query":
                    wire.send(query_message(sql))
                elif kind == "in-transaction":
                    wire.send(query_message("begin"))
                    status, errors = wire.read_until_ready()
                    if errors or status != b"T":
                        tally.add("resetter unexpected answers", f"begin: status {status!r} {errors}")
                    if rng.random() < 0.5:
                        wire.send(query_message(sql))
                elif kind == "extended-unsynced":
                    text = b"select n from generate_series(1, $1::int) n\0"
                    wire.send(
                        message(b"P", b"\0" + text + b"\0\0")
                        + message(b"B", b"\0\0" + struct.pack("!hhi", 0, 1, len(str(rows))) + str(rows).encode()
                                  + struct.pack("!h", 0))
                        + message(b"E", b"\0" + struct.pack("!i", 0))
                        + (message(b"S") if rng.random() < 0.3 else message(b"H"))
                    )  # fmt: skip
                time.sleep(rng.random() * 0.03)
                if rng.random() < 0.5:
                    wire.sock.settimeout(0.2)
                    try:
                        wire.fill(rng.randrange(1, 1 << 16))
                    except (OSError, ProtocolError):
                        pass
        except (OSError, ProtocolError) as error:
            tally.add("resetter errors before the reset", f"{kind}: {type(error).__name__}: {error}")
        wire.reset()


def checker(args, stop, tally, cid, seed):
    import psycopg

    rng = random.Random(seed)
    seq = 0
    conn = None
    while not stop.is_set():
        if conn is None or conn.closed:
            try:
                conn = psycopg.connect(
                    host=args.host, port=args.port, user=args.user, dbname=args.database, autocommit=True,
                    prepare_threshold=None, connect_timeout=10, application_name=f"bench-soak-checker-{cid}",
                )  # fmt: skip
            except psycopg.Error as error:
                tally.add("checker errors", f"connect: {type(error).__name__}: {error}".strip())
                time.sleep(0.1)
                continue
        seq += 1
        k = rng.choice((1, 2, 10, 100, 1000)) if rng.random() < 0.95 else 20000
        op = rng.choice(("simple", "extended", "transaction"))
        tally.add(f"checks {op}")
        try:
            wrong = None
            if op == "simple":
                rows = conn.execute(
                    f"select {cid}::int, {seq}::int, n, now() = statement_timestamp()"
                    f" from generate_series(1, {k}) n"
                ).fetchall()
                if [r[:3] for r in rows] != [(cid, seq, n) for n in range(1, k + 1)]:
                    wrong = f"simple: client {cid} seq {seq} k {k}: got {len(rows)} rows, first {rows[:2]}"
                elif not all(r[3] for r in rows):
                    tally.add("foreign transaction state", f"client {cid} seq {seq}: now() <> statement_timestamp()")
            elif op == "extended":
                rows = conn.execute(
                    "select %s::int, %s::int, n from generate_series(1, %s::int) n", (cid, seq, k)
                ).fetchall()
                if rows != [(cid, seq, n) for n in range(1, k + 1)]:
                    wrong = f"extended: client {cid} seq {seq} k {k}: got {len(rows)} rows, first {rows[:2]}"
            else:
                with conn.transaction():
                    first = conn.execute("select pg_backend_pid(), %s::int, %s::int", (cid, seq)).fetchone()
                    rows = conn.execute(
                        f"select pg_backend_pid(), {cid}::int, {seq}::int, n from generate_series(1, {k}) n"
                    ).fetchall()
                if first[1:3] != (cid, seq) or [r[1:] for r in rows] != [(cid, seq, n) for n in range(1, k + 1)]:
                    wrong = (
                        f"transaction: client {cid} seq {seq} k {k}: got {first}, {len(rows)} rows,"
                        f" first {rows[:2]}"
                    )
                elif any(r[0] != first[0] for r in rows):
                    wrong = f"transaction: client {cid} seq {seq}: the backend changed within the transaction"
            if wrong:
                tally.add("wrong answers", wrong)
            else:
                tally.add("right answers")
        except psycopg.Error as error:
            tally.add("checker errors", f"{op}: {type(error).__name__}: {str(error).strip()}")
            try:
                conn.close()
            except psycopg.Error:
                pass
            conn = None
    if conn is not None:
        try:
            conn.close()
        except psycopg.Error:
            pass


def resetters(args):
    tally = Tally()
    stop = threading.Event()
    rng = random.Random(args.seed)
    samples = []
    started = time.monotonic()
    result = {
        "scenario": "resetters",
        "pooler": args.pooler,
        "mode": args.mode,
        "setup": args.setup,
        "duration_s": args.duration,
        "resetters": args.resetters,
        "checkers": args.checkers,
        "seed": args.seed,
        "settle_s": args.settle,
        "rss_before_kb": rss_kb(args.pid),
    }
    threads = [
        threading.Thread(target=resetter, args=(args, stop, tally, rng.random()), daemon=True)
        for _ in range(args.resetters)
    ] + [
        threading.Thread(target=checker, args=(args, stop, tally, cid, rng.random()), daemon=True)
        for cid in range(1, args.checkers + 1)
    ]
    for thread in threads:
        thread.start()
    while time.monotonic() - started < args.duration:
        time.sleep(1)
        samples.append([round(time.monotonic() - started, 1), rss_kb(args.pid)])
    stop.set()
    stuck = 0
    for thread in threads:
        thread.join(timeout=max(0.0, started + args.duration + 30 - time.monotonic()))
        stuck += thread.is_alive()
    result["stuck_threads"] = stuck
    result["counts"] = dict(sorted(tally.counts.items()))
    result["examples"] = tally.examples
    result["rss_samples"] = samples
    result["rss_after_kb"] = rss_kb(args.pid)
    stopped = time.monotonic()

    direct = Direct(args)
    settle_started = time.monotonic()
    first = direct.idle_in_transaction()
    final = first
    while final and time.monotonic() - settle_started < args.settle:
        time.sleep(0.25)
        final = direct.idle_in_transaction()
    result["idle_in_transaction_first"] = first
    result["idle_in_transaction"] = final
    result["idle_in_transaction_waited_s"] = round(time.monotonic() - settle_started, 2)
    result["server_backends_after"] = direct.server_backends(args.user)
    direct.close()
    time.sleep(max(0.0, stopped + 5 - time.monotonic()))
    result["rss_after_5s_kb"] = rss_kb(args.pid)
    write_json(args.out, result)
    counts = result["counts"]
    print(
        f"resetters {args.mode} {args.pooler}: {counts.get('right answers', 0)} right, "
        f"{counts.get('wrong answers', 0)} wrong, {counts.get('foreign transaction state', 0)} foreign state, "
        f"{counts.get('checker errors', 0)} checker errors, idle in transaction {final}",
        file=sys.stderr,
    )


# ---------------------------------------------------------------------------------------------------------------
# report


def mb(kb):
    return "?" if kb is None else f"{kb / 1024:.1f}"


def signed_mb(kb):
    return "?" if kb is None else f"{kb / 1024:+.1f}"


POOLERS = ("pgbouncer", "lifeguard")
NAMES = {"pgbouncer": "PgBouncer", "lifeguard": "Lifeguard"}


def load(work):
    runs = {}
    for path in sorted(glob.glob(os.path.join(work, "*.json"))):
        with open(path) as source:
            data = json.load(source)
        runs.setdefault(data["scenario"], {})[(data.get("mode"), data["pooler"])] = data
    return runs


MODES = ("transaction", "session", "statement")


def ordered(group):
    def key(item):
        mode, pooler = item[0]
        return (MODES.index(mode) if mode in MODES else len(MODES), mode or "", POOLERS.index(pooler))

    return sorted(group.items(), key=key)


def churn_slope(data, x_key):
    """Points (x since the end of the warm-up round, RSS) from the end of round 1 on; slope in kB per x."""
    rounds = data["rounds"]
    points, x = [], 0
    for row in rounds:
        if row["round"] > 1:
            x += row.get(x_key) or 0
        if row["rss_kb"] is not None:
            points.append((x, row["rss_kb"]))
    slope = least_squares_slope(points)
    if len(points) >= 2:
        total_x, growth = points[-1][0] - points[0][0], points[-1][1] - points[0][1]
    else:
        total_x = growth = None
    return slope, total_x, growth


class Report:
    def __init__(self, args):
        self.args = args
        self.runs = load(args.work)
        self.lines = []
        self.summary = []
        self.failures = []

    def out(self, *lines):
        self.lines.extend(lines)

    def setup_lines(self, group):
        self.out("Setup:", "")
        for (mode, pooler), data in ordered(group):
            self.out(f"- {NAMES[pooler]}{f' ({mode})' if mode else ''}: `{data.get('setup', '')}`")
        self.out("")

    def slow_reader(self, group):
        self.out("## slow-reader", "")
        first = next(iter(group.values()))
        self.out(
            f"One client logs in, sends `{first['query']}` (simple protocol), reads nothing for {first['pause_s']} s,"
            f" then reads everything. The pooler's VmRSS every {first['interval_s']} s; growth over the baseline"
            " read just before the query.",
            "",
        )
        self.setup_lines(group)
        self.out(
            "| pooler | DataRows | CommandComplete | rows as expected | baseline MB | peak MB | peak growth MB |"
            " after reading MB | reading +2 s MB | 3 s after close MB | read time s |",
            "|---|--:|---|---|--:|--:|--:|--:|--:|--:|--:|",
        )
        for (_, pooler), d in ordered(group):
            base, peak = d.get("rss_baseline_kb"), d.get("rss_peak_kb")
            growth = peak - base if base is not None and peak is not None else None
            self.out(
                f"| {NAMES[pooler]} | {d.get('datarows', '?')} | {d.get('tag', '?')} |"
                f" {'yes' if d['correct'] else '**no**'} | {mb(base)} | {mb(peak)} | {signed_mb(growth)} |"
                f" {mb(d.get('rss_after_read_kb'))} | {mb(d.get('rss_after_read_2s_kb'))} |"
                f" {mb(d.get('rss_after_close_kb'))} | {d.get('read_seconds', '?')} |"
            )
            if d.get("error") or d.get("errors"):
                self.out(f"|  | error: `{d.get('error') or d.get('errors')}` |||||||||")
            self.summary.append(
                f"slow-reader {NAMES[pooler]}: peak RSS {mb(base)} -> {mb(peak)} MB ({signed_mb(growth)} MB),"
                f" {d.get('datarows', '?')} rows, {'correct' if d['correct'] else 'NOT CORRECT'}"
            )
            if not d["correct"]:
                self.failures.append(f"slow-reader {NAMES[pooler]}: the result was not read back correctly")
            limit = self.args.max_slow_reader_mb
            if pooler == "lifeguard" and limit is not None and (growth is None or growth / 1024 > limit):
                self.failures.append(f"slow-reader Lifeguard: peak growth {signed_mb(growth)} MB > {limit} MB")
        self.out("", "The query's PostgreSQL backend when the pause ended (state, wait event type, wait event):", "")
        for (_, pooler), d in ordered(group):
            backend = d.get("backend_after_pause")
            shown = "; ".join(" ".join(str(v) for v in row) for row in backend) if backend else "not running"
            self.out(f"- {NAMES[pooler]}: {shown if backend is not None else 'not asked'}")
        self.out("", "RSS over time (MB; s since the query was sent):", "")
        for (_, pooler), d in ordered(group):
            phases = {}
            for t, phase, kb in d["samples"]:
                phases.setdefault(phase, []).append(f"{t:g}s {mb(kb)}")
            self.out(f"- {NAMES[pooler]}: " + "; ".join(f"{phase}: {', '.join(v)}" for phase, v in phases.items()))
        self.out("")

    def churn(self, name, group, x_key, per, unit, limit, limit_unit_kb):
        self.setup_lines(group)
        first = next(iter(group.values()))
        self.out(f"Command: `{first.get('command', '?')}` (per round)", "")
        server = name == "server-churn"
        header = "| pooler | round | transactions | failed | TPS | RSS MB | Δ RSS MB |"
        rule = "|---|--:|--:|--:|--:|--:|--:|"
        if server:
            header += " server sessions (pg_stat_database) | Lifeguard connects | Lifeguard recycle closes |"
            rule += "--:|--:|--:|"
        self.out(header, rule)
        for (_, pooler), d in ordered(group):
            previous = d["before"]["rss_kb"]
            self.out(
                f"| {NAMES[pooler]} | before | | | | {mb(previous)} | |" + (" | | |" if server else "")
            )
            for row in d["rounds"]:
                delta = row["rss_kb"] - previous if row["rss_kb"] is not None and previous is not None else None
                previous = row["rss_kb"]
                tps = "?" if row["tps"] is None else f"{row['tps']:.0f}"
                line = (
                    f"| {NAMES[pooler]} | {row['round']}{' (warm-up)' if row['round'] == 1 else ''} |"
                    f" {row['transactions']} | {row['failed']} | {tps} |"
                    f" {mb(row['rss_kb'])} |"
                    f" {signed_mb(delta)} |"
                )
                if server:
                    line += (
                        f" {row.get('sessions_delta', '?')} | {row.get('connects_delta', '')} |"
                        f" {row.get('recycled_delta', '')} |"
                    )
                self.out(line)
        self.out("")
        problems = [
            f"{NAMES[pooler]} round {row['round']}: exit {row['exit']}, {row['failed']} failed, {row['stderr']}"
            for (_, pooler), d in ordered(group)
            for row in d["rounds"]
            if row["exit"] != 0 or row["failed"] or row["transactions"] is None
        ]
        if problems:
            self.out("pgbench problems:", "", *[f"- `{p}`" for p in problems], "")
        self.out(
            f"RSS growth after the warm-up round, per {per:,} {unit} (least squares; last − first in brackets):", ""
        )
        for (_, pooler), d in ordered(group):
            x_of = x_key(pooler)
            slope, total_x, growth = churn_slope(d, x_of)
            if slope is None:
                self.out(f"- {NAMES[pooler]}: needs at least 2 rounds")
                continue
            per_kb = slope * per
            self.out(
                f"- {NAMES[pooler]}: **{per_kb:+.0f} kB** ({per_kb / 1024:+.2f} MB) per {per:,} {unit}"
                f" [{signed_mb(growth)} MB over {total_x:,} {unit}; {unit} counted by {x_of.replace('_delta', '')}]"
            )
            self.summary.append(
                f"{name} {NAMES[pooler]}: {per_kb:+.0f} kB per {per:,} {unit} ({signed_mb(growth)} MB over {total_x:,})"
            )
            if pooler == "lifeguard" and limit is not None and per_kb > limit * limit_unit_kb:
                self.failures.append(
                    f"{name} Lifeguard: {per_kb / limit_unit_kb:+.2f} > {limit} per {per:,} {unit}"
                )
        self.out("")

    def resetters(self, group):
        self.out("## resetters", "")
        first = next(iter(group.values()))
        self.out(
            f"For {first['duration_s']} s, {first['resetters']} resetters log in over and over, pick one of"
            f" {', '.join(RESET_KINDS)} (a StartupMessage only; a query of 10–200,000 rows after a random pg_sleep"
            " of up to 20 ms; BEGIN and maybe that query; Parse/Bind/Execute with Flush or Sync), wait up to 30 ms,"
            " maybe read part of the answer, and reset the socket (SO_LINGER 0, close: TCP RST). Beside them,"
            f" {first['checkers']} psycopg checkers (autocommit, prepare_threshold=None) run queries whose every row"
            " names the checker and its sequence number — simple protocol, extended protocol, and BEGIN; two"
            " statements; COMMIT checking that the backend stays the same — and check each answer, also that"
            " `now() = statement_timestamp()` (no transaction left open by someone else). Afterwards PostgreSQL is"
            " asked directly for `select count(*) from pg_stat_activity where state like 'idle in transaction%'`"
            f" until it is 0 or {first['settle_s']:g} s passed.",
            "",
        )
        self.setup_lines(group)
        self.out(
            "| mode | pooler | right answers | wrong answers | foreign transaction state | checker errors |"
            " resets (startup/query/in-transaction/extended) | idle in transaction (first → final) |"
            " server backends after | RSS before → end → 5 s later MB | stuck threads |",
            "|---|---|--:|--:|--:|--:|---|---|--:|---|--:|",
        )
        for (mode, pooler), d in ordered(group):
            c = d["counts"]
            resets = "/".join(str(c.get(f"reset {k}", 0)) for k in RESET_KINDS)
            wrong, foreign = c.get("wrong answers", 0), c.get("foreign transaction state", 0)
            self.out(
                f"| {mode} | {NAMES[pooler]} | {c.get('right answers', 0)} | {'**' if wrong else ''}{wrong}"
                f"{'**' if wrong else ''} | {foreign} | {c.get('checker errors', 0)} | {resets} |"
                f" {d['idle_in_transaction_first']} → {d['idle_in_transaction']} | {d['server_backends_after']} |"
                f" {mb(d['rss_before_kb'])} → {mb(d['rss_after_kb'])} → {mb(d.get('rss_after_5s_kb'))} |"
                f" {d['stuck_threads']} |"
            )
            self.summary.append(
                f"resetters {mode} {NAMES[pooler]}: {wrong} wrong answers, {foreign} foreign transaction state,"
                f" {c.get('checker errors', 0)} checker errors, idle in transaction {d['idle_in_transaction']}"
            )
            if wrong or foreign:
                self.failures.append(f"resetters {mode} {NAMES[pooler]}: {wrong + foreign} wrong answers")
            if d["idle_in_transaction"]:
                self.failures.append(
                    f"resetters {mode} {NAMES[pooler]}: {d['idle_in_transaction']} server connections idle in"
                    " transaction"
                )
            if d["stuck_threads"]:
                self.failures.append(f"resetters {mode} {NAMES[pooler]}: {d['stuck_threads']} client threads stuck")
        self.out("")
        for (mode, pooler), d in ordered(group):
            if d["examples"]:
                self.out(f"Examples ({mode}, {NAMES[pooler]}):", "")
                for key, examples in sorted(d["examples"].items()):
                    for example in examples:
                        self.out(f"- {key}: `{example.replace('`', chr(39))[:300]}`")
                self.out("")
        self.out("RSS every second (MB):", "")
        for (mode, pooler), d in ordered(group):
            values = [mb(kb) for _, kb in d["rss_samples"]]
            self.out(f"- {mode}, {NAMES[pooler]}: {', '.join(values)}")
        self.out("")

    def build(self):
        a = self.args
        if "slow-reader" in self.runs:
            self.slow_reader(self.runs["slow-reader"])
        if "client-churn" in self.runs:
            self.out(
                "## client-churn",
                "",
                "pgbench with a new client connection per transaction, rounds back to back on one pooler process;"
                " RSS read 1 s after each round. The first round is the warm-up.",
                "",
            )
            self.churn(
                "client-churn", self.runs["client-churn"], lambda _: "transactions", 10_000, "client connections",
                a.max_churn_kb_per_10k, 1,
            )  # fmt: skip
        if "server-churn" in self.runs:
            self.out(
                "## server-churn",
                "",
                "pgbench with persistent clients while the pooler closes server connections older than the recycle"
                " age and opens new ones. Server connections opened: Lifeguard's"
                " `lifeguard_pool_connect_seconds_count`; PgBouncer's from `pg_stat_database.sessions` (both shown"
                " for Lifeguard; sessions also count the pool's first connections and lag by up to a second).",
                "",
            )
            self.churn(
                "server-churn", self.runs["server-churn"],
                lambda pooler: "connects_delta" if pooler == "lifeguard" else "sessions_delta",
                1_000, "server connections", a.max_server_churn_mb_per_1k, 1024,
            )  # fmt: skip
        if "resetters" in self.runs:
            self.resetters(self.runs["resetters"])
        with open(a.markdown, "w") as out:
            out.write("\n".join(self.lines) + "\n")
        print("Summary:")
        for line in self.summary:
            print(f"  {line}")
        if self.failures:
            print("FAILED:")
            for line in self.failures:
                print(f"  {line}")
        else:
            print("No wrong answer" + (", every threshold met." if a.thresholds_given else "; no threshold set."))
        return 1 if self.failures else 0


# ---------------------------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def measuring(name):
        sub = commands.add_parser(name)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, required=True)
        sub.add_argument("--user", default="app")
        sub.add_argument("--database", default="appdb")
        sub.add_argument("--pid", type=int, required=True, help="the pooler's process id")
        sub.add_argument("--pooler", required=True, choices=POOLERS)
        sub.add_argument("--mode", default="transaction")
        sub.add_argument("--setup", default="", help="how the pooler was started (for the report)")
        sub.add_argument("--out", required=True)
        sub.add_argument("--timeout", type=float, default=60.0, help="socket timeout, seconds")
        sub.add_argument("--pg-port", type=int, help="PostgreSQL itself, for what only it can tell")
        sub.add_argument("--pg-user", default="postgres")
        return sub

    sub = measuring("slow-reader")
    sub.add_argument("--rows", type=int, default=300000)
    sub.add_argument("--width", type=int, default=1000)
    sub.add_argument("--pause", type=float, default=10.0)
    sub.add_argument("--interval", type=float, default=0.5)
    for name in ("client-churn", "server-churn"):
        sub = measuring(name)
        sub.add_argument("--pgbench", required=True)
        sub.add_argument("--rounds", type=int, default=5)
        sub.add_argument("--duration", type=int, default=15)
        sub.add_argument("--clients", type=int, default=4)
        sub.add_argument("--settle", type=float, default=1.0)
        sub.add_argument("--metrics", help="Lifeguard's /metrics URL")
    sub = measuring("resetters")
    sub.add_argument("--duration", type=float, default=60.0)
    sub.add_argument("--resetters", type=int, default=4)
    sub.add_argument("--checkers", type=int, default=4)
    sub.add_argument("--seed", type=int, default=1)
    sub.add_argument("--settle", type=float, default=5.0, help="how long idle-in-transaction may take to clear")

    sub = commands.add_parser("report")
    sub.add_argument("--work", required=True)
    sub.add_argument("--markdown", required=True)
    sub.add_argument("--max-slow-reader-mb", type=float)
    sub.add_argument("--max-churn-kb-per-10k", type=float)
    sub.add_argument("--max-server-churn-mb-per-1k", type=float)

    args = parser.parse_args()
    if args.command == "slow-reader":
        slow_reader(args)
    elif args.command in ("client-churn", "server-churn"):
        churn(args, args.command)
    elif args.command == "resetters":
        if args.pg_port is None:
            parser.error("resetters needs --pg-port")
        resetters(args)
    else:
        args.thresholds_given = any(
            v is not None for v in (args.max_slow_reader_mb, args.max_churn_kb_per_10k, args.max_server_churn_mb_per_1k)
        )
        sys.exit(Report(args).build())


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
