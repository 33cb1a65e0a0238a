using System.CommandLine;
using System.Text.Json;
using MixLoRA.Cli.Diagnostics;
using MixLoRA.GraphBuilder.IR;
using MixLoRA.Runtime;

namespace MixLoRA.Cli.Diagnostics;

/// <summary>
/// `mixlora-doctor`: checks the runtime (ONNX Runtime loads, the CUDA provider and a GPU are found) and,
/// with --ops, which catalog ops run forward and backward per dtype with every node on the device; with
/// --kernels, the fused kernels against the CPU kernel.
/// </summary>
public static class DoctorCommand
{
    public static int Run(string[] args, RuntimeSettings settings)
    {
        var device = new Option<string>("--device") { DefaultValueFactory = _ => "cpu", Description = "cpu | cuda" };
        var ops = new Option<bool>("--ops") { Description = "probe every catalog op (forward + gradient) per dtype" };
        var dtypes = new Option<string>("--dtypes") { DefaultValueFactory = _ => "bfloat16,float16,float32" };
        var output = new Option<string?>("--out") { Description = "write the probe results as JSON" };
        var smoke = new Option<bool>("--smoke") { Description = "run a few tiny graphs step by step" };
        var graphs = new Option<string[]>("--graph") { Description = "run these .onnx files on random inputs", Arity = ArgumentArity.ZeroOrMore, AllowMultipleArgumentsPerToken = true };
        var perNode = new Option<bool>("--per-node") { Description = "with --graph: run each distinct node alone" };
        var prefix = new Option<int?>("--prefix") { Description = "with --graph: run only the first K nodes" };
        var kernels = new Option<bool>("--kernels") { Description = "check the fused kernels on the device against the CPU kernel (exit 1 on a mismatch)" };
        var ortChecks = new Option<bool>("--ort-checks") { Description = "rerun the patterns that failed on ORT 1.29's CUDA provider, each in its own process (exit 1 if any fails)" };
        var ortCheck = new Option<string?>("--ort-check") { Description = "run one of the --ort-checks in this process", Hidden = true };
        var collective = new Option<bool>("--collective", "--nccl") { Description = "check the data-parallel collective in a group of one rank: NCCL on cuda, TCP on cpu (exit 1 on a wrong result)" };
        var command = new RootCommand("mixlora-doctor: check the runtime and op coverage") { device, ops, dtypes, output, smoke, graphs, perNode, prefix, kernels, ortChecks, ortCheck, collective };
        command.SetAction(p =>
        {
            var dev = OrtRuntime.ParseDevice(p.GetValue(device)!);
            var rt = OrtRuntime.For(dev, settings);
            Console.WriteLine($"ONNX Runtime {Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetVersionString()} on {dev.ToString().ToLowerInvariant()}" +
                (dev == Device.Cuda ? $" (provider {OrtRuntime.CudaProviderPath})" : ""));
            if (p.GetValue(ortCheck) is { } one) return OrtChecks.RunOne(rt, one);
            if (p.GetValue(smoke)) Smoke.Run(rt);
            if (p.GetValue(ortChecks) && OrtChecks.RunIsolated(p.GetValue(device)!, Console.Out) > 0) return 1;
            if (p.GetValue(kernels) && !KernelCheck.Run(rt, Console.Out)) return 1;
            if (p.GetValue(collective) && !CollectiveCheck.Run(rt, Console.Out)) return 1;
            foreach (var g in p.GetValue(graphs) ?? [])
            {
                if (p.GetValue(prefix) is { } k) GraphCheck.Run(rt, PrefixGraph.Write(g, k));
                else if (p.GetValue(perNode)) NodeBisect.Run(rt, g);
                else GraphCheck.Run(rt, g);
            }
            if (!p.GetValue(ops)) return 0;
            var types = p.GetValue(dtypes)!.Split(',').Select(DTypes.Parse).ToArray();
            var results = OpProbe.Run(rt, types, r =>
            {
                Console.WriteLine($"  {r.Op,-18} {r.DType,-9} {(r.Ok ? "ok" : "FAIL  " + r.Error)}");
                Console.Out.Flush();
            });
            Console.WriteLine($"{results.Count(r => r.Ok)} of {results.Count} op × dtype probes ran with every node on {dev.ToString().ToLowerInvariant()}");
            if (p.GetValue(output) is { } path) File.WriteAllText(path, JsonSerializer.Serialize(results));
            return 0;
        });
        return command.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }
}
