using System.CommandLine;
using MixLoRA.Inference.Generation;
using MixLoRA.Runtime;
using MixLoRA.Text.Tokenization;

namespace MixLoRA.Cli;

/// <summary>
/// `mixlora-generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature F] [--top-p F] [--seed N]
/// [--adapter DIR|FILE] [--device cpu|cuda]`: streams the continuation to stdout (greedy by default).
/// </summary>
public static class GenerateCommand
{
    /// <summary>Runs with the arguments after the command name; <paramref name="loadTokenizer"/> loads the model folder's tokenizer.</summary>
    public static int Run(string[] args, Func<string, ITokenizer> loadTokenizer)
    {
        var model = new Option<string>("--model") { Description = "exported folder, or HF model folder", Required = true };
        var adapter = new Option<string?>("--adapter") { Description = "adapter folder (HF model) or .onnx_adapter file (exported model)" };
        var prompt = new Option<string>("--prompt") { Description = "text to continue", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "tokens to generate at most", DefaultValueFactory = _ => 128 };
        var temperature = new Option<double>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0.0 };
        var topP = new Option<double>("--top-p") { Description = "nucleus mass when sampling", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<int>("--seed") { Description = "sampling seed", DefaultValueFactory = _ => 0 };
        var device = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
        var command = new RootCommand("mixlora-generate: continue a prompt with an exported model")
        {
            model, adapter, prompt, maxNew, temperature, topP, seed, device,
        };
        command.SetAction(p =>
        {
            var options = new SamplingOptions(p.GetValue(maxNew), p.GetValue(temperature), p.GetValue(topP), p.GetValue(seed));
            options.Validate();
            var dir = p.GetValue(model)!;
            using var source = ModelSource.Open(dir, p.GetValue(adapter), OrtRuntime.ParseDevice(p.GetValue(device)!));
            var generator = new Generator(source.Model, loadTokenizer(dir));
            generator.GenerateText(p.GetValue(prompt)!, options, Console.Out);
            Console.WriteLine();
            return 0;
        });
        return command.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }
}
