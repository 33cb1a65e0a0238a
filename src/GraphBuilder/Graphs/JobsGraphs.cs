using MixLoRA.GraphBuilder.Adapters;
using MixLoRA.GraphBuilder.Autodiff;
using MixLoRA.GraphBuilder.Building;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.GraphBuilder.Losses;
using MixLoRA.GraphBuilder.Models;
using MixLoRA.GraphBuilder.Ops;
using MixLoRA.GraphBuilder.Optim;

namespace MixLoRA.GraphBuilder.Graphs;

/// <summary>One job of a multi-adapter graph: its name (unique, a path-safe word) and adapter.</summary>
public sealed record JobAdapter(string Name, AdapterConfig Adapter);

/// <summary>What a multi-adapter graph is compiled for: <paramref name="PerJob"/> rows of T tokens per job in each micro-batch.</summary>
public sealed record JobsSpec(ModelConfig Model, IReadOnlyList<JobAdapter> Jobs, Shapes PerJob, DType WeightType, DType Compute,
    bool Accumulate = false, bool Checkpointing = false, FusedOps Fused = FusedOps.None)
{
    /// <summary>The graph's micro-batch: every job's rows, job after job.</summary>
    public Shapes Graph => new(Jobs.Count * PerJob.MicroBatch, PerJob.SeqLen);
}

/// <summary>A compiled multi-adapter graph: each job's trainable tensors (reference keys) and the frozen weights.</summary>
public sealed record CompiledJobs(Graph Graph, IReadOnlyList<IReadOnlyList<TrainableTensor>> Trainable, IReadOnlyDictionary<string, Value> Weights);

/// <summary>
/// The grad and eval steps of several adapters trained at once over one frozen base (<see cref="JobsAdapter"/>).
/// IO as <see cref="TrainGraphs"/> with B = jobs × R rows (job j's rows are j·R … (j+1)·R − 1), except that each
/// job's tensors carry its name: trainable inputs `NAME/KEY` (gradients `NAME/KEY.grad`, `NAME/KEY.grad.acc`),
/// token shares `lm_weight.NAME` / `aux_weight.NAME`, outputs `loss.NAME`, `lm_loss.NAME`, `aux_loss.NAME`,
/// `valid_tokens.NAME`, `router_load.NAME`. The gradient is that of the sum of the jobs' losses; the jobs share no
/// trainable tensor, so each job's gradient is its own loss's.
/// </summary>
public static class JobsGraphs
{
    public static string Prefix(string job) => job + "/";

    /// <summary>A per-job graph IO name: `NAME` of <paramref name="what"/> (loss, lm_weight, …) for job <paramref name="job"/>.</summary>
    public static string Of(string what, string job) => $"{what}.{job}";

    public static CompiledJobs GradStep(JobsSpec spec)
    {
        var (b, adapters, loss, weights) = Forward("jobs_grad_step", spec, withTraining: true);
        var parameters = adapters.SelectMany(a => a.Params.Inputs).ToArray();
        var grads = Gradients.Emit(b, loss, parameters, recompute: spec.Checkpointing);
        foreach (var p in parameters)
        {
            var g = b.Cast(grads[p.Name], DType.Float32);
            if (spec.Accumulate) g = b.Add(b.Input(TrainGraphs.AccName(p.Name), DType.Float32, p.Shape), g);
            b.Output(g, AdamW.GradName(p.Name));
        }
        return new CompiledJobs(b.Build(), adapters.Select(a => a.Params.Tensors).ToArray(), weights);
    }

    public static CompiledJobs EvalStep(JobsSpec spec)
    {
        var (b, adapters, _, weights) = Forward("jobs_eval_step", spec, withTraining: false);
        return new CompiledJobs(b.Build(), adapters.Select(a => a.Params.Tensors).ToArray(), weights);
    }

    private static (Builder B, AdapterGraph[] Adapters, Value Loss, IReadOnlyDictionary<string, Value> Weights) Forward(string name, JobsSpec spec, bool withTraining)
    {
        Fail.If(spec.Jobs.Count == 0, "no jobs", "give at least one job");
        var b = new Builder(name);
        var training = withTraining ? b.Scalar(1, DType.Bool) : null;
        var adapters = spec.Jobs.Select(j => new AdapterGraph(j.Adapter, spec.Compute, training, spec.Fused, Prefix(j.Name))).ToArray();
        var shapes = spec.Graph;
        var start = ForwardGraph.Start(b, spec.Model, shapes, spec.WeightType, spec.Compute, new JobsAdapter(adapters, spec.PerJob.MicroBatch), packed: true);
        var labels = b.Input(TrainGraphs.Labels, DType.Int64, shapes.MicroBatch, shapes.SeqLen);     // (J·R, T)
        var (r, t) = (spec.PerJob.MicroBatch, (long)spec.PerJob.SeqLen);
        Value? total = null;
        for (var j = 0; j < adapters.Length; j++)
        {
            var job = spec.Jobs[j].Name;
            var logits = b.Slice(start.Outputs.Logits, [j * r * t], [(j + 1) * r * t], [0]);          // (R·T, V)
            var rows = b.Slice(labels, [j * (long)r], [(j + 1) * (long)r], [0]);                       // (R, T)
            var (lm, valid) = CausalLmLoss.Emit(b, logits, rows, fused: spec.Fused.HasFlag(FusedOps.CrossEntropy));
            var aux = adapters[j].AuxLoss(b) ?? b.Scalar(0, DType.Float32);
            if (withTraining)
            {
                lm = b.Mul(lm, b.Input(Of(TrainGraphs.LmWeight, job), DType.Float32, Shape.Scalar));
                aux = b.Mul(aux, b.Input(Of(TrainGraphs.AuxWeight, job), DType.Float32, Shape.Scalar));
            }
            var loss = b.Add(lm, aux);
            b.Output(loss, Of(TrainGraphs.Loss, job));
            b.Output(lm, Of(TrainGraphs.LmLoss, job));
            b.Output(aux, Of(TrainGraphs.AuxLoss, job));
            b.Output(valid, Of(TrainGraphs.ValidTokens, job));
            if (adapters[j].Routings.Count > 0) b.Output(TrainGraphs.Load(b, adapters[j], adapters[j].TokenMask!), Of(TrainGraphs.RouterLoad, job));
            total = total is null ? loss : b.Add(total, loss);
        }
        return (b, adapters, total!, start.Weights.Declared);
    }
}
