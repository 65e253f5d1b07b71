#!/usr/bin/env python3
"""Side-by-side generation benchmark: transformers' `generate` and `crossfeed bench generate` on the same
random-init model (Llama-like, default 7.36M parameters; --arch opt for OPT), prompts, lengths, batch size and dtype, in one
invocation; prints both throughputs and the ratio. EOS is suppressed on both sides (min_new_tokens), so
both generate exactly prompts × new_tokens tokens.

    python3 scripts/bench_generate.py [--crossfeed target/release/crossfeed] [--prompts 32] [--new 64]
        [--batch 16] [--arch llama|opt] [--hidden 256] [--layers 4] [--vocab 8192]
"""
import argparse, os, re, subprocess, time

import torch

from bench_common import bench_model, bench_tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crossfeed", default="target/release/crossfeed")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arch", choices=["llama", "opt"], default="llama")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, cfg, d = bench_model("crossfeed-bench-gen-", a.arch, a.hidden, a.layers, a.vocab)
    print(f"{a.arch}, hidden {a.hidden}, {a.layers} layers, vocab {a.vocab}: "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    model.eval()

    prompts = bench_tokens(a.prompts, a.prompt_len, cfg.vocab_size)
    with torch.no_grad():
        model.generate(input_ids=prompts[: a.batch], attention_mask=torch.ones_like(prompts[: a.batch]), do_sample=True,
                       max_new_tokens=4, min_new_tokens=4, pad_token_id=0)
        t0 = time.perf_counter()
        for s in range(0, a.prompts, a.batch):
            ids = prompts[s:s + a.batch]
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, temperature=1.0,
                           max_new_tokens=a.new, min_new_tokens=a.new, pad_token_id=0)
        secs = time.perf_counter() - t0
    toks = a.prompts * a.new
    print(f"transformers generate (torch {torch.__version__}): {toks} new tokens in {secs:.2f}s = {toks/secs:.0f} tok/s")
    out = subprocess.run([a.crossfeed, "bench", "generate", "--model", d, "--prompts", str(a.prompts), "--prompt-len",
                          str(a.prompt_len), "--new-tokens", str(a.new), "--batch-size", str(a.batch)],
                         capture_output=True, text=True, env={**os.environ, "RAYON_NUM_THREADS": str(a.threads)})
    print(out.stdout.strip() or out.stderr.strip())
    m = re.search(r"= ([0-9.]+) tok/s", out.stdout)
    if m:
        print(f"ratio crossfeed/transformers (tokens/s): {float(m.group(1)) / (toks/secs):.2f}x")


if __name__ == "__main__":
    main()
