#!/usr/bin/env python3
"""Sums Nsight Compute's per-kernel gpu__time_duration (CSV, --page raw) from a log: total GPU kernel time
and the top kernels. usage: ncu-summary.py LOG [TOP=20]"""
import collections, csv, re, sys

lines = open(sys.argv[1], errors="replace").read().splitlines()
starts = [i for i, l in enumerate(lines) if l.startswith('"ID"')]
if not starts:
    sys.exit("no Nsight Compute CSV in " + sys.argv[1])
rows = csv.reader(lines[starts[-1]:])
head = next(rows)
name, dur = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
kernels = []
for r in rows:
    if len(r) <= dur:
        continue
    try:
        ns = float(r[dur].replace(",", ""))
    except ValueError:
        continue
    kernels.append((re.sub(r"\(.*", "", re.sub(r"^void ", "", r[name])).replace("onnxruntime::", ""), ns))
total = sum(ns for _, ns in kernels)
print(f"{len(kernels)} kernels, {total / 1e6:.1f} ms of GPU kernel time")
by = collections.defaultdict(lambda: [0.0, 0])
for k, ns in kernels:
    by[k][0] += ns
    by[k][1] += 1
for k, (ns, n) in sorted(by.items(), key=lambda kv: -kv[1][0])[: int(sys.argv[2]) if len(sys.argv) > 2 else 20]:
    print(f"{ns / 1e6:8.2f} ms {100 * ns / total:5.1f}% {n:6d}x  {k[:100]}")
