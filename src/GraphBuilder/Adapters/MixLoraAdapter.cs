using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// The adapters as <see cref="IAdapter"/>s. MIXLORA: LoRA on the targeted attention projections
/// (`mixlora.layers.{l}.self_attn.{m}`) and the MoE block replacing the MLP; LORA: plain LoRA on every
/// target with PEFT's keys (`base_model.model.model.layers.{l}.{self_attn|mlp}.{m}`).
/// Trainable tensors become fp32 graph inputs under those keys (<see cref="Params"/>).
/// </summary>
public sealed class AdapterGraph : IAdapter
{
    private readonly AdapterConfig _cfg;
    private readonly DType _compute;
    private readonly Value? _training;
    private readonly MoeBlock? _moe;
    private readonly List<Routing> _routings = [];
    private Value? _tokenMask;

    /// <param name="training">bool scalar input enabling dropout, or null for graphs that never train.</param>
    /// <param name="fusedKernels">the fused ops MixLoRA's experts may use (<see cref="FusedOps"/>; only for graphs run by
    /// the trainer's runtime, on a device with kernels for <paramref name="compute"/>).</param>
    /// <param name="prefix">prepended to the trainable inputs' names (a job of several in one graph, <see cref="JobsAdapter"/>).</param>
    public AdapterGraph(AdapterConfig cfg, DType compute, Value? training, FusedOps fusedKernels = FusedOps.None, string prefix = "")
    {
        (_cfg, _compute, _training) = (cfg, compute, training);
        Params = new TrainableSet { Prefix = prefix };
        if (cfg.IsMixLora) _moe = new MoeBlock(cfg, Params, compute, training, fusedKernels);
    }

    public AdapterConfig Config => _cfg;
    public TrainableSet Params { get; }

    /// <summary>(N) fp32: 1 on real tokens, 0 on padding (set once an MLP is built; null for LORA).</summary>
    public Value? TokenMask => _tokenMask;

    /// <summary>Per-layer routing decisions of this graph (empty for LORA).</summary>
    public IReadOnlyList<Routing> Routings => _routings;

    public Value? LinearDelta(Builder b, LinearSite site, Value x)
    {
        var isMlp = site.Module is "gate_proj" or "up_proj" or "down_proj" or "gate_up_proj";
        if (!_cfg.Targets(site.Module) || (isMlp && _cfg.IsMixLora)) return null;
        var key = _cfg.IsMixLora
            ? $"mixlora.layers.{site.Layer}.self_attn.{site.Module}"
            : $"base_model.model.model.layers.{site.Layer}.{(isMlp ? "mlp" : "self_attn")}.{site.Module}";
        var a = Params.Get(b, LoraLayer.A(key, _cfg.Lora, site.In), _compute);
        var bw = Params.Get(b, LoraLayer.B(key, _cfg.Lora, site.Out), _compute);
        var delta = LoraLayer.Delta(b, x, a, bw, _cfg.Lora, _training);
        if (!_cfg.Lora.UseDora) return delta;
        if (site.Weight is not { } w || site.Base is not { } y) throw Fail.Bug($"DoRA on {site.Key} needs the frozen weight and output");
        var m = Params.Get(b, LoraLayer.Magnitude(key, _cfg.Lora, $"{site.Key}.weight", site.Out), DType.Float32);
        var norm = LoraLayer.WeightNorm(b, w, Params.Get(b, LoraLayer.A(key, _cfg.Lora, site.In), DType.Float32), Params.Get(b, LoraLayer.B(key, _cfg.Lora, site.Out), DType.Float32), _cfg.Lora.Scaling);
        return LoraLayer.DoraDelta(b, y, delta, m, norm);
    }

    public Value? Mlp(Builder b, MlpSite site, Value x)
    {
        if (_moe is null) return null;
        _tokenMask ??= site.TokenMask;
        var (y, routing) = _moe.Build(b, site, x);
        _routings.Add(routing);
        return y;
    }

    /// <summary>The pooled load-balance loss (fp32 scalar), or null for LORA or when router_loss is off.</summary>
    public Value? AuxLoss(Builder b)
    {
        if (_routings.Count == 0 || !_cfg.RouterLoss || _tokenMask is null) return null;
        using (b.Scope("mixlora.aux_loss"))
        {
            return Router.AuxLoss(b, _routings, _tokenMask, _cfg.NumExperts, _cfg.RouterAuxLossCoef);
        }
    }
}
