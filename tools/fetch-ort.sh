#!/usr/bin/env bash
# Fetch ONNX Runtime 1.29 (C# API sources + linux-x64 native library) from npm into a cache outside
# the repo. Idempotent and safe to run from parallel builds. With --gpu, also fetch the CUDA provider.
# usage: tools/fetch-ort.sh [CACHE_DIR] [--gpu]
set -euo pipefail
CACHE=${1:-${MIXLORA_CACHE:-$HOME/.cache/mixlora}}
VER=0.4.9
DIR="$CACHE/ort-$VER"
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9
fetch() { # npm package name -> $DIR/<name>/package
  local pkg=$1
  [ -f "$DIR/$pkg/.done" ] && return 0
  echo "fetching $pkg@$VER from npm into $DIR (once)..." >&2
  rm -rf "$DIR/$pkg" "$DIR/tmp"; mkdir -p "$DIR/tmp" "$DIR/$pkg"
  (cd "$DIR/tmp" && npm pack --silent "$pkg@$VER" >/dev/null)
  tar xzf "$DIR"/tmp/*.tgz -C "$DIR/$pkg"
  rm -rf "$DIR/tmp"
  touch "$DIR/$pkg/.done"
}
fetch com.github.asus4.onnxruntime
if [ "${2:-}" = "--gpu" ]; then fetch com.github.asus4.onnxruntime.linux-x64-gpu; fi
