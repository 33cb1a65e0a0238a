#!/usr/bin/env bash
# Runs mixlora-bench for MixLoRA and LoRA on the CPU, tiny shape and a mid-size shape ("small": hidden 256,
# 4 layers, vocab 8000, seq 256, batch 4), REPEAT times each (interleaved), and prints the per-run JSON
# and the ratio of median step times (MixLoRA / LoRA, the median over the repeats).
# usage: tools/bench-cpu.sh [REPEAT=3] [extra mixlora-bench flags...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
repeat=${1:-3}
shift || true
bench() {
  if [ -x "$root/bin/mixlora-bench" ]; then "$root/bin/mixlora-bench" "$@"
  elif [ -f "$root/artifacts/bin/Cli/release_linux-x64/MixLoRA.Cli.dll" ]; then dotnet "$root/artifacts/bin/Cli/release_linux-x64/MixLoRA.Cli.dll" bench "$@"
  else dotnet "$root/artifacts/bin/Cli/debug_linux-x64/MixLoRA.Cli.dll" bench "$@"; fi
}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for config in tiny small; do
  steps=20; [ "$config" = small ] && steps=8
  for i in $(seq "$repeat"); do
    for method in mixlora lora; do
      bench --config "$config" --method "$method" --device cpu --steps "$steps" --warmup 3 --quiet "$@" | tee -a "$out/$config-$method.jsonl"
    done
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys, pathlib
d = pathlib.Path(sys.argv[1])
for config in ("tiny", "small"):
    ms = {}
    for m in ("mixlora", "lora"):
        runs = [json.loads(l) for l in (d / f"{config}-{m}.jsonl").read_text().splitlines()]
        ms[m] = statistics.median(r["ms_per_step_median"] for r in runs)
        r = runs[0]
        print(f"{config:6} {m:8} seq {r['seq_len']} batch {r['batch']}: {ms[m]:9.2f} ms/step  "
              f"{r['tokens_per_step'] / ms[m] * 1000:10.0f} tok/s  trainable {r['trainable_params']:,}  "
              f"peak {r['peak_memory_gib']:.2f} GiB")
    print(f"{config:6} mixlora / lora step time: {ms['mixlora'] / ms['lora']:.2f}x")
PY
