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
    public static int Run(string[] args, Func<string, ITokenizer> loadTokenizer, RuntimeSettings settings)
    {
        var model = new Option<string>("--model") { Description = "exported folder, or HF model folder", Required = true };
        var adapter = new Option<string?>("--adapter") { Description = "adapter folder (HF model) or .onnx_adapter file (exported model)" };
        var prompt = new Option<string?>("--prompt") { Description = "text to continue" };
        var promptFile = new Option<string?>("--prompt-file") { Description = "read the prompt from this UTF-8 file (for long prompts)" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "tokens to generate at most", DefaultValueFactory = _ => 128 };
        var temperature = new Option<double>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0.0 };
        var topP = new Option<double>("--top-p") { Description = "nucleus mass when sampling", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<int>("--seed") { Description = "sampling seed", DefaultValueFactory = _ => 0 };
        var device = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
        var command = new RootCommand("mixlora-generate: continue a prompt with an exported model")
        {
            model, adapter, prompt, promptFile, maxNew, temperature, topP, seed, device,
        };
        command.SetAction(p =>
        {
            var options = new SamplingOptions(p.GetValue(maxNew), p.GetValue(temperature), p.GetValue(topP), p.GetValue(seed));
            options.Validate();
            var text = PromptText(p.GetValue(prompt), p.GetValue(promptFile));
            var dir = p.GetValue(model)!;
            using var source = ModelSource.Open(dir, p.GetValue(adapter), OrtRuntime.For(OrtRuntime.ParseDevice(p.GetValue(device)!), settings));
            var generator = new Generator(source.Model, loadTokenizer(dir));
            generator.GenerateText(text, options, Console.Out);
            Console.WriteLine();
            return 0;
        });
        return command.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }

    /// <summary>--prompt, or the text of --prompt-file (checked as UTF-8); exactly one of them.</summary>
    private static string PromptText(string? prompt, string? file)
    {
        GraphBuilder.Fail.If((prompt is null) == (file is null), prompt is null ? "no prompt given" : "--prompt and --prompt-file together",
            "give the text with --prompt TEXT, or a long one with --prompt-file FILE");
        if (file is null) return prompt!;
        GraphBuilder.Fail.If(!File.Exists(file), $"--prompt-file {file} does not exist", "check the path");
        var bytes = File.ReadAllBytes(file);
        GraphBuilder.IO.Utf8Text.Check(file, bytes);
        return System.Text.Encoding.UTF8.GetString(bytes);
    }
}
