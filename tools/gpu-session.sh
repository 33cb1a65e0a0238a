#!/usr/bin/env bash
# One GPU session on the device machine (after ../shared/device/stage.sh pieces are in place):
# smoke checks, CUDA parity training (fp32/bf16), then benchmarks. Results go to $OUT (log.txt,
# bench.jsonl, metrics-*.jsonl, probe.txt, ncu.txt). usage: bash tools/gpu-session.sh [smoke|kernels|parity|bench|graph|lengths|packed-parity|jobs|methods|ortchecks|strict|probe|ncu|nccl]...
set -uo pipefail
source /root/mixlora/env.sh
APP=${APP_DIR:-$APP}   # APP_DIR: another published build staged beside the app piece; TAG names its result files
T="$DOTNET $APP/MixLoRA.Cli.dll"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/log.txt"; }
run() { timeout "${LIMIT:-240}" "$@" >> "$OUT/log.txt" 2>&1; local rc=$?; echo "   rc=$rc" >> "$OUT/log.txt"; return $rc; }
parts=("$@"); [ ${#parts[@]} -eq 0 ] && parts=(smoke parity bench)
for part in "${parts[@]}"; do
  case $part in
    smoke) log smoke; run $T doctor --device cuda --smoke ;;
    kernels) log "fused kernels vs the CPU kernel"; run $T doctor --device cuda --kernels ;;
    parity)
      for dt in float32 bfloat16; do
        log "parity $dt"
        run $T build-graph --model .dev/parity/model --adapter .dev/parity/adapter_init --out /tmp/a-$dt --seq-len 64 --micro-batch-size 2 --dtype $dt --device cuda &&
        run $T train --artifacts /tmp/a-$dt --data .dev/parity/data.jsonl --out /tmp/r-$dt --batch-size 2 --steps 3 --lr 0.01 --weight-decay 0.01 --no-shuffle --device cuda --quiet
        cp /tmp/r-$dt/metrics.jsonl "$OUT/metrics-$dt${TAG:-}.jsonl" 2>/dev/null
      done ;;
    bench)
      IFS='|' read -ra cases <<< "${BENCH:-tinyllama-1.1b mixlora|tinyllama-1.1b lora|llama2-7b mixlora|llama2-7b lora}"
      for c in "${cases[@]}"; do
        set -- $c
        log "bench $c"
        LIMIT=420 run $T bench --config "$1" --method "$2" --device cuda --dtype bfloat16 --steps "${STEPS:-8}" --warmup 3 ${BENCH_EXTRA:-} --quiet
        grep '^{' "$OUT/log.txt" | tail -1 >> "$OUT/bench${TAG:-}.jsonl"
      done ;;
    bisect)
      log bisect
      run $T build-graph --model .dev/parity/model --adapter .dev/parity/adapter_init --out /tmp/pb --seq-len 64 --micro-batch-size 2 --dtype ${DT:-float32} --device cuda
      skip=""
      for g in eval_step grad_step grad_accum_step; do
        for i in 1 2 3 4 5 6; do
          MIXLORA_BISECT_SKIP=$skip timeout 200 $T doctor --device cuda --graph /tmp/pb/$g.onnx --per-node > /tmp/bisect.txt 2>&1 && break
          bad=$(grep -a '^node ' /tmp/bisect.txt | grep -av ' ok$' | tail -1 | awk '{print $2}')
          echo "   $g: crash in $bad" | tee -a "$OUT/log.txt"; [ -z "$bad" ] && break; skip="$skip,$bad"
        done
      done
      echo "   crashing ops: $skip" | tee -a "$OUT/log.txt" ;;
    prefix)
      log "prefix bisection of ${G:-eval_step}"
      run $T build-graph --model .dev/parity/model --adapter .dev/parity/adapter_init --out /tmp/pb --seq-len 64 --micro-batch-size 2 --dtype ${DT:-float32} --device cuda
      lo=1; hi=$(grep -ac . /dev/null); hi=${N:-2000}
      while [ $((hi - lo)) -gt 1 ]; do
        mid=$(( (lo + hi) / 2 ))
        if timeout 60 $T doctor --device cuda --graph /tmp/pb/${G:-eval_step}.onnx --prefix $mid > /tmp/p.txt 2>&1; then lo=$mid; else hi=$mid; fi
        grep -a '^prefix' /tmp/p.txt | tail -1 >> "$OUT/log.txt"
      done
      echo "   first crashing prefix: $hi" | tee -a "$OUT/log.txt"
      timeout 60 $T doctor --device cuda --graph /tmp/pb/${G:-eval_step}.onnx --prefix $hi 2>&1 | grep -a '^prefix' | tee -a "$OUT/log.txt" ;;
    graph)
      # the grad step replayed as a CUDA graph (--cuda-graph, needs lora dropout 0): fp32 training parity,
      # then each shape with and without replay
      log "parity float32 --cuda-graph"
      run $T build-graph --model .dev/parity/model --adapter .dev/parity/adapter_init --out /tmp/a-graph --seq-len 64 --micro-batch-size 2 --dtype float32 --device cuda &&
      run $T train --artifacts /tmp/a-graph --data .dev/parity/data.jsonl --out /tmp/r-graph --batch-size 2 --steps 3 --lr 0.01 --weight-decay 0.01 --no-shuffle --device cuda --quiet --cuda-graph
      cp /tmp/r-graph/metrics.jsonl "$OUT/metrics-float32-graph.jsonl" 2>/dev/null
      IFS='|' read -ra cases <<< "${BENCH:-tinyllama-1.1b mixlora|llama2-7b mixlora}"
      for c in "${cases[@]}"; do
        for g in "" --cuda-graph; do
          set -- $c
          log "bench $c --dropout 0 $g"
          LIMIT=420 run $T bench --config "$1" --method "$2" --device cuda --dtype bfloat16 --steps "${STEPS:-8}" --warmup 3 --dropout 0 $g --quiet
          grep '^{' "$OUT/log.txt" | tail -1 >> "$OUT/bench.jsonl"
        done
      done ;;
    lengths)
      # issue 19: real-length records (--lengths, default the alpaca histogram) at seq 2048, full rows / padded / packed,
      # then the same records through the authors' reference (tools/ref_bench.py; their package in .dev/refpkg, carried)
      IFS='|' read -ra cases <<< "${LEN_BENCH:-tinyllama-1.1b mixlora 4 8|llama2-7b mixlora 1 4}"
      for c in "${cases[@]}"; do
        set -- $c
        log "bench $1 $2 seq ${LEN_SEQ:-2048} rows $3 --lengths ${LENGTHS:-alpaca}"
        LIMIT=500 run $T bench --config "$1" --method "$2" --device cuda --dtype bfloat16 --seq-len "${LEN_SEQ:-2048}" --batch "$3" \
          --lengths "${LENGTHS:-alpaca}" --steps "${STEPS:-6}" --warmup 2 --quiet
        grep '^{' "$OUT/log.txt" | tail -1 >> "$OUT/lengths.jsonl"
        shape=""; [ "$1" = llama2-7b ] && shape="--hidden 4096 --inter 11008 --layers 32 --heads 32 --kv 32"
        log "reference $1 $2 batch $4 --lengths ${LENGTHS:-alpaca}"
        PYTHONPATH=.dev/refpkg LIMIT=400 run python3 tools/ref_bench.py --method "$2" $shape --seq "${LEN_SEQ:-2048}" --batch "$4" \
          --lengths "${LENGTHS:-alpaca}" --steps "${STEPS:-6}"
        grep '^{' "$OUT/log.txt" | tail -1 >> "$OUT/lengths.jsonl"
      done ;;
    jobs)
      # issue 21: N adapters at once over one base (bench --jobs), 1 and 4 jobs of the same shape
      for n in ${JOBS_N:-1 4}; do
        log "bench ${JOBS_CONFIG:-llama2-7b} mixlora --jobs $n ${JOBS_EXTRA:-}"
        LIMIT=500 run $T bench --config "${JOBS_CONFIG:-llama2-7b}" --method mixlora --device cuda --dtype bfloat16 --jobs "$n" --steps "${STEPS:-6}" --warmup 2 --quiet ${JOBS_EXTRA:-}
        grep '^{' "$OUT/log.txt" | tail -1 >> "$OUT/jobs.jsonl"
      done ;;
    methods)
      # issue 22: each LoRA-MoE method trains 3 steps of the parity case on CUDA (fp32) and on the CPU, then its bench row
      for m in ${METHODS:-mixlora-switch loramoe mola hydralora}; do
        python3 - "$m" /tmp/cfg-$m <<'PY'
import json, os, sys
m, d = sys.argv[1], sys.argv[2]; os.makedirs(d, exist_ok=True)
base = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
extra = {"mixlora-switch": {"peft_type": "MIXLORA", "routing_strategy": "mixlora-switch", "num_experts": 4, "jitter_noise": 0.0},
         "loramoe": {"peft_type": "LORAMOE", "num_experts": 4}, "mola": {"peft_type": "MOLA", "num_experts": 4, "top_k": 2, "router_loss": True},
         "hydralora": {"peft_type": "HYDRALORA", "num_experts": 3}}[m]
json.dump({**base, **extra}, open(f"{d}/adapter_config.json", "w"))
PY
        for dev in cpu cuda; do
          log "method $m on $dev"
          run $T build-graph --model .dev/parity/model --adapter /tmp/cfg-$m --out /tmp/a-$m-$dev --seq-len 64 --micro-batch-size 2 --dtype float32 --device $dev &&
          run $T train --artifacts /tmp/a-$m-$dev --data .dev/parity/data.jsonl --out /tmp/r-$m-$dev --batch-size 2 --steps 3 --lr 0.01 --no-shuffle --device $dev --quiet
          cp /tmp/r-$m-$dev/metrics.jsonl "$OUT/metrics-$m-$dev.jsonl" 2>/dev/null
        done
        log "bench tinyllama-1.1b $m"
        LIMIT=300 run $T bench --config tinyllama-1.1b --method "$m" --device cuda --dtype bfloat16 --steps "${STEPS:-6}" --warmup 2 --quiet
        grep '^{' "$OUT/log.txt" | tail -1 >> "$OUT/methods.jsonl"
      done ;;
    packed-parity)
      # issue 19: the parity case trained --packing on CUDA (fp32) against the reference's losses
      log "packed parity float32"
      run $T build-graph --model .dev/parity/model --adapter .dev/parity/adapter_init --out /tmp/a-pk --seq-len 64 --micro-batch-size 2 --dtype float32 --device cuda &&
      run $T train --artifacts /tmp/a-pk --data .dev/parity/data.jsonl --out /tmp/r-pk --batch-size 2 --steps 3 --lr 0.01 --weight-decay 0.01 --no-shuffle --device cuda --quiet --packing
      cp /tmp/r-pk/metrics.jsonl "$OUT/metrics-packed-float32.jsonl" 2>/dev/null ;;
    nccl)
      # issue 23: data parallelism through NCCL. The device machines need NVLink multicast off: the launcher (this
      # script) sets NCCL_NVLS_ENABLE=0 unless it is set; the trainer passes NCCL's variables through untouched.
      export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
      log "NCCL collective check (one rank)"; run $T doctor --device cuda --collective
      run $T build-graph --model .dev/parity/model --adapter .dev/parity/adapter_init --out /tmp/a-dp --seq-len 64 --micro-batch-size 1 --dtype float32 --device cuda
      TR="train --artifacts /tmp/a-dp --data .dev/parity/data.jsonl --batch-size 4 --steps 3 --lr 0.01 --weight-decay 0.01 --no-shuffle --device cuda --quiet --overwrite"
      log "parity fp32, plain"; run $T $TR --out /tmp/r-dp-plain
      log "parity fp32, --nproc 1 (NCCL, one rank): must equal the plain run bit for bit"; run $T $TR --out /tmp/r-dp-1 --nproc 1
      gpus=$(nvidia-smi -L | grep -c '^GPU')
      [ "$gpus" -ge 2 ] && { log "parity fp32, --nproc 2 (micro-batches 0,2 / 1,3)"; run $T $TR --out /tmp/r-dp-2 --nproc 2; }
      if [ "$gpus" -ge 2 ]; then
        log "bench ${DP_CASE:-tinyllama-1.1b mixlora} --nproc $gpus"; set -- ${DP_CASE:-tinyllama-1.1b mixlora}
        LIMIT=480 run $T bench --config "$1" --method "$2" --device cuda --dtype bfloat16 --steps "${STEPS:-8}" --warmup 3 --nproc "$gpus" --quiet
        grep '^{' "$OUT/log.txt" | tail -1 >> "$OUT/bench-dp.jsonl"
      fi
      for r in plain 1 2; do cp /tmp/r-dp-$r/metrics.jsonl "$OUT/metrics-dp-$r.jsonl" 2>/dev/null; done
      python3 - /tmp/r-dp-plain /tmp/r-dp-1 /tmp/r-dp-2 <<'PY' | tee -a "$OUT/log.txt"
import json, os, sys
import numpy as np
from safetensors.numpy import load_file
def run(d):
    if not os.path.exists(f"{d}/adapter/adapter_model.safetensors"): return None
    m = [json.loads(l) for l in open(f"{d}/metrics.jsonl") if '"lm_loss"' in l]
    return m, load_file(f"{d}/adapter/adapter_model.safetensors")
base = run(sys.argv[1])
for d in sys.argv[2:]:
    r = run(d)
    if base is None or r is None: print(f"nccl parity {d}: missing run"); continue
    loss = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-30) for a, b in zip(base[0], r[0]) for k in ("lm_loss", "aux_loss", "loss", "grad_norm"))
    num = sum(float(((base[1][k].astype(np.float64) - r[1][k]) ** 2).sum()) for k in base[1])
    den = sum(float((base[1][k].astype(np.float64) ** 2).sum()) for k in base[1])
    same = all(np.array_equal(base[1][k].view(np.uint32), r[1][k].view(np.uint32)) for k in base[1])
    print(f"nccl parity {d}: steps {len(r[0])}/{len(base[0])}, max relative loss/grad-norm difference {loss:.3g}, adapter relative L2 {np.sqrt(num / den):.3g}, bitwise {'equal' if same else 'different'}")
PY
      ;;
    ortchecks) log "ORT 1.29 CUDA failure patterns on this ORT"; run $T doctor --device cuda --ort-checks; grep -a '^ort-check' "$OUT/log.txt" | tail -6 > "$OUT/ortchecks.txt" ;;
    strict)
      # strict placement (session.disable_cpu_ep_fallback) on a real grad step: does ORT still place nodes on the CPU?
      log "strict placement, ${STRICT_CASE:-tinyllama-1.1b mixlora}"
      set -- ${STRICT_CASE:-tinyllama-1.1b mixlora}
      MIXLORA_STRICT_PLACEMENT=1 run $T bench --config "$1" --method "$2" --device cuda --dtype bfloat16 --steps 2 --warmup 1 --quiet ;;
    probe) log probe; run $T doctor --device cuda --ops --dtypes "${DTYPES:-bfloat16,float16}" ;;
    ncu)
      # GPU kernel time of one training step (Nsight Compute, one metric, clocks and caches as found),
      # summed per kernel: ORT's own profile times nodes on the host, not kernels
      log "ncu ${NCU_CASE:-tinyllama-1.1b mixlora}"
      set -- ${NCU_CASE:-tinyllama-1.1b mixlora}
      LIMIT=400 run ncu --target-processes application-only --metrics gpu__time_duration.sum --clock-control none --cache-control none --csv --page raw --print-units base \
        --log-file /tmp/ncu.csv $T bench --config "$1" --method "$2" --device cuda --dtype bfloat16 --steps 1 --warmup 0 --quiet
      python3 "$(dirname "$0")/ncu-summary.py" /tmp/ncu.csv | tee -a "$OUT/ncu.txt" ;;
  esac
done
grep -v '^   at ' "$OUT/log.txt" | cut -c1-300 | tail -60
