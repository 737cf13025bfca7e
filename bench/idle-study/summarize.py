#!/usr/bin/env python3
"""Markdown table from ./run's result lines (default /tmp/idle-study.txt): one row per mode, client kind and N."""
import collections
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/idle-study.txt"
groups = collections.OrderedDict()
for line in open(path):
    f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    if "kb_per_conn" not in f:
        continue
    key = (f["mode"], f["kind"], int(f["n"]))
    groups.setdefault(key, []).append((float(f["kb_per_conn"]), float(f["heap_bytes_per_conn"])))

print("| mode | clients | N | runs | kB RSS / conn (mean) | min–max | malloc'd bytes / conn (mean) |")
print("|---|---|--:|--:|--:|--:|--:|")
for (mode, kind, n), rows in groups.items():
    kb = [r[0] for r in rows]
    heap = [r[1] for r in rows]
    print(
        f"| {mode} | {kind} | {n} | {len(rows)} | {sum(kb) / len(kb):.2f} | {min(kb):.2f}–{max(kb):.2f} "
        f"| {sum(heap) / len(heap):.0f} |"
    )

# Marginal cost: the slope between N=1000 and N=10000 (fixed costs such as code pages touched once cancel out).
print()
print("| mode | clients | marginal kB RSS / conn, 1000→10000 | marginal malloc'd bytes / conn |")
print("|---|---|--:|--:|")
for (mode, kind) in dict.fromkeys((m, k) for (m, k, _) in groups):
    lo, hi = groups.get((mode, kind, 1000)), groups.get((mode, kind, 10000))
    if not lo or not hi:
        continue
    mean = lambda rows, i: sum(r[i] for r in rows) / len(rows)
    kb = (mean(hi, 0) * 10000 - mean(lo, 0) * 1000) / 9000
    heap = (mean(hi, 1) * 10000 - mean(lo, 1) * 1000) / 9000
    print(f"| {mode} | {kind} | {kb:.2f} | {heap:.0f} |")
