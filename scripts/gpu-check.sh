#!/usr/bin/env bash
# One command for a GPU box that has the CUDA binary and PyTorch + transformers (no Rust needed):
#   scripts/gpu-check.sh [--crossfeed PATH] [--device cuda] [options of scripts/gpu_check.py]
# The first thing to run on any GPU machine; at most ~8 minutes on an H100. In order:
# 0. the driver (>= 580) and the CUDA 13 libraries the binary dlopens (libcuda, cuBLAS/cuBLASLt 13, cuRAND 10);
# 1. parity on the device: `crossfeed score` on the fixture models against transformers (f32 rel 1e-4,
#    bf16 rel 2e-2), `crossfeed train` on the device against CPU (f32 loss rel 1e-4, grad norm rel 1e-3;
#    bf16 2e-2); planted argmax ties at V = 50,272 / 128,256 (`crossfeed bench argmax-ties`);
# 2. greedy tokens of 16 prompts at batch 1 vs 16 (reported), sampling at the real vocabularies in every
#    transformers mode (top_k = 1 and a tiny top_p equal greedy), two-run determinism of `generate` and `train`;
# 3. benchmarks side by side with PyTorch (sdpa, labels= loss, fused AdamW) / transformers `generate` at the
#    paper's shapes (OPT-350M- and Llama-3.2-1B-shaped random-init models, seq 512, bf16): train steps (OPT
#    with dropout on and off), generation, a Llama decode step with top_p 0.9 and with a repetition penalty;
#    tokens/s, ratio, peak memory, MFU; prints rows for BENCHMARKS.md and writes bench-*.json for
#    `crossfeed run --dry-run --bench`.
# Here (no GPU) it runs as: scripts/gpu-check.sh --device cpu --small --crossfeed target/release/crossfeed
# On the GPU box, put the CUDA 13 libraries on the path first (README "CUDA"), e.g. from torch's wheels:
#   export LD_LIBRARY_PATH=$(python3 -c 'import nvidia, os; print([p for p in (os.path.join(d, "cu13", "lib") for d in nvidia.__path__) if os.path.isdir(p)][0])')
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/gpu_check.py "$@"
