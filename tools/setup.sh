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
write() { # name assembly command
  cat > "bin/mixlora-$1" <<SH
#!/usr/bin/env bash
exec dotnet "$root/artifacts/bin/$2/release_linux-x64/MixLoRA.$2.dll" $3 "\$@"
SH
  chmod +x "bin/mixlora-$1"
}
for c in build-graph train score data bench doctor; do write "$c" Trainer "$c"; done
for c in export generate eval; do write "$c" Inference "$c"; done
echo "bin/: $(ls bin | tr '\n' ' ') (ONNX Runtime $flavour)" >&2
