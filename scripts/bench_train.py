#!/usr/bin/env python3
"""Side-by-side training benchmark: PyTorch eager (transformers + torch.optim.AdamW) in its default and its
strongest plain setting (the model's own `labels=` loss, AdamW(fused=True)) and `crossfeed bench train`, on
the same random-init model, shapes, batches and dtype, in one invocation; prints the CPU model, each side's
ms/step, the ratios, and each process's total peak resident memory. The default shape
is the Llama-like 7.36M-parameter model of notes/cpu-performance.md; the OPT-125M shape is
`--arch opt --hidden 768 --layers 12 --vocab 50272 --batch 2 --seq 512`; the Qwen3-0.6B shape is
`--arch qwen3 --hidden 1024 --layers 28 --vocab 151936 --batch 1 --seq 512`.

    python3 scripts/bench_train.py [--crossfeed target/release/crossfeed] [--steps 10] [--threads 2]
        [--arch llama|opt|qwen3] [--hidden 256] [--layers 4] [--vocab 8192] [--batch 4] [--seq 128] [--profile]

--profile adds where each side's step goes: crossfeed's per-op and per-phase table (`bench train --profile`)
and torch's profiler (self CPU time per aten op, strong setting), per step.
"""
import argparse, json, os, re, resource, subprocess, statistics, sys, time

import torch

from bench_common import bench_model, bench_tokens


def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            name = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        name = "unknown CPU"
    return f"{name}, {os.cpu_count()} logical cores"


def torch_side(a, mode):
    """One torch variant, alone in this process; prints one JSON line.

    default: what a plain script writes (loss on a sliced copy of the logits, torch.optim.AdamW's
    default foreach implementation). strong: PyTorch's strongest plain setting, what HF's trainer does:
    the model computes its own loss (`labels=`, no logits slice copy) and AdamW(fused=True)."""
    torch.set_num_threads(a.threads)
    model, cfg, _ = bench_model("crossfeed-bench-", a.arch, a.hidden, a.layers, a.vocab)
    ids = bench_tokens(a.batch, a.seq, cfg.vocab_size)
    rss_loaded = rss_mib()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0, **({"fused": True} if mode == "strong" else {}))
    times = []
    prof = None
    for i in range(a.steps + a.warmup):
        if a.profile and mode == "strong" and i == a.warmup:
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            prof.__enter__()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if mode == "strong":
            loss = model(input_ids=ids, labels=ids).loss
        else:
            logits = model(input_ids=ids).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1))
            del logits
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        del loss
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    if prof is not None:
        prof.__exit__(None, None, None)
        # Per step: totals over the measured steps divided by their count (the profiler's own overhead
        # makes the step slower than the unprofiled ms/step above).
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:20]
        print(f"torch strong profile (self CPU time per op, ms per step, mean of {a.steps} steps):", file=sys.stderr)
        for e in rows:
            print(f"  {e.key:<40} {e.self_cpu_time_total / 1e3 / a.steps:>9.1f} ms {e.count // a.steps:>5} calls", file=sys.stderr)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "ms": statistics.median(times) * 1e3, "peak": peak, "loaded": rss_loaded}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crossfeed", default="target/release/crossfeed")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arch", choices=["llama", "opt", "qwen3"], default="llama")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--torch-mode", choices=["default", "strong"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_mode:
        return torch_side(a, a.torch_mode)
    model, cfg, d = bench_model("crossfeed-bench-", a.arch, a.hidden, a.layers, a.vocab)
    print(f"{cpu_model()}; torch {torch.__version__}, {a.threads} threads each side")
    print(f"{a.arch}, hidden {a.hidden}, {a.layers} layers, vocab {a.vocab}: "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; batch {a.batch} x {a.seq}")
    del model

    # Each side in its own process, one after the other: every peak RSS is that process's total.
    out = subprocess.run([a.crossfeed, "bench", "train", "--model", d, "--batch-size", str(a.batch), "--seq-len", str(a.seq),
                          "--steps", str(a.steps), "--warmup", str(a.warmup), *(["--profile"] if a.profile else [])],
                         capture_output=True, text=True,
                         env={**os.environ, "RAYON_NUM_THREADS": str(a.threads)})
    sides = {}
    for mode in ["default", "strong"]:
        r = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--torch-mode", mode], capture_output=True, text=True, check=True)
        sides[mode] = json.loads(r.stdout.strip().splitlines()[-1])
        if a.profile and mode == "strong":
            sides["profile"] = r.stderr.strip()
    toks = a.batch * a.seq
    for mode, what in [("default", "default (sliced-logits loss, AdamW foreach)"), ("strong", "strong (labels= loss, AdamW fused)")]:
        t = sides[mode]
        print(f"torch {what}: {t['ms']:.1f} ms/step, {toks / t['ms'] * 1e3:.0f} tok/s, peak RSS {t['peak']:.0f} MiB total "
              f"({t['loaded']:.0f} MiB with the model built)")
    print(out.stdout.strip() or out.stderr.strip())
    m = re.search(r"([0-9.]+) ms/step", out.stdout)
    if m:
        cf = float(m.group(1))
        print(f"ratio crossfeed/torch (tokens/s): {sides['strong']['ms'] / cf:.2f}x against the strong setting, "
              f"{sides['default']['ms'] / cf:.2f}x against the default")
    m = re.search(r"peak RSS ([0-9.]+) MiB", out.stdout)
    if a.profile:
        print(sides.get("profile", ""))
    if m:
        print(f"peak RSS, total per process: crossfeed {float(m.group(1)):.0f} MiB, torch strong {sides['strong']['peak']:.0f} MiB, "
              f"torch default {sides['default']['peak']:.0f} MiB")


if __name__ == "__main__":
    main()
