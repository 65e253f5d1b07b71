#!/usr/bin/env bash
# One command for a GPU box that has the CUDA binary and PyTorch + transformers (no Rust needed):
#   scripts/gpu-check.sh [--crossfeed PATH] [--device cuda] [options of scripts/gpu_check.py]
# 1. parity on the device: `crossfeed score` on the fixture models against transformers (f32 rel 1e-4,
#    bf16 rel 2e-2), `crossfeed train` on the device against CPU (loss rel 1e-4, grad norm rel 1e-3);
# 2. sampling at the real vocabularies (50,272; 128,256) in every transformers mode (top_k = 1 and a tiny
#    top_p equal greedy), and two-run determinism of `generate` and `train` on the device;
# 3. training and generation benchmarks side by side with PyTorch (sdpa, labels= loss, fused AdamW) / transformers `generate` at the
#    paper's shapes (OPT-350M- and Llama-3.2-1B-shaped random-init models, seq 512, bf16): tokens/s, ratio,
#    peak memory, MFU; prints rows for BENCHMARKS.md and writes bench-*.json for `crossfeed run --dry-run --bench`.
# Here (no GPU) it runs as: scripts/gpu-check.sh --device cpu --small --crossfeed target/release/crossfeed
# On the GPU box, put the CUDA 13 libraries on the path first (README "CUDA"), e.g. from torch's wheels:
#   export LD_LIBRARY_PATH=$(python3 -c 'import nvidia, os; print([p for p in (os.path.join(d, "cu13", "lib") for d in nvidia.__path__) if os.path.isdir(p)][0])')
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/gpu_check.py "$@"
