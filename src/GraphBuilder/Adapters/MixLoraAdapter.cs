using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;

namespace MixLoRA.GraphBuilder.Adapters;

/// <summary>
/// The adapters as <see cref="IAdapter"/>s (docs/methods.md). MIXLORA: LoRA on the targeted attention projections
/// (`mixlora.layers.{l}.self_attn.{m}`) and the MoE block replacing the MLP (<see cref="MoeBlock"/>); LORA: plain
/// LoRA on every target with PEFT's keys (`base_model.model.model.layers.{l}.{self_attn|mlp}.{m}`); LORAMOE, MOLA,
/// HYDRALORA: routed LoRA on the projections <see cref="AdapterConfig.RoutesProjection"/> names
/// (<see cref="RoutedLora"/>), plain LoRA on LORAMOE's attention targets (`loramoe.layers.{l}.self_attn.{m}`).
/// Trainable tensors become fp32 graph inputs under those keys (<see cref="Params"/>).
/// </summary>
public sealed class AdapterGraph : IAdapter
{
    private readonly AdapterConfig _cfg;
    private readonly DType _compute;
    private readonly Value? _training;
    private readonly MoeBlock? _moe;
    private readonly RoutedLora? _routed;
    private readonly List<Routing> _routings = [];
    private Value? _tokenMask;

    /// <param name="training">bool scalar input enabling dropout, or null for graphs that never train.</param>
    /// <param name="fusedKernels">the fused ops the experts may use (<see cref="FusedOps"/>; only for graphs run by
    /// the trainer's runtime, on a device with kernels for <paramref name="compute"/>).</param>
    /// <param name="prefix">prepended to the trainable inputs' names (a job of several in one graph, <see cref="JobsAdapter"/>).</param>
    public AdapterGraph(AdapterConfig cfg, DType compute, Value? training, FusedOps fusedKernels = FusedOps.None, string prefix = "")
    {
        (_cfg, _compute, _training) = (cfg, compute, training);
        Params = new TrainableSet { Prefix = prefix };
        if (cfg.IsMixLora) _moe = new MoeBlock(cfg, Params, compute, training, fusedKernels);
        if (cfg.IsRoutedLinear) _routed = new RoutedLora(cfg, Params, compute, training, fusedKernels);
    }

    public AdapterConfig Config => _cfg;
    public TrainableSet Params { get; }

    /// <summary>(N) fp32: 1 on real tokens, 0 on padding (set once an MLP is built; null for LORA).</summary>
    public Value? TokenMask => _tokenMask;

    private int _numLayers;

    /// <summary>
    /// Binds the adapter to a model of <paramref name="numLayers"/> layers (the <see cref="Decoder"/> does, and an
    /// export that wraps the adapter): MoLA's per-group num_experts list is checked against it and resolved with it.
    /// </summary>
    public AdapterGraph ForModel(int numLayers)
    {
        _cfg.CheckLayers(numLayers);
        _numLayers = numLayers;
        return this;
    }

    /// <summary>Per-layer routing decisions of the MIXLORA MoE blocks (empty for the other methods).</summary>
    public IReadOnlyList<Routing> Routings => _routings;

    public Value? LinearDelta(Builder b, LinearSite site, Value x)
    {
        var isMlp = AdapterConfig.FfnTargets.Contains(site.Module);
        if (!_cfg.Targets(site.Module) || (isMlp && _cfg.IsMixLora)) return null;
        if (_routed is not null && _cfg.RoutesProjection(site.Module))
        {
            using (b.Scope($"{_cfg.KeyPrefix}.{site.Module}"))
            {
                if (_numLayers == 0 && !_cfg.ExpertsPerGroup.IsEmpty) throw Fail.Bug("a per-group num_experts list needs ForModel(layers) first");
                return _routed.Delta(b, site, x, _cfg.ExpertsAt(site.Layer, Math.Max(_numLayers, 1)));
            }
        }
        var key = $"{_cfg.KeyPrefix}.layers.{site.Layer}.{(isMlp ? "mlp" : "self_attn")}.{site.Module}";
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
        _tokenMask ??= site.TokenMask;
        if (_moe is null) return null;
        var (y, routing) = _moe.Build(b, site, x);
        _routings.Add(routing);
        return y;
    }

    /// <summary>
    /// The router loss (a scalar in the router's dtype), or null where there is none: LORA, LORAMOE and HYDRALORA
    /// (MoE-PEFT computes none for LoRAMoE), or router_loss off (MoLA's default).
    /// MIXLORA: the pooled load-balance loss (mixlora-switch: with the z-loss); MOLA: the same over every routed
    /// projection (with a per-group num_experts list, each group of equal E pooled alone, weighted by its share).
    /// </summary>
    public Value? AuxLoss(Builder b)
    {
        if (!_cfg.RouterLoss || _tokenMask is null) return null;
        using (b.Scope($"{_cfg.KeyPrefix}.aux_loss"))
        {
            if (_routings.Count > 0)
                return _cfg.IsSwitch ? SwitchRouting.Loss(b, _routings, _tokenMask, _cfg) : Router.AuxLoss(b, _routings, _tokenMask, _cfg.NumExperts, _cfg.RouterAuxLossCoef);
            if (_routed is not { Routings.Count: > 0 } routed) return null;
            var groups = routed.Routings.GroupBy(r => r.Experts).ToArray();
            Value? total = null;
            foreach (var g in groups)
            {
                var loss = Router.AuxLoss(b, g.Select(r => r.Routing).ToArray(), _tokenMask, g.Key, _cfg.RouterAuxLossCoef);
                if (groups.Length > 1) loss = b.Scale(loss, (double)g.Count() / routed.Routings.Count);
                total = total is null ? loss : b.Add(total, loss);
            }
            return total;
        }
    }
}
