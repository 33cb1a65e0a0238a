"""Reference training throughput: MixLoRA (TUDB-Labs reference layers) and PEFT LoRA, PyTorch eager.
Random-weight LLaMA-architecture model, bf16 base, fixed batch of random tokens; prints tokens/s and peak memory.
Extended from shared/perf/ref_bench.py (issue 19): with --lengths alpaca|arc|FILE each step takes the next --batch
records of those lengths (the same fixed sequence as mixlora-bench --lengths), padded to the step's longest record as
the authors' trainer pads, with the attention mask and the loss on real tokens; prints real_tokens_per_s."""
import argparse, json, math, time, torch, torch.nn.functional as F
p = argparse.ArgumentParser()
p.add_argument("--method", choices=["mixlora", "lora"], default="mixlora")
p.add_argument("--hidden", type=int, default=2048); p.add_argument("--inter", type=int, default=5632)
p.add_argument("--layers", type=int, default=22); p.add_argument("--heads", type=int, default=32)
p.add_argument("--kv", type=int, default=4); p.add_argument("--vocab", type=int, default=32000)
p.add_argument("--seq", type=int, default=512); p.add_argument("--batch", type=int, default=8)
p.add_argument("--r", type=int, default=16); p.add_argument("--experts", type=int, default=8); p.add_argument("--topk", type=int, default=2)
p.add_argument("--adapter-dtype", default="float32"); p.add_argument("--steps", type=int, default=10)
p.add_argument("--attn", default="sdpa")
p.add_argument("--lengths", default=None, help="alpaca | arc | JSONL file (input_ids or length per line)")
a = p.parse_args()
torch.manual_seed(0)
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.inter, num_hidden_layers=a.layers,
                  num_attention_heads=a.heads, num_key_value_heads=a.kv, max_position_embeddings=4096)
with torch.device("cuda"):
    model = LlamaForCausalLM._from_config(cfg, attn_implementation=a.attn, torch_dtype=torch.bfloat16)
for t in model.parameters(): t.requires_grad_(False)
adt = getattr(torch, a.adapter_dtype)
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
if a.method == "mixlora":
    from mixlora.config import MixLoraConfig
    from mixlora.model import inject_adapter_in_model
    ac = {"bias": "none", "peft_type": "MIXLORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "x",
          "r": a.r, "lora_alpha": 2 * a.r, "lora_dropout": 0.05, "target_modules": targets, "routing_strategy": "mixlora",
          "num_experts": a.experts, "top_k": a.topk, "act_fn": "silu"}
    mc = MixLoraConfig.from_config(ac); mc.adapter_name_ = "default"; mc.dtype_ = adt; mc.check()
    W = {}
    for i, layer in enumerate(model.model.layers):
        for pn in ["q_proj", "k_proj", "v_proj", "o_proj"]:
            w = getattr(layer.self_attn, pn).weight
            W[f"mixlora.layers.{i}.self_attn.{pn}.lora_A.weight"] = torch.randn(a.r, w.shape[1], device="cuda") * 0.01
            W[f"mixlora.layers.{i}.self_attn.{pn}.lora_B.weight"] = torch.zeros(w.shape[0], a.r, device="cuda")
        W[f"mixlora.layers.{i}.mlp.moe_gate.weight"] = torch.randn(a.experts, a.hidden, device="cuda") * 0.02
        for pn in ["gate_proj", "up_proj", "down_proj"]:
            w = getattr(layer.mlp, pn).weight
            for e in range(a.experts):
                W[f"mixlora.layers.{i}.mlp.{pn}.experts.{e}.lora_A.weight"] = torch.randn(a.r, w.shape[1], device="cuda") * 0.01
                W[f"mixlora.layers.{i}.mlp.{pn}.experts.{e}.lora_B.weight"] = torch.zeros(w.shape[0], a.r, device="cuda")
    inject_adapter_in_model(model, mc, W)
    params = []
    for layer in model.model.layers:
        for pn in ["q_proj", "k_proj", "v_proj", "o_proj"]:
            ll = getattr(layer.self_attn, pn); params += [ll.lora_A.weight, ll.lora_B.weight]
        moe = layer.mlp.mixlora_moes["default"]
        moe.gate_ = torch.nn.Parameter(moe.gate_.detach().clone()); params.append(moe.gate_)
        for ll in moe.experts_.values(): params += [ll.lora_A.weight, ll.lora_B.weight]
    for t in params: t.requires_grad_(True)
else:
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=a.r, lora_alpha=2 * a.r, lora_dropout=0.05, target_modules=targets))
    params = [t for t in model.parameters() if t.requires_grad]
    for t in params: t.data = t.data.to(adt)
model.train()
ntrain = sum(t.numel() for t in params)
opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
ids = torch.randint(3, a.vocab, (a.batch, a.seq), device="cuda")
BINS = {"alpaca": [(50, 100, 0.25), (100, 150, 0.25), (150, 200, 0.17), (200, 300, 0.18), (300, 400, 0.10), (400, 600, 0.05)],
        "arc": [(60, 80, 0.30), (80, 100, 0.40), (100, 120, 0.30)]}
def length(i):  # LengthDistribution.Length in src/Cli/Bench: quantile frac((i+1)*phi) of the histogram, floored, cut at --seq
    if file_lengths: return min(file_lengths[i % len(file_lengths)], a.seq)
    u, cum, bins = ((i + 1) * 0.6180339887498949) % 1.0, 0.0, BINS[a.lengths]
    total = sum(w for _, _, w in bins)
    for lo, hi, w in bins:
        if u < cum + w / total: return min(lo + math.floor((u - cum) / (w / total) * (hi - lo)), a.seq)
        cum += w / total
    return min(bins[-1][1] - 1, a.seq)
file_lengths = None
if a.lengths and a.lengths not in BINS:
    file_lengths = [len(r["input_ids"]) if "input_ids" in r else int(r["length"]) for r in map(json.loads, filter(str.strip, open(a.lengths)))]
record, real = 0, 0
def step():
    global record, real
    if a.lengths:
        n = [length(record + j) for j in range(a.batch)]; record += a.batch; real = sum(n)
        T = max(n); x = torch.randint(3, a.vocab, (a.batch, T), device="cuda")
        mask = torch.tensor([[1] * k + [0] * (T - k) for k in n], device="cuda")
        labels = x.masked_fill(mask == 0, -100)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=x, attention_mask=mask).logits
        loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, a.vocab), labels[:, 1:].reshape(-1), ignore_index=-100)
    else:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=ids).logits
        loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, a.vocab), ids[:, 1:].reshape(-1))
        real = a.batch * a.seq
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    return loss
for _ in range(3): step()
torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter(); real_total = 0
for _ in range(a.steps): l = step(); real_total += real
torch.cuda.synchronize(); dt = time.perf_counter() - t0
tok = a.batch * a.seq * a.steps
print(json.dumps({"method": a.method, "hidden": a.hidden, "layers": a.layers, "seq": a.seq, "batch": a.batch, "r": a.r,
  "experts": a.experts, "topk": a.topk, "trainable": ntrain, "tokens_per_s": round(tok / dt, 1),
  "ms_per_step": round(1000 * dt / a.steps, 2), "lengths": a.lengths, "real_tokens_per_s": round(real_total / dt, 1), "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "loss": float(l)}))
