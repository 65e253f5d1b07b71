#!/usr/bin/env python3
"""Side-by-side generation benchmark: transformers' `generate` and `crossfeed bench generate` on the same
random-init model (Llama-like, default 7.36M parameters), prompts, lengths, batch size and dtype, in one
invocation; prints both throughputs and the ratio. EOS is suppressed on both sides (min_new_tokens), so
both generate exactly prompts × new_tokens tokens.

    python3 scripts/bench_generate.py [--crossfeed target/release/crossfeed] [--prompts 32] [--new 64]
"""
import argparse, os, re, subprocess, tempfile, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crossfeed", default="target/release/crossfeed")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = LlamaConfig(vocab_size=8192, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float().eval()
    d = tempfile.mkdtemp(prefix="crossfeed-bench-gen-")
    model.config.save_pretrained(d)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(d, "model.safetensors"))
    from tokenizers import Tokenizer, models
    Tokenizer(models.BPE()).save(os.path.join(d, "tokenizer.json"))

    prompts = torch.tensor([[(i * 7919 + j * 104729) % cfg.vocab_size for j in range(a.prompt_len)] for i in range(a.prompts)])
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
