#!/usr/bin/env bash
# Build the release binary with candle's CUDA backend (CUDA 13.0, sm_90a = H100/H200)
# on a machine with no GPU and no CUDA toolkit.
# Usage: scripts/cuda-build.sh --features cuda        (args go to `cargo build --release`)
# Output: target/cuda/release/<bin>. It needs only glibc (>= 2.34) and libstdc++ to start,
# and dlopen()s libcuda/libcublas/libcublasLt/libcurand when a CUDA device is created.
# Other GPUs: CUDA_COMPUTE_CAP=80 (A100), 89 (L40S), "80,90" (one build per capability, each in
# target/cuda-sm<N>/; 90 alone, the default, stays in target/cuda). 90+ becomes sm_90a etc., which
# loads on that architecture only; PTX for a plain capability such as 80 is JIT-compiled on newer GPUs.
# Docs: README "CUDA"; recipe and pitfalls: ../shared/notes/cuda-build.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CAPS=${CUDA_COMPUTE_CAP:-90}
if [[ $CAPS == *[,\ ]* ]]; then
  for cap in ${CAPS//,/ }; do
    CUDA_COMPUTE_CAP=$cap CUDA_TARGET_DIR=$ROOT/target/cuda-sm$cap "$0" "$@"
  done
  exit 0
fi
PREFIX=${CUDA_WHEEL_PREFIX:-$ROOT/.cuda-13.0}     # git-ignored, reused between builds

# 1. nvcc + cicc/ptxas + headers + CCCL + cudart from PyPI, pinned to 13.0.x
#    (driver 580 = CUDA 13.0; a newer nvcc writes PTX that driver cannot load)
if [ ! -x "$PREFIX/nvidia/cu13/bin/nvcc" ]; then
  if ! python3 -m pip --version >/dev/null 2>&1; then   # a bare CI machine
    apt-get update -qq && apt-get install -y -qq python3-pip binutils
  fi
  rm -rf "$PREFIX"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --target "$PREFIX" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
fi
export CUDA_HOME=$PREFIX/nvidia/cu13             # already has bin/ include/ lib/ nvvm/
ln -sfn lib "$CUDA_HOME/lib64"
# candle-kernels links "-lcudart": only libcudart.a is visible, so cudart is linked statically
ln -sf libcudart_static.a "$CUDA_HOME/lib/libcudart.a"
rm -f "$CUDA_HOME/lib/libcudart.so"

# 2. what the build scripts of cudarc and candle-kernels (cudaforge) read
export PATH=$CUDA_HOME/bin:$PATH                 # nvcc must be on PATH
export CUDARC_CUDA_VERSION=13000                   # cudarc API level, no nvcc parsing
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}    # no nvidia-smi here; 90 -> sm_90a
export LIBRARY_PATH=$CUDA_HOME/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
export RUSTC_WRAPPER=$ROOT/scripts/rustc-wrapper-cudarc.sh   # cudarc -> dynamic-loading
export CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-$ROOT/target/cuda}   # cargo's fingerprint ignores RUSTC_WRAPPER:
                                                   # never build this dir without it
# Opening a CUDA device catches cudarc's panic (a library missing): this build unwinds, the plain one aborts.
export CARGO_PROFILE_RELEASE_PANIC=unwind
cargo build --release "$@"

# 3. refuse a binary that hard-links CUDA libraries
command -v readelf >/dev/null || { echo "error: readelf not found (apt-get install binutils): cannot check NEEDED" >&2; exit 1; }
for b in $(find "$CARGO_TARGET_DIR/release" -maxdepth 1 -type f -executable); do
  dynamic=$(readelf -d "$b") || { echo "error: readelf -d $b failed" >&2; exit 1; }
  if grep -E 'NEEDED.*lib(cuda|cudart|cublas|cublasLt|curand|nvrtc)\.so' <<<"$dynamic"; then
    echo "error: $b links CUDA libraries at load time" >&2; exit 1
  fi
done
