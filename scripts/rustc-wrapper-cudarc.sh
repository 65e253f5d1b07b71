#!/usr/bin/env bash
# RUSTC_WRAPPER used only by scripts/cuda-build.sh.
# cargo runs: <this> <rustc> <args...>
# For the cudarc library crate alone it
#   * adds --cfg feature="dynamic-loading"  (cudarc then dlopen()s libcuda/libcublas/... at run time)
#   * drops the "-l dylib=cuda|nvrtc|curand|cublas|cublasLt" directives that cudarc's build
#     script emits because candle-core turns on cudarc's "dynamic-linking" feature.
# Every other rustc invocation passes through unchanged.
set -euo pipefail
rustc=$1; shift
crate=
prev=
for a in "$@"; do
  if [[ $prev == --crate-name ]]; then crate=$a; break; fi
  prev=$a
done
if [[ $crate != cudarc ]]; then exec "$rustc" "$@"; fi
args=()
while (($#)); do
  case $1 in
    -l) shift ;;   # "-l" "dylib=cuda"
    -l*) ;;        # "-ldylib=cuda"
    *) args+=("$1") ;;
  esac
  shift
done
exec "$rustc" "${args[@]}" --cfg 'feature="dynamic-loading"'
