"""Loop wall time with eager (`generation.pool = "full"`) and lazy generation, side by side, at a real
width on this CPU (issue 22).

The base model is a seeded random-init OPT-125M-shaped model (hidden 768, 12 layers, 12 heads, ffn 3072,
dropout 0.1 as facebook/opt-125m) over the opt125 fixture's tokenizer (vocabulary 328: no real vocabulary
ships offline). The config is the paper's layout scaled down: K = 2, alpha = beta = 0.5, batch 2 x
accumulation 2, and a mixture 20x larger than what the steps read (n = 400, 5 steps = 20 samples),
which is the paper's ratio (12,500 vs 400 read) within 1.6x. Both runs must write the same metrics.jsonl.

    python3 scripts/bench_lazy.py --crossfeed target/release/crossfeed
    scripts/gpu-check.sh --lazy ...   # on a GPU: one paper-sized generation (n 12,500, 100 steps, 256 new tokens)
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time

import torch
from transformers import OPTConfig, OPTForCausalLM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(REPO, "tests/fixtures/models/opt125")

CONFIG = """
name = "bench-lazy"
seed = 0
base_model = "{base}"
device = "{device}"
dtype = "{dtype}"
k = 2
alpha = 0.5
beta = 0.5
n = {n}
generations = {generations}
max_len = 128
keep_last = 0

[public]
kind = "toy_public"
source = {{ type = "toy", seed = 0 }}
train_size = {n}
eval_size = 16

[[private]]
kind = "toy_arithmetic"
source = {{ type = "toy", seed = 0 }}
train_size = {n}
eval_size = 16

[[private]]
kind = "toy_facts"
source = {{ type = "toy", seed = 0 }}
train_size = {n}
eval_size = 16

[train]
lr = 1e-4
total_steps = {steps}
batch_size = 2
grad_accum = 2
warmup_ratio = 0.0

[generation]
temperature = 1.0
max_new_tokens = {new}
batch_size = 16

[prompts]
source = "own_training"
prefix = {{ words = 8 }}

[eval]
prompts_per_set = 4
max_new_tokens = 16
batch_size = 8
base = false
"""


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def make_base(d):
    cfg = OPTConfig(vocab_size=328, hidden_size=768, ffn_dim=3072, num_hidden_layers=12, num_attention_heads=12,
                    max_position_embeddings=2048, word_embed_proj_dim=768, do_layer_norm_before=True,
                    bos_token_id=2, eos_token_id=2, pad_token_id=1, dropout=0.1, attention_dropout=0.0)
    torch.manual_seed(0)
    OPTForCausalLM(cfg).float().save_pretrained(d, safe_serialization=True)
    for f in os.listdir(TOKENIZER):
        if f.startswith(("vocab", "merges", "tokenizer", "special_tokens")):
            shutil.copy(os.path.join(TOKENIZER, f), d)


def generated(root):
    made = total = 0
    for dirpath, _, files in os.walk(root):
        if "generated.json" in files:
            g = json.load(open(os.path.join(dirpath, "generated.json")))
            made += g["generated"]
            total += g["set_size"]
    return made, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crossfeed", default=os.path.join(REPO, "target/release/crossfeed"))
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--new", type=int, default=32, help="generation.max_new_tokens")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-lazy-")
    try:
        base = os.path.join(tmp, "base")
        make_base(base)
        cfg = os.path.join(tmp, "bench.toml")
        open(cfg, "w").write(CONFIG.format(base=base, device=a.device, dtype=a.dtype, n=a.n, generations=a.generations, steps=a.steps, new=a.new))
        rows = []
        for pool in ["full", "lazy"]:
            runs = os.path.join(tmp, pool)
            t0 = time.perf_counter()
            subprocess.run([a.crossfeed, "run", cfg, "--runs-dir", runs, "--set", f"generation.pool=\"{pool}\""],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            root = os.path.join(runs, "bench-lazy")
            gen_s = 0.0
            for dirpath, _, files in os.walk(root):
                if "generate.DONE" in files:
                    gen_s += json.load(open(os.path.join(dirpath, "generate.DONE")))["wall_s"]
            rows.append((pool, wall, gen_s, *generated(root), open(os.path.join(root, "metrics.jsonl"), "rb").read()))
        print(f"{a.device} {a.dtype}, CPU: {cpu_model()}, {os.cpu_count()} threads; OPT-125M shape (hidden 768, 12 layers), vocab 328; "
              f"K=2, n={a.n}, {a.steps} steps x 2 x 2, {a.generations} generations, max_new_tokens {a.new}")
        print(f"{'generation.pool':<16} {'samples generated':>18} {'generate stages s':>18} {'loop wall s':>12}")
        for pool, wall, gen_s, made, total, _ in rows:
            print(f"{pool:<16} {f'{made}/{total}':>18} {gen_s:>18.1f} {wall:>12.1f}")
        print(f"lazy/full: generate {rows[1][2] / rows[0][2]:.2f}x, loop {rows[1][1] / rows[0][1]:.2f}x; "
              f"metrics.jsonl identical: {rows[0][5] == rows[1][5]}")
        if rows[0][5] != rows[1][5]:
            raise SystemExit("metrics differ between full and lazy generation")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
