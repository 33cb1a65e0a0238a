#!/usr/bin/env bash
# Issue 19's CPU check: 20 steps of 16 records of 8-40 tokens at --seq-len 256, padded (16 rows per step) vs
# --packing (the same records first-fit into rows of 256, 2 rows per micro-batch), MixLoRA on the shared parity
# model (or MODEL=DIR). Prints the median step time of each (from metrics.jsonl: tokens / tokens_per_s, steps 2-20)
# and the ratio. usage: tools/packing-cpu.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${MODEL:-$root/../shared/parity/llama-basic/model}
adapter=${ADAPTER:-$(dirname "$model")/adapter_init}
cli() {
  if [ -f "$root/artifacts/bin/Cli/release_linux-x64/MixLoRA.Cli.dll" ]; then dotnet "$root/artifacts/bin/Cli/release_linux-x64/MixLoRA.Cli.dll" "$@"
  else dotnet "$root/artifacts/bin/Cli/debug_linux-x64/MixLoRA.Cli.dll" "$@"; fi
}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 - "$work/data.jsonl" <<'PY'
import json, random, sys
rng = random.Random(7)
with open(sys.argv[1], "w") as f:
    for _ in range(320):
        n = rng.randint(8, 40); ids = [1] + [rng.randrange(3, 256) for _ in range(n - 1)]
        f.write(json.dumps({"input_ids": ids, "labels": [-100] * 4 + ids[4:]}) + "\n")
PY
cli build-graph --model "$model" --adapter "$adapter" --out "$work/a-padded" --seq-len 256 --micro-batch-size 16 >/dev/null
cli build-graph --model "$model" --adapter "$adapter" --out "$work/a-packed" --seq-len 256 --micro-batch-size 2 >/dev/null
for mode in padded packed; do
  extra=(); [ "$mode" = packed ] && extra=(--packing)
  cli train --artifacts "$work/a-$mode" --data "$work/data.jsonl" --out "$work/r-$mode" --batch-size 16 --steps 20 --no-shuffle --quiet "${extra[@]}"
done
python3 - "$work" <<'PY'
import json, statistics, sys
ms = {}
for mode in ("padded", "packed"):
    lines = [json.loads(l) for l in open(f"{sys.argv[1]}/r-{mode}/metrics.jsonl") if '"lm_loss"' in l]
    ms[mode] = statistics.median(1000 * l["tokens"] / l["tokens_per_s"] for l in lines[1:])
    print(f"{mode}: median step {ms[mode]:.1f} ms, {lines[-1]['tokens']} real tokens per step, last lm_loss {lines[-1]['lm_loss']:.4f}")
print(f"padded / packed step time: {ms['padded'] / ms['packed']:.2f}x")
PY
