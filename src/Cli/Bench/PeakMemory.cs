using System.Diagnostics;
using System.Globalization;
using MixLoRA.Runtime;

namespace MixLoRA.Cli.Bench;

/// <summary>
/// Peak memory of the device the bench runs on. On CUDA it must be sampled while steps run (<see cref="Watch"/>):
/// ORT allocates a run's activations as one memory-pattern block that it frees when the run ends, so
/// samples between steps see only weights and optimizer state (measured on the H100: 3.2 GiB between steps,
/// 26 GiB inside a TinyLlama LoRA step). <see cref="Source"/> says what the number is.
/// </summary>
public abstract class PeakMemory
{
    private long _peak;

    public long PeakBytes
    {
        get => Interlocked.Read(ref _peak);
        protected set
        {
            for (var seen = Interlocked.Read(ref _peak); value > seen; seen = Interlocked.Read(ref _peak))
            {
                if (Interlocked.CompareExchange(ref _peak, value, seen) == seen) break;
            }
        }
    }

    public abstract string Source { get; }

    public abstract void Sample();

    /// <summary>Samples continuously (a background loop) until disposed; a no-op where the source keeps its own peak.</summary>
    public virtual IDisposable Watch() => new Loop(this);

    private sealed class Nothing : IDisposable
    {
        public void Dispose()
        {
        }
    }

    private sealed class Loop : IDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _task;

        public Loop(PeakMemory owner) => _task = Task.Run(() =>
        {
            while (!_stop.IsCancellationRequested)
            {
                owner.Sample();
                Thread.Sleep(2);
            }
        });

        private bool _done;

        public void Dispose()
        {
            if (_done) return;
            _done = true;
            _stop.Cancel();
            _task.Wait();
            _stop.Dispose();
        }
    }

    /// <summary>CPU: the process's peak working set. CUDA: nvidia-smi, else the runner's device tensors.</summary>
    public static PeakMemory For(Device device, Func<long> deviceTensorBytes) =>
        device == Device.Cpu ? new ProcessPeak() : new GpuPeak(deviceTensorBytes);

    private sealed class ProcessPeak : PeakMemory
    {
        public override string Source => "process peak working set";

        public override IDisposable Watch() => new Nothing();                                   // the OS keeps the peak

        public override void Sample()
        {
            using var p = Process.GetCurrentProcess();
            PeakBytes = p.PeakWorkingSet64;
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
            PeakBytes = bytes;
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
