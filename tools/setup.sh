#!/usr/bin/env bash
# Builds MixLoRA.NET (Release) and writes bin/mixlora-* launchers. ONNX Runtime is fetched from npm into
# ~/.cache/mixlora (or $MIXLORA_CACHE) by the build on first use.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dotnet build MixLoRA.sln -c Release -nologo -clp:ErrorsOnly -v:q
mkdir -p bin
write() { # name assembly command
  cat > "bin/mixlora-$1" <<SH
#!/usr/bin/env bash
exec dotnet "$root/artifacts/bin/$2/release/MixLoRA.$2.dll" $3 "\$@"
SH
  chmod +x "bin/mixlora-$1"
}
for c in build-graph train score data bench doctor; do write "$c" Trainer "$c"; done
for c in export generate eval; do write "$c" Inference "$c"; done
echo "bin/: $(ls bin | tr '\n' ' ')" >&2
