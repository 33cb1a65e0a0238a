#!/usr/bin/env python3
"""Reference cases for the model families (issue 18), made with transformers + PEFT on the device image.

For each family: a tiny random-weight checkpoint (config.json as transformers writes it, model.safetensors),
six pre-tokenized records, the fp32 logits of one right-padded batch of them (eager attention), and three
PEFT LoRA training steps (AdamW) from PEFT's own saved, randomly initialised adapter: the per-step losses
and the final adapter. Usage: python3 tools/make-family-cases.py OUT_DIR  (then tar OUT_DIR).
"""
import json, os, sys, copy
import torch
import transformers
from transformers import AutoModelForCausalLM
from safetensors.torch import save_file
import peft

OUT = sys.argv[1]
V, D, F, L, H, KV = 128, 32, 64, 2, 4, 2
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


def cfgs():
    from transformers import (Qwen3Config, Gemma2Config, Gemma3TextConfig, Phi3Config, LlamaConfig)
    common = dict(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H,
                  num_key_value_heads=KV, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    yield "qwen3", lambda: Qwen3Config(**common, head_dim=16, tie_word_embeddings=True, rms_norm_eps=1e-6, rope_theta=10000.0), ATTN + MLP
    yield "gemma2", lambda: Gemma2Config(**common, head_dim=8, query_pre_attn_scalar=12, attn_logit_softcapping=2.0,
                                 final_logit_softcapping=3.0, sliding_window=4, hidden_activation="gelu_pytorch_tanh",
                                 rms_norm_eps=1e-6, rope_theta=10000.0), ATTN + MLP
    g3 = dict(common)
    yield "gemma3_text", lambda: Gemma3TextConfig(**g3, head_dim=8, query_pre_attn_scalar=12, sliding_window=4,
                                          layer_types=["sliding_attention", "full_attention"], rope_theta=1000000.0,
                                          rope_local_base_freq=10000.0, rms_norm_eps=1e-6), ATTN + MLP
    hd = D // H
    yield "phi3", lambda: Phi3Config(**common, partial_rotary_factor=0.5, original_max_position_embeddings=64,
                             rope_scaling={"type": "longrope", "short_factor": [1.0 + 0.25 * i for i in range(hd // 4)],
                                           "long_factor": [1.5 + 0.5 * i for i in range(hd // 4)]},
                             tie_word_embeddings=False, rms_norm_eps=1e-5, rope_theta=10000.0), ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    yield "llama3", lambda: LlamaConfig(**common, head_dim=8, tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=500000.0,
                                rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                              "original_max_position_embeddings": 16}), ATTN + MLP


def records():
    g = torch.Generator().manual_seed(5)
    out = []
    for i, n in enumerate([12, 11, 9, 12, 10, 7]):
        ids = [1] + torch.randint(3, V, (n - 1,), generator=g).tolist()
        cut = 3 + i % 3
        out.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:]})
    return out


def batch(recs):
    T = max(len(r["input_ids"]) for r in recs)
    ids = torch.zeros(len(recs), T, dtype=torch.long)
    mask = torch.zeros(len(recs), T, dtype=torch.long)
    lab = torch.full((len(recs), T), -100, dtype=torch.long)
    for i, r in enumerate(recs):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"]); mask[i, :n] = 1; lab[i, :n] = torch.tensor(r["labels"])
    return ids, mask, lab


def randomise(model, family):
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                base = 0.0 if family.startswith("gemma") else 1.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=g))


def main():
    torch.manual_seed(0)
    recs = records()
    summary = {"transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__}
    for family, cfg, targets in cfgs():
        try:
            case(family, cfg, targets, recs, summary)
        except Exception as e:  # one family's failure must not hide the others
            import traceback; traceback.print_exc()
            summary[family] = {"error": repr(e)}
    with open(os.path.join(OUT, "summary.json"), "w") as f: json.dump(summary, f, indent=1)


def case(family, make, targets, recs, summary):
    cfg = make()
    if True:
        d = os.path.join(OUT, family)
        os.makedirs(os.path.join(d, "expected"), exist_ok=True)
        cfg._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
        randomise(model, family)
        model.save_pretrained(os.path.join(d, "model"), safe_serialization=True)
        with open(os.path.join(d, "data.jsonl"), "w") as f:
            for r in recs: f.write(json.dumps(r) + "\n")
        ids, mask, lab = batch(recs)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        save_file({"input_ids": ids, "attention_mask": mask, "logits": logits.contiguous()}, os.path.join(d, "expected", "logits_base.safetensors"))

        # LoRA: PEFT's own random init (B nonzero), saved, then 3 AdamW steps of 2 records each, in order
        lcfg = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM")
        torch.manual_seed(3)
        pm = peft.get_peft_model(model, lcfg)
        pm.save_pretrained(os.path.join(d, "adapter_init"), safe_serialization=True)
        train = {"batch_size": 2, "steps": 3, "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
                 "shuffle": False, "lr_schedule": "constant", "dtype": "float32"}
        opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=train["lr"], betas=tuple(train["betas"]),
                                eps=train["eps"], weight_decay=train["weight_decay"])
        pm.train()
        losses = []
        for step in range(train["steps"]):
            part = [recs[(step * 2 + j) % len(recs)] for j in range(2)]
            bi, bm, bl = batch(part)
            out = pm(input_ids=bi, attention_mask=bm, labels=bl)
            losses.append({"step": step, "loss": out.loss.item()})
            opt.zero_grad(); out.loss.backward(); opt.step()
        pm.save_pretrained(os.path.join(d, "adapter_final"), safe_serialization=True)
        with open(os.path.join(d, "expected", "losses.json"), "w") as f: json.dump(losses, f, indent=1)
        with open(os.path.join(d, "train.json"), "w") as f: json.dump(train, f, indent=1)
        summary[family] = {"losses": [l["loss"] for l in losses], "logits_absmax": logits.abs().max().item()}
        print(family, summary[family], flush=True)


if __name__ == "__main__":
    main()
