using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Models;

/// <summary>
/// Decoder inputs: ids (B, T), attention mask (B, S), position ids (B, T), optional past K/V. With
/// <paramref name="Segments"/> (training graphs, no past) the mask holds each token's record within its row
/// (1, 2, … for packed records, 0 for padding) and a token attends only to earlier tokens of its own record.
/// </summary>
public sealed record DecoderInputs(Value InputIds, Value AttentionMask, Value PositionIds, IReadOnlyList<(Value K, Value V)>? Past = null, bool Segments = false);

/// <summary>Logits (N, V) with N = B·T, final hidden states (N, D), present K/V per layer.</summary>
public sealed record DecoderOutputs(Value Logits, Value Hidden, IReadOnlyList<(Value K, Value V)> Present);

/// <summary>
/// The LLaMA-family decoder (llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3) as transformers computes
/// it, built from primitives. Tokens stay flattened to (N, D) between layers; linears are Gemm with transB on
/// HF [out, in] weights. The family's departures are <see cref="ModelConfig"/> flags: [·] marks them below.
/// <code>
/// ids ─embed[·√D]─┬─ norm ─ attn(q,k,v[qkv],[q/k norm], RoPE[partial], [softcap]) ─[norm]─(+)─┐
///                 └───────────────────────────────────────────────────────────────────┘      │
///      ┌─────────────────────────────────────────────────────────────────────────────────┘
///      └─┬─ norm ─ MLP (act(gate)·up [gate_up]) or adapter MoE ─[norm]─(+)─ … ─ norm ─ lm_head ─[softcap]
///        └────────────────────────────────────────────────────────┘
/// </code>
/// Norms are RMSNorm, with weight (1 + w) for Gemma.
/// </summary>
public sealed class Decoder(ModelConfig cfg, IWeightSource weights, IAdapter? adapter = null)
{
    private readonly IAdapter _adapter = Checked(cfg, adapter ?? NoAdapter.Instance);
    private Value? _ids;                                                                   // input ids of the call being built (run-time B, T)

    public ModelConfig Config => cfg;

    /// <summary>An adapter whose targets this model has: a target it lacks would silently train nothing.</summary>
    private static IAdapter Checked(ModelConfig cfg, IAdapter adapter)
    {
        IReadOnlyList<Adapters.AdapterGraph> graphs = adapter switch
        {
            Adapters.AdapterGraph g => [g],
            Adapters.JobsAdapter jobs => jobs.Jobs,
            _ => [],
        };
        var has = cfg.FusedProjections ? Adapters.AdapterConfig.FusedTargets : Adapters.AdapterConfig.LlamaTargets;
        foreach (var graph in graphs)
        {
            graph.ForModel(cfg.NumLayers);
            var missing = graph.Config.TargetModules.Where(t => !has.Contains(t)).ToArray();
            if (missing.Length > 0)
                throw Fail.User($"adapter target_modules {Fail.Show(missing)} are not projections of a {cfg.ModelType} model", $"target {string.Join(", ", has)}");
        }
        return adapter;
    }

    public DecoderOutputs Build(Builder b, DecoderInputs io, DType compute)
    {
        var (bsz, t) = (io.InputIds.S[0], io.InputIds.S[1]);
        _ids = io.InputIds;
        var d = cfg.HiddenSize;
        var embed = weights.Get(b, "model.embed_tokens.weight", [cfg.VocabSize, d]);
        var x = b.Reshape(b.Gather(embed, io.InputIds), -1, d);                              // (N, D)
        x = b.Cast(x, compute);
        if (cfg.ScaleEmbeddings) x = b.Mul(x, b.Scalar(Math.Sqrt(d), compute));                // Gemma: × √D in the compute dtype
        var ropes = new Dictionary<RopeScaling, (Value Cos, Value Sin)>();
        var lens = Lengths(b, io);
        var tokenMask = TokenMask(b, io, t, lens);
        var present = new List<(Value, Value)>();
        var masks = new Dictionary<int, Value>();
        for (var l = 0; l < cfg.NumLayers; l++)
        {
            var window = cfg.SlidingWindowFor(l) ?? 0;
            if (!masks.TryGetValue(window, out var allowed))
            {
                using (b.Scope(window == 0 ? "model.mask" : $"model.mask_w{window}"))
                {
                    var visible = Attention.Mask(b, io.AttentionMask, lens.Past, lens.Seq, lens.Total, window == 0 ? null : window, io.Segments);
                    allowed = Attention.Bias(b, visible, compute);
                    masks[window] = allowed = Attention.FullBias(b, allowed, bsz, t, cfg.NumKvHeads, cfg.NumHeads / cfg.NumKvHeads);
                }
            }
            var past = io.Past?[l];
            var rope = cfg.RopeFor(l);
            if (!ropes.TryGetValue(rope, out var cs))
            {
                using (b.Scope(ropes.Count == 0 ? "model.rotary_emb" : "model.rotary_emb_local"))
                {
                    ropes[rope] = cs = b.RopeTables(io.PositionIds, rope, cfg.RotaryDim);       // (B, 1, T, rot) fp32
                }
            }
            (Value, Value) kv;
            using (b.Segment())                                                               // unit of recomputation
            {
                (x, kv) = Layer(b, l, x, bsz, t, cs.Cos, cs.Sin, allowed, past, tokenMask);
            }
            present.Add(kv);
        }
        using (b.Scope("model.norm"))
        {
            x = Norm(b, x, "model.norm.weight", d);
        }
        var headKey = cfg.TieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
        Value logits;
        using (b.Scope("lm_head"))
        {
            logits = b.Linear(x, weights.Get(b, headKey, [cfg.VocabSize, d]));               // (N, V)
            if (cfg.FinalLogitSoftcap is { } cap) logits = SoftCap(b, logits, cap);
        }
        return new DecoderOutputs(logits, x, present);
    }

    private (Value X, (Value K, Value V) Kv) Layer(Builder b, int l, Value x, Dim bsz, Dim t, Value cos, Value sin, Value allowed, (Value K, Value V)? past, Value tokenMask)
    {
        var p = $"model.layers.{l}";
        var d = cfg.HiddenSize;
        Value h;
        using (b.Scope($"{p}.input_layernorm"))
        {
            h = Norm(b, x, $"{p}.input_layernorm.weight", d);
        }
        (Value, Value) kv;
        using (b.Scope($"{p}.self_attn"))
        {
            (h, kv) = SelfAttention(b, l, h, bsz, t, cos, sin, allowed, past);
        }
        if (cfg.SandwichNorms)
        {
            using (b.Scope($"{p}.post_attention_layernorm")) h = Norm(b, h, $"{p}.post_attention_layernorm.weight", d);
        }
        x = b.Add(x, h);
        var preMlp = cfg.SandwichNorms ? "pre_feedforward_layernorm" : "post_attention_layernorm";
        using (b.Scope($"{p}.{preMlp}"))
        {
            h = Norm(b, x, $"{p}.{preMlp}.weight", d);
        }
        using (b.Scope($"{p}.mlp"))
        {
            h = Mlp(b, l, h, tokenMask);
        }
        if (cfg.SandwichNorms)
        {
            using (b.Scope($"{p}.post_feedforward_layernorm")) h = Norm(b, h, $"{p}.post_feedforward_layernorm.weight", d);
        }
        return (b.Add(x, h), kv);
    }

    /// <summary>RMSNorm of the named weight over the last axis; Gemma's weights apply as (1 + w).</summary>
    private Value Norm(Builder b, Value x, string key, long dim)
    {
        var w = weights.Get(b, key, [dim]);
        return b.RmsNorm(x, cfg.NormPlusOne ? b.AddScalar(w, 1) : w, cfg.RmsNormEps);
    }

    /// <summary>cap · tanh(x / cap) (Gemma 2's soft-capping).</summary>
    private static Value SoftCap(Builder b, Value x, double cap) => b.Scale(b.Tanh(b.Scale(x, 1 / cap)), cap);

    private (Value Out, (Value K, Value V) Kv) SelfAttention(Builder b, int l, Value h, Dim bsz, Dim t, Value cos, Value sin, Value allowed, (Value K, Value V)? past)
    {
        var (nh, nkv, dh) = (cfg.NumHeads, cfg.NumKvHeads, cfg.HeadDim);
        Value Split(Value y, int n) => bsz.IsStatic || t.IsStatic
            ? b.Reshape(y, bsz.IsStatic ? bsz.Value : -1, t.IsStatic ? t.Value : -1, n, dh)
            : b.Apply1(ShapeOps.ReshapeOp, [y, b.Concat(0, b.ShapeOf(_ids!), b.Ints(n, dh))]);            // symbolic B and T: (B, T) at run time
        Value Heads(Value y, int n) => b.Refine(b.Transpose(Split(y, n), 0, 2, 1, 3), Shape.Of(bsz, n, t, dh));
        Value q, k, v;
        if (cfg.FusedProjections)
        {
            var qkv = b.Split(Proj(b, l, "self_attn", "qkv_proj", h, (nh + (2 * nkv)) * dh, cfg.AttentionBias), -1, nh * dh, nkv * dh, nkv * dh);
            (q, k, v) = (Heads(qkv[0], nh), Heads(qkv[1], nkv), Heads(qkv[2], nkv));
        }
        else
        {
            q = Heads(Proj(b, l, "self_attn", "q_proj", h, nh * dh, cfg.AttentionBias), nh);                         // (B, H, T, Dh)
            k = Heads(Proj(b, l, "self_attn", "k_proj", h, nkv * dh, cfg.AttentionBias), nkv);                       // (B, Hkv, T, Dh)
            v = Heads(Proj(b, l, "self_attn", "v_proj", h, nkv * dh, cfg.AttentionBias), nkv);                       // (B, Hkv, T, Dh)
        }
        if (cfg.QkNorm)
        {
            using (b.Scope("q_norm")) q = Norm(b, q, $"model.layers.{l}.self_attn.q_norm.weight", dh);
            using (b.Scope("k_norm")) k = Norm(b, k, $"model.layers.{l}.self_attn.k_norm.weight", dh);
        }
        (q, k) = (b.ApplyRope(q, cos, sin), b.ApplyRope(k, cos, sin));
        if (past is { } pkv)
        {
            k = b.Concat(2, pkv.K, k);                                                     // (B, Hkv, S, Dh)
            v = b.Concat(2, pkv.V, v);
        }
        var scale = cfg.QueryPreAttnScalar is { } s ? 1 / Math.Sqrt(s) : 1 / Math.Sqrt(dh);
        var o = Attention.Scores(b, q, k, v, allowed, nkv, scale, cfg.AttnLogitSoftcap);     // (B, H, T, Dh)
        var flat = b.Reshape(b.Transpose(o, 0, 2, 1, 3), -1, nh * dh);                     // (N, H·Dh)
        return (Proj(b, l, "self_attn", "o_proj", flat, cfg.HiddenSize, cfg.OProjBias), (k, v));
    }

    /// <summary>The dense gated MLP act(gate) ⊙ up → down, unless the adapter replaces the block (MixLoRA).</summary>
    private Value Mlp(Builder b, int l, Value h, Value tokenMask)
    {
        var (d, f) = (cfg.HiddenSize, cfg.IntermediateSize);
        if (cfg.FusedProjections)
        {
            var fusedSite = new MlpSite(l, $"model.layers.{l}.mlp", d, f,
                (module, x) => Frozen(b, l, "mlp", module, x, module == "down_proj" ? d : 2 * f, cfg.MlpBias),
                x => b.Act(cfg.HiddenAct, x), tokenMask,
                module => weights.Get(b, $"model.layers.{l}.mlp.{module}.weight", module == "down_proj" ? [d, f] : [2 * f, d]), cfg.HiddenAct, FusedGateUp: true, InputIds: _ids);
            if (_adapter.Mlp(b, fusedSite, h) is { } moe) return moe;
            var gu = b.Split(Proj(b, l, "mlp", "gate_up_proj", h, 2 * f, cfg.MlpBias), -1, f, f);                  // (N, F) each
            return Proj(b, l, "mlp", "down_proj", b.Mul(b.Act(cfg.HiddenAct, gu[0]), gu[1]), d, cfg.MlpBias);
        }
        var site = new MlpSite(l, $"model.layers.{l}.mlp", d, f,
            (module, x) => Frozen(b, l, "mlp", module, x, module == "down_proj" ? d : f, cfg.MlpBias),
            x => b.Act(cfg.HiddenAct, x), tokenMask,
            module => weights.Get(b, $"model.layers.{l}.mlp.{module}.weight", module == "down_proj" ? [d, f] : [f, d]), cfg.HiddenAct, InputIds: _ids);
        if (_adapter.Mlp(b, site, h) is { } replaced) return replaced;
        var gate = Proj(b, l, "mlp", "gate_proj", h, f, cfg.MlpBias);
        var up = Proj(b, l, "mlp", "up_proj", h, f, cfg.MlpBias);
        return Proj(b, l, "mlp", "down_proj", b.Mul(b.Act(cfg.HiddenAct, gate), up), d, cfg.MlpBias);
    }

    /// <summary>A named linear: frozen x Wᵀ (+ b) plus the adapter's delta.</summary>
    private Value Proj(Builder b, int l, string block, string module, Value x, long outF, bool bias)
    {
        var y = Frozen(b, l, block, module, x, outF, bias);
        var key = $"model.layers.{l}.{block}.{module}";
        var site = new LinearSite(l, module, key, x.S[-1].Value, outF, weights.Get(b, $"{key}.weight", [outF, x.S[-1].Value]), y);
        return _adapter.LinearDelta(b, site, x) is { } delta ? b.Add(y, delta) : y;
    }

    private Value Frozen(Builder b, int l, string block, string module, Value x, long outF, bool bias)
    {
        var key = $"model.layers.{l}.{block}.{module}";
        var w = weights.Get(b, $"{key}.weight", [outF, x.S[-1].Value]);
        var bv = bias ? weights.Get(b, $"{key}.bias", [outF]) : null;
        return b.Linear(x, w, bv);                                                         // (N, out)
    }

    private static Value TokenMask(Builder b, DecoderInputs io, Dim t, (Value Past, Value Seq, Value Total) lens)
    {
        // the mask's last T columns are this call's tokens: columns past .. total
        var m = io.Past is null ? io.AttentionMask
            : t.IsStatic ? b.Slice(io.AttentionMask, b.Ints(-t.Value), b.Ints(long.MaxValue), b.Ints(1))
            : b.Slice(io.AttentionMask, b.Unsqueeze(lens.Past, 0), b.Unsqueeze(lens.Total, 0), b.Ints(1));
        var real = io.Segments ? b.Not(b.Equal(m, b.Int(0))) : m;                          // segment ids: any non-zero is a token
        return b.Reshape(b.Cast(real, DType.Float32), -1);                                // (N)
    }

    private static (Value Past, Value Seq, Value Total) Lengths(Builder b, DecoderInputs io)
    {
        if (io.Past is null && io.InputIds.S[1].IsStatic)
        {
            var tt = io.InputIds.S[1].Value;
            return (b.Int(0), b.Int(tt), b.Int(tt));
        }
        Value Dim(Value v, long axis) => b.Squeeze(b.Gather(b.ShapeOf(v), b.Ints(axis)), 0);
        var seq = Dim(io.InputIds, 1);
        var total = Dim(io.AttentionMask, 1);
        return (b.Sub(total, seq), seq, total);
    }
}
