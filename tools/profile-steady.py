#!/usr/bin/env python3
"""Per-step kernel time by op type from the ORT profiles of a profiled bench, without the warm-up.

mixlora-bench --profile PREFIX writes PREFIX*.json (one file per session: grad step, optimizer norm and
update). mixlora-bench prints totals over every run, warm-up and first-call JIT included; this keeps each
node's last STEPS runs and prints ms per step by op type.
usage: tools/profile-steady.py PREFIX [STEPS=20] [TOP=12]
"""
import collections, glob, json, sys

prefix = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
top = int(sys.argv[3]) if len(sys.argv) > 3 else 12
runs = collections.defaultdict(list)
for f in glob.glob(prefix + "*.json"):
    for e in json.load(open(f)):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            runs[(f, e["name"])].append(e)
by_op = collections.Counter()
for (_, name), events in runs.items():
    events.sort(key=lambda e: e["ts"])
    last = events[-steps:]
    by_op[last[0]["args"]["op_name"]] += sum(e["dur"] for e in last) / len(last) / 1000
print(f"{prefix}: {sum(by_op.values()):.2f} ms of kernel time per step (last {steps} runs of each node)")
for op, ms in by_op.most_common(top):
    print(f"  {op:28s} {ms:7.3f} ms")
