#!/usr/bin/env python3
"""Side-by-side training benchmark: PyTorch eager (transformers + torch.optim.AdamW) and `crossfeed bench
train` on the same random-init model, shapes, batches and dtype, in one invocation; prints both and the
ratio. The default shape is the Llama-like 7.36M-parameter model of notes/cpu-performance.md.

    python3 scripts/bench_train.py [--crossfeed target/release/crossfeed] [--steps 10] [--threads 2]
"""
import argparse, os, re, subprocess, time, statistics

import torch

from bench_common import bench_model, bench_tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crossfeed", default="target/release/crossfeed")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, cfg, d = bench_model("crossfeed-bench-")

    ids = bench_tokens(a.batch, a.seq, cfg.vocab_size)
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
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    tmed = statistics.median(times)
    toks = a.batch * a.seq
    print(f"torch {torch.__version__} eager: {tmed*1e3:.1f} ms/step, {toks/tmed:.0f} tok/s")
    out = subprocess.run([a.crossfeed, "bench", "train", "--model", d, "--batch-size", str(a.batch), "--seq-len", str(a.seq),
                          "--steps", str(a.steps), "--warmup", str(a.warmup)], capture_output=True, text=True,
                         env={**os.environ, "RAYON_NUM_THREADS": str(a.threads)})
    print(out.stdout.strip() or out.stderr.strip())
    m = re.search(r"([0-9.]+) ms/step", out.stdout)
    if m:
        print(f"ratio crossfeed/torch (tokens/s): {tmed * 1e3 / float(m.group(1)):.2f}x")


if __name__ == "__main__":
    main()
