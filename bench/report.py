#!/usr/bin/env python3
"""Statistics and Markdown tables for bench/run, bench/idle-clients and bench/scrape-cost.

    report.py pgbench OUT ERR LOGDIR   one pgbench run: prints "tps lat_avg_ms p99_ms txns failed aborted"
                                       (tab-separated) from its stdout, stderr and --log files
    report.py run-table RESULTS.tsv    the Markdown table of bench/run from its per-round records
    report.py errors RESULTS.tsv       the distinct error lines pgbench printed, per workload and target
    report.py tls-table RESULTS.tsv    each tls-X workload of bench/run against X: TLS/plain TPS and p99 per target
    report.py scrape LATENCIES...      "count p50_ms p99_ms max_ms" of scrape latencies (one number in s per line)
    report.py scrape-table RESULTS.tsv the Markdown table of bench/scrape-cost
"""

import glob
import math
import os
import re
import statistics
import sys
from collections import OrderedDict, defaultdict

TARGETS = ["direct", "pgbouncer", "lifeguard"]


def percentile(values, fraction):
    """Nearest-rank percentile (the value below which `fraction` of the sorted values fall)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(round(fraction * len(ordered), 9))  # round first: 0.99 * 100 is 98.99999999999999
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def pgbench_latencies_us(logdir):
    """Latency column (3rd, microseconds) of every per-transaction line pgbench --log wrote in logdir."""
    latencies = []
    for path in glob.glob(os.path.join(logdir, "*")):
        with open(path) as log:
            for line in log:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]))
    return latencies


def parse_pgbench(out_path, err_path, logdir):
    out = open(out_path).read()
    err = open(err_path).read() if os.path.exists(err_path) else ""

    def number(pattern, text=out):
        match = re.search(pattern, text, re.MULTILINE)
        return float(match.group(1)) if match else None

    tps = number(r"^tps = ([0-9.]+)")
    latency = number(r"^latency average = ([0-9.]+) ms")
    txns = number(r"^number of transactions actually processed: ([0-9]+)")
    failed = number(r"^number of failed transactions: ([0-9]+)")
    aborted = len(re.findall(r"^client \d+ aborted", err, re.MULTILINE))
    latencies = pgbench_latencies_us(logdir)
    p99 = percentile(latencies, 0.99)

    def show(value, digits=3):
        return "NA" if value is None else f"{value:.{digits}f}"

    print(
        "\t".join(
            [
                show(tps, 2),
                show(latency),
                show(None if p99 is None else p99 / 1000.0),
                show(txns, 0),
                show(failed, 0),
                str(aborted),
            ]
        )
    )


def read_records(path):
    """Rows of a TSV whose first line names the columns."""
    with open(path) as tsv:
        lines = [line.rstrip("\n").split("\t") for line in tsv if line.strip()]
    header, rows = lines[0], lines[1:]
    return [dict(zip(header, row)) for row in rows]


def as_float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def ratio(numerator, denominator):
    if numerator is None or not denominator:
        return "—"
    return f"{numerator / denominator:.2f}×"


def run_table(path):
    records = read_records(path)
    groups = OrderedDict()
    for record in records:
        groups.setdefault(record["workload"], defaultdict(list))[record["target"]].append(record)

    print(
        "| workload | target | TPS (median) | TPS min–max | avg latency ms (median) | p99 ms (median) "
        "| failed / aborted clients | rounds | LG/PgB TPS | LG/direct TPS | LG/PgB p99 |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for workload, by_target in groups.items():
        summary = {}
        for target in TARGETS:
            rows = by_target.get(target)
            if not rows:
                continue
            tps = [as_float(r["tps"]) for r in rows]
            present = [t for t in tps if t is not None]
            summary[target] = {
                "tps": median(tps),
                "min": min(present) if present else None,
                "max": max(present) if present else None,
                "latency": median([as_float(r["lat_avg_ms"]) for r in rows]),
                "p99": median([as_float(r["p99_ms"]) for r in rows]),
                "failed": sum(int(as_float(r["failed"]) or 0) for r in rows),
                "aborted": sum(int(as_float(r["aborted"]) or 0) for r in rows),
                "bad_exit": sum(1 for r in rows if r["exit"] != "0"),
                "rounds": len(rows),
            }
        lg = summary.get("lifeguard", {})
        pgb = summary.get("pgbouncer", {})
        direct = summary.get("direct", {})
        first = True
        for target in TARGETS:
            if target not in summary:
                continue
            s = summary[target]
            errors = f"{s['failed']} / {s['aborted']}"
            if s["bad_exit"]:
                errors += f" (pgbench exit≠0 in {s['bad_exit']})"
            cells = [
                workload if first else "",
                target,
                fmt(s["tps"]),
                f"{fmt(s['min'])}–{fmt(s['max'])}",
                fmt(s["latency"], 2),
                fmt(s["p99"], 2),
                errors,
                str(s["rounds"]),
            ]
            if first:
                cells += [
                    ratio(lg.get("tps"), pgb.get("tps")),
                    ratio(lg.get("tps"), direct.get("tps")) if direct else "n/a",
                    ratio(lg.get("p99"), pgb.get("p99")),
                ]
            else:
                cells += ["", "", ""]
            print("| " + " | ".join(cells) + " |")
            first = False


def tls_table(path):
    """Each tls-X workload against its plain twin X in the same run, per target: median TPS and p99, TLS/plain."""
    by = defaultdict(list)
    order = []
    for record in read_records(path):
        by[(record["workload"], record["target"])].append(record)
        if record["workload"].startswith("tls-") and record["workload"] not in order:
            order.append(record["workload"])
    if not order:
        print("No tls-* workload ran.")
        return

    def medians(workload, target):
        rows = by.get((workload, target), [])
        if not rows:
            return None, None
        return median([as_float(r["tps"]) for r in rows]), median([as_float(r["p99_ms"]) for r in rows])

    print(
        "| workload | target | plain TPS | TLS TPS | TLS/plain TPS | plain p99 ms | TLS p99 ms | TLS/plain p99 "
        "| TLS: LG/PgB TPS | TLS: LG/direct TPS |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for workload in order:
        plain = workload[len("tls-"):]
        lg_tps, _ = medians(workload, "lifeguard")
        pgb_tps, _ = medians(workload, "pgbouncer")
        direct_tps, _ = medians(workload, "direct")
        first = True
        for target in TARGETS:
            tls_tps, tls_p99 = medians(workload, target)
            if tls_tps is None and tls_p99 is None:
                continue
            plain_tps, plain_p99 = medians(plain, target)
            cells = [
                f"{workload} vs {plain}" if first else "",
                target,
                fmt(plain_tps),
                fmt(tls_tps),
                ratio(tls_tps, plain_tps),
                fmt(plain_p99, 2),
                fmt(tls_p99, 2),
                ratio(tls_p99, plain_p99),
            ]
            if first:
                cells += [ratio(lg_tps, pgb_tps), ratio(lg_tps, direct_tps) if direct_tps else "n/a"]
            else:
                cells += ["", ""]
            print("| " + " | ".join(cells) + " |")
            first = False


def errors(path):
    records = read_records(path)
    seen = OrderedDict()
    for record in records:
        err_path = record.get("stderr")
        if not err_path or not os.path.exists(err_path):
            continue
        for line in open(err_path):
            line = line.strip()
            if not line or line.startswith("pgbench: warning") and "log" in line:
                continue
            # Client numbers differ from line to line; the message is what matters.
            key = (record["workload"], record["target"], re.sub(r"client \d+", "client N", line))
            seen[key] = seen.get(key, 0) + 1
    if not seen:
        print("pgbench printed no errors.")
        return
    print("| workload | target | count | pgbench stderr (client numbers replaced by N) |")
    print("|---|---|--:|---|")
    for (workload, target, line), count in seen.items():
        print(f"| {workload} | {target} | {count} | `{line.replace('|', '/')}` |")


def scrape_stats(paths):
    values = []
    for path in paths:
        with open(path) as f:
            values += [float(line) for line in f if line.strip()]
    if not values:
        print("0\tNA\tNA\tNA")
        return
    print(
        f"{len(values)}\t{percentile(values, 0.5) * 1000:.3f}\t{percentile(values, 0.99) * 1000:.3f}\t"
        f"{max(values) * 1000:.3f}"
    )


def scrape_table(path):
    records = read_records(path)
    by_rate = OrderedDict()
    for record in records:
        by_rate.setdefault(record["rate"], []).append(record)
    baseline = median([as_float(r["tps"]) for r in by_rate.get("0", [])])
    print(
        "| scrapes/s | TPS (median) | TPS min–max | TPS vs no scraping | scrapes | scrape p50 ms | scrape p99 ms "
        "| scrape max ms | failed scrapes | rounds |"
    )
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for rate, rows in by_rate.items():
        tps = [as_float(r["tps"]) for r in rows]
        present = [t for t in tps if t is not None]
        # Percentiles over all scrapes of all rounds at this rate, not medians of per-round percentiles.
        files = [r["latencies"] for r in rows if r.get("latencies") and os.path.exists(r["latencies"])]
        lat = []
        for f in files:
            lat += [float(line) for line in open(f) if line.strip()]
        p50 = percentile(lat, 0.5)
        p99 = percentile(lat, 0.99)
        mx = max(lat) if lat else None
        failed = sum(int(as_float(r.get("scrape_failures")) or 0) for r in rows)
        print(
            f"| {rate} | {fmt(median(tps))} | {fmt(min(present) if present else None)}–"
            f"{fmt(max(present) if present else None)} | {ratio(median(tps), baseline)} | {len(lat)} "
            f"| {fmt(None if p50 is None else p50 * 1000, 2)} | {fmt(None if p99 is None else p99 * 1000, 2)} "
            f"| {fmt(None if mx is None else mx * 1000, 2)} | {failed} | {len(rows)} |"
        )


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[1], argv[2:]
    if command == "pgbench" and len(args) == 3:
        parse_pgbench(*args)
    elif command == "run-table" and len(args) == 1:
        run_table(args[0])
    elif command == "errors" and len(args) == 1:
        errors(args[0])
    elif command == "tls-table" and len(args) == 1:
        tls_table(args[0])
    elif command == "scrape":
        scrape_stats(args)
    elif command == "scrape-table" and len(args) == 1:
        scrape_table(args[0])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
