#!/usr/bin/env python3
"""Side-by-side training benchmark: PyTorch eager (transformers + torch.optim.AdamW) and `crossfeed bench
train` on the same random-init model, shapes, batches and dtype, in one invocation; prints both, the
ratio, and each side's peak resident memory (and what it held before the first step). The default shape
is the Llama-like 7.36M-parameter model of notes/cpu-performance.md; the OPT-125M shape is
`--arch opt --hidden 768 --layers 12 --vocab 50272 --batch 2 --seq 512`.

    python3 scripts/bench_train.py [--crossfeed target/release/crossfeed] [--steps 10] [--threads 2]
        [--arch llama|opt] [--hidden 256] [--layers 4] [--vocab 8192] [--batch 4] [--seq 128]
"""
import argparse, os, re, resource, subprocess, time, statistics

import torch

from bench_common import bench_model, bench_tokens


def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crossfeed", default="target/release/crossfeed")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arch", choices=["llama", "opt"], default="llama")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, cfg, d = bench_model("crossfeed-bench-", a.arch, a.hidden, a.layers, a.vocab)
    print(f"{a.arch}, hidden {a.hidden}, {a.layers} layers, vocab {a.vocab}: "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; batch {a.batch} x {a.seq}")

    # The crossfeed side runs first, in its own process, so neither side's memory counts for the other.
    out = subprocess.run([a.crossfeed, "bench", "train", "--model", d, "--batch-size", str(a.batch), "--seq-len", str(a.seq),
                          "--steps", str(a.steps), "--warmup", str(a.warmup)], capture_output=True, text=True,
                         env={**os.environ, "RAYON_NUM_THREADS": str(a.threads)})

    ids = bench_tokens(a.batch, a.seq, cfg.vocab_size)
    rss_loaded = rss_mib()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    times = []
    for i in range(a.steps + a.warmup):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        del logits, loss
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    tmed = statistics.median(times)
    toks = a.batch * a.seq
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {torch.__version__} eager: {tmed*1e3:.1f} ms/step, {toks/tmed:.0f} tok/s")
    print(f"torch: peak RSS {peak:.0f} MiB ({rss_loaded:.0f} MiB with the model built, before the first step)")
    print(out.stdout.strip() or out.stderr.strip())
    m = re.search(r"([0-9.]+) ms/step", out.stdout)
    if m:
        print(f"ratio crossfeed/torch (tokens/s): {tmed * 1e3 / float(m.group(1)):.2f}x")
    m = re.search(r"peak RSS ([0-9.]+) MiB \(([0-9.]+) MiB", out.stdout)
    if m:
        cf_step, t_step = float(m.group(1)) - float(m.group(2)), peak - rss_loaded
        print(f"memory of training (peak minus model loaded): crossfeed {cf_step:.0f} MiB, torch {t_step:.0f} MiB")


if __name__ == "__main__":
    main()
