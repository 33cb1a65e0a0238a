using System.Diagnostics;
using System.Globalization;
using MixLoRA.Trainer.Runtime;

namespace MixLoRA.Trainer.Bench;

/// <summary>
/// Peak memory of the device the bench runs on. <see cref="Sample"/> is called at quiet points (after
/// warm-up, after the timed steps); ORT's arenas do not give memory back, so the last sample is the peak of
/// the run. <see cref="Source"/> says what the number is, so a reader knows how far to trust it.
/// </summary>
public abstract class PeakMemory
{
    public long PeakBytes { get; protected set; }

    public abstract string Source { get; }

    public abstract void Sample();

    /// <summary>CPU: the process's peak working set. CUDA: nvidia-smi, else the runner's device tensors.</summary>
    public static PeakMemory For(Device device, Func<long> deviceTensorBytes) =>
        device == Device.Cpu ? new ProcessPeak() : new GpuPeak(deviceTensorBytes);

    private sealed class ProcessPeak : PeakMemory
    {
        public override string Source => "process peak working set";

        public override void Sample()
        {
            using var p = Process.GetCurrentProcess();
            PeakBytes = Math.Max(PeakBytes, p.PeakWorkingSet64);
        }
    }

    /// <summary>
    /// nvidia-smi's memory of this process (CUDA context + ORT arenas + bound tensors); where the process is not
    /// listed (another pid namespace), the device's used memory minus what was used before the run started;
    /// where nvidia-smi is missing, the device tensors the runner allocated (a lower bound: no activations).
    /// </summary>
    private sealed class GpuPeak : PeakMemory
    {
        private readonly Func<long> _tensors;
        private readonly string _gpu;
        private readonly long? _baseline;
        private string _source = "device tensors of the runner (lower bound: excludes activations)";

        public GpuPeak(Func<long> tensors)
        {
            _tensors = tensors;
            var visible = Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES")?.Split(',')[0].Trim();
            _gpu = int.TryParse(visible, out var id) ? id.ToString(CultureInfo.InvariantCulture) : "0";
            _baseline = DeviceUsedMiB();
        }

        public override string Source => _source;

        public override void Sample()
        {
            long bytes;
            if (ProcessUsedMiB() is { } mine)
            {
                (bytes, _source) = (mine << 20, "nvidia-smi: this process");
            }
            else if (DeviceUsedMiB() is { } used && _baseline is { } b)
            {
                (bytes, _source) = ((used - b) << 20, "nvidia-smi: device used minus used before the run");
            }
            else bytes = _tensors();
            PeakBytes = Math.Max(PeakBytes, bytes);
        }

        private long? ProcessUsedMiB()
        {
            var pid = Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
            var lines = Smi($"--id={_gpu} --query-compute-apps=pid,used_memory --format=csv,noheader,nounits");
            return lines?.Select(l => l.Split(',', StringSplitOptions.TrimEntries)).Where(f => f.Length == 2 && f[0] == pid)
                .Select(f => long.TryParse(f[1], out var v) ? v : (long?)null).FirstOrDefault();
        }

        private long? DeviceUsedMiB()
        {
            var lines = Smi($"--id={_gpu} --query-gpu=memory.used --format=csv,noheader,nounits");
            return lines is [var first, ..] && long.TryParse(first.Trim(), out var v) ? v : null;
        }

        private static string[]? Smi(string args)
        {
            try
            {
                using var p = Process.Start(new ProcessStartInfo("nvidia-smi", args) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false });
                if (p == null) return null;
                var text = p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                return p.ExitCode == 0 ? text.Split('\n', StringSplitOptions.RemoveEmptyEntries) : null;
            }
            catch (System.ComponentModel.Win32Exception)
            {
                return null;
            }
        }
    }
}
