#!/usr/bin/env bash
# Builds MixLoRA.NET (Release) and writes bin/mixlora-* launchers. ONNX Runtime 1.32 comes from NuGet
# (restored by the build like any package): `tools/setup.sh` carries the CPU runtime (Microsoft.ML.OnnxRuntime),
# `tools/setup.sh cuda` the CUDA one (Microsoft.ML.OnnxRuntime.Gpu.Linux, CPU + the CUDA 13 provider, ~290 MB).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
flavour=${1:-cpu}
case $flavour in cpu|cuda) ;; *) echo "error: unknown flavour '$flavour': use tools/setup.sh [cpu|cuda]" >&2; exit 1 ;; esac
dotnet build MixLoRA.sln -c Release -p:MixLoraOrt="$flavour" -nologo -clp:ErrorsOnly -v:q
mkdir -p bin
write() { # command: bin/mixlora-COMMAND runs the one executable, MixLoRA.Cli, with COMMAND first
  cat > "bin/mixlora-$1" <<SH
#!/usr/bin/env bash
exec dotnet "$root/artifacts/bin/Cli/release_linux-x64/MixLoRA.Cli.dll" $1 "\$@"
SH
  chmod +x "bin/mixlora-$1"
}
for c in build-graph train score data bench doctor export generate eval; do write "$c"; done
echo "bin/: $(ls bin | tr '\n' ' ') (ONNX Runtime $flavour)" >&2
