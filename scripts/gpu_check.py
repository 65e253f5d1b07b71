#!/usr/bin/env python3
"""The GPU checks of issues 15 and 35 in one run (scripts/gpu-check.sh calls this; see its header).
In order:
0. the driver (>= 580) and the CUDA 13 libraries the binary dlopens (libcuda, cuBLAS 13, cuBLASLt 13,
   cuRAND 10), found on LD_LIBRARY_PATH or in the `nvidia-*` Python packages beside torch.
1. parity: `crossfeed score` on every fixture model against transformers on the same device:
   f32 mean CE rel 1e-4 and per-sequence rel 1e-4; bf16 (crossfeed --dtype bf16 vs torch.autocast bf16)
   rel 2e-2; and `crossfeed train` (3 AdamW steps) on the device against the same binary on CPU:
   loss rel 1e-4, grad norm rel 1e-3 in f32; bf16 the same at rel 2e-2 (crossfeed's CPU bf16 is
   checked against torch.autocast by the test suite).
   Then planted argmax ties at V = 50,272 / 128,256 (`crossfeed bench argmax-ties`: the lowest tied
   index, f32 and bf16; also how often candle's own argmax picked another), and greedy tokens of the
   same 16 prompts at batch 1 and 16 (reported, not failed: cuBLAS picks kernels by shape).
2. sampling at the real vocabularies (50,272 and 128,256): `crossfeed generate` in every transformers
   sampling mode runs on the device; top_k = 1 and a tiny top_p equal greedy; a sampled run and a
   `crossfeed train` run repeated give the same bytes (two-run determinism on the device).
3. benchmarks at the paper's shapes (random-init OPT-350M and Llama-3.2-1B layouts, seq 512, bf16), side
   by side with PyTorch at its strongest plain setting (transformers with sdpa attention, the model's own
   `labels=` loss, AdamW(fused=True), under autocast) and transformers `generate`: tokens/s, ratio, peak
   memory of each process, training MFU; an OPT-350M-shaped train step with dropout on and off, and a
   Llama-3.2-1B-shaped decode step with top_p 1 / 0.9 and repetition penalty off / on, each beside torch.
   `--small` swaps in tiny shapes so the script runs anywhere (CPU) and is itself tested.
Prints markdown rows for BENCHMARKS.md and writes bench-<model>.json for `crossfeed run --dry-run --bench`.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "models")
VARIANTS = ["opt125", "opt350", "llama32", "llama"]
FAILURES = []

# Dense bf16 tensor-core peak (FLOP/s) per GPU, for MFU; --peak-tflops overrides.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what)
    if not ok:
        FAILURES.append(what)


def run_measured(cmd, device, env=None):
    """Runs cmd; returns (stdout, seconds, peak bytes): GPU memory by nvidia-smi polling on cuda, peak RSS on CPU."""
    on_gpu = device.startswith("cuda") and shutil.which("nvidia-smi")
    base = 0
    if on_gpu:
        base = int(subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                  capture_output=True, text=True).stdout.strip().splitlines()[0]) << 20
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    peak = [0]
    stop = threading.Event()

    def gpu_used():
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=5).stdout
        return int(out.strip().splitlines()[0]) << 20

    # Whole-GPU memory in use minus what was in use before the process started (the box is assumed to
    # run nothing else); per-process figures are often hidden inside containers.
    def poll():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], gpu_used() - base)
            except Exception:
                pass
            stop.wait(0.1)

    th = None
    if on_gpu:
        th = threading.Thread(target=poll, daemon=True)
        th.start()
    # Read both pipes in threads and reap the child with wait4, which gives this child's own peak RSS.
    bufs = {}
    readers = [threading.Thread(target=lambda k=k, s=s: bufs.__setitem__(k, s.read())) for k, s in (("out", p.stdout), ("err", p.stderr))]
    for r in readers:
        r.start()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    out, err = bufs["out"], bufs["err"]
    secs = time.perf_counter() - t0
    stop.set()
    if th:
        th.join()
    if not device.startswith("cuda"):
        peak[0] = ru.ru_maxrss * 1024
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-3000:]}")
    return out, secs, peak[0]


# --------------------------------------------------------------------------------- driver, libraries
CUDA_LIBS = ["libcuda.so.1", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10"]


def nvidia_lib_dirs():
    """The lib folders of the `nvidia-*` wheels beside torch (where pip's CUDA libraries live)."""
    try:
        import nvidia
    except ImportError:
        return []
    dirs = []
    for root in nvidia.__path__:
        for sub in sorted(os.listdir(root)):
            for lib in (os.path.join(root, sub, "lib"), os.path.join(root, sub, "lib64")):
                if os.path.isdir(lib):
                    dirs.append(lib)
    return dirs


def environment(a):
    print(f"## driver and CUDA libraries ({a.device})")
    if not a.device.startswith("cuda"):
        print("  skip  not a CUDA device")
        return
    smi = shutil.which("nvidia-smi")
    check(smi is not None, "nvidia-smi on PATH")
    if smi:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], capture_output=True, text=True).stdout
        first = out.strip().splitlines()[0] if out.strip() else ""
        print(f"  {first}")
        drv = first.split(",")[1].strip() if first.count(",") >= 1 else ""
        major = int(drv.split(".")[0]) if drv[:1].isdigit() else 0
        check(major >= 580, f"driver {drv or '?'} >= 580 (CUDA 13)")
    import ctypes
    import ctypes.util
    missing = []
    for lib in CUDA_LIBS:
        try:
            ctypes.CDLL(lib)
            print(f"  ok    {lib} loads")
        except OSError:
            missing.append(lib)
    if missing:
        found = {lib: d for d in nvidia_lib_dirs() for lib in missing if os.path.exists(os.path.join(d, lib))}
        for lib in missing:
            check(False, f"{lib} loads" + (f" (present in {found[lib]}: add it to LD_LIBRARY_PATH)" if lib in found else " (not found)"))
        if found:
            print("  export LD_LIBRARY_PATH=" + ":".join(sorted(set(found.values()))) + ":$LD_LIBRARY_PATH")


# ---------------------------------------------------------------------------------------------- parity
def torch_ce(model, ids, mask, device, dtype):
    with torch.no_grad():
        if dtype == "bf16":
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
                logits = model(input_ids=ids, attention_mask=mask).logits
        else:
            logits = model(input_ids=ids, attention_mask=mask).logits
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -lp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    w = mask[:, 1:].float()
    return [float(x) for x in ((nll * w).sum(1) / w.sum(1))], float((nll * w).sum() / w.sum())


def parity(a, tmp):
    print(f"## parity on {a.device}")
    for v in VARIANTS:
        d = os.path.join(FIXTURES, v)
        g = json.load(open(os.path.join(d, "golden.json")))
        data = os.path.join(tmp, f"{v}.jsonl")
        with open(data, "w") as f:
            for t in g["texts"]:
                f.write(json.dumps({"text": t}) + "\n")
        model = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager").float().to(a.device).eval()
        for dtype, tol in [("f32", 1e-4), ("bf16", 2e-2)]:
            out, _, _ = run_measured([a.crossfeed, "score", "--model", d, "--data", data, "--device", a.device,
                                      "--dtype", dtype, "--batch-size", "8"], a.device)
            ours = json.loads(out)
            # The same right-padded batch crossfeed scores (one batch of all texts).
            seqs = [[int(x) for x in s] for s in g["token_ids"]]
            t = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), t), g["pad_id"], dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, s in enumerate(seqs):
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            rows, mean = torch_ce(model, ids.to(a.device), mask.to(a.device), a.device, dtype)
            worst = max(abs(r["ce_mean"] - w) / abs(w) for r, w in zip(ours["per_sequence"], rows))
            check(worst <= tol, f"{v} score {dtype}: per-sequence CE rel diff {worst:.1e} <= {tol:g} (mean {ours['mean_ce']:.6f} vs torch {mean:.6f})")
        if a.device == "cpu":
            continue
        for dtype, (tl, tn) in [("f32", (1e-4, 1e-3)), ("bf16", (2e-2, 2e-2))]:
            logs = {}
            for dev in (a.device, "cpu"):
                outdir = os.path.join(tmp, f"train-{v}-{dtype}-{dev.replace(':', '')}")
                run_measured([a.crossfeed, "train", "--model", d, "--data", data, "--out", outdir, "--device", dev, "--dtype", dtype,
                              "--steps", "3", "--lr", "1e-3", "--batch-size", "2", "--grad-accum", "2"], dev)
                logs[dev] = [json.loads(l) for l in open(os.path.join(outdir, "train_log.jsonl"))]
            wl = max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(logs[a.device], logs["cpu"]))
            wn = max(abs(x["grad_norm"] - y["grad_norm"]) / abs(y["grad_norm"]) for x, y in zip(logs[a.device], logs["cpu"]))
            check(wl <= tl and wn <= tn, f"{v} train {dtype} on {a.device} vs cpu: loss rel {wl:.1e} <= {tl:g}, grad norm rel {wn:.1e} <= {tn:g}")


def argmax_ties(a):
    print(f"## planted argmax ties on {a.device}")
    # On the CPU the generic path (what CUDA runs) is forced, so the check is not the CPU kernel's.
    env = {**os.environ, "CROSSFEED_GENERIC_KERNELS": "1"} if a.device == "cpu" else None
    r = subprocess.run([a.crossfeed, "bench", "argmax-ties", "--device", a.device], capture_output=True, text=True, env=env)
    for line in r.stdout.splitlines():
        c = json.loads(line)
        check(c["wrong_rows"] == 0, f"V={c['vocab']} {c['dtype']}: lowest tied index in {c['rows'] - c['wrong_rows']}/{c['rows']} rows "
              f"(candle's own argmax picked another in {c['candle_argmax_other_index_rows']})")
    check(r.returncode == 0, "crossfeed bench argmax-ties exits 0" + ("" if r.returncode == 0 else f": {r.stderr.strip()[-300:]}"))


def greedy_batches(a, tmp, d, name):
    """Greedy tokens of the same prompts at batch 1 and 16: reported, since a GPU's kernels may change
    with the batch shape (cuBLAS split-K) and move a near-tie."""
    prompts = os.path.join(tmp, "greedy-prompts.jsonl")
    with open(prompts, "w") as f:
        for i in range(16):
            f.write(json.dumps({"prompt": f"Story {i}: once upon a time there was a"}) + "\n")
    outs = {}
    for bs in (1, 16):
        out = os.path.join(tmp, f"greedy-{name}-{bs}.jsonl")
        run_measured([a.crossfeed, "generate", "--model", d, "--prompts", prompts, "--out", out, "--device", a.device,
                      "--max-new-tokens", "16", "--temperature", "0", "--batch-size", str(bs)], a.device)
        outs[bs] = [json.loads(l)["token_ids"] for l in open(out)]
    rows = sum(x != y for x, y in zip(outs[1], outs[16]))
    first = [next((j for j, (p, q) in enumerate(zip(x, y)) if p != q), None) for x, y in zip(outs[1], outs[16])]
    print(f"  info  {name} greedy batch 1 vs 16: {rows}/16 rows differ" + (f" (first differing step per row: {first})" if rows else ""))


# ------------------------------------------------------------------------------ sampling, determinism
SAMPLING = [
    ("greedy", ["--temperature", "0"]),
    ("top_k 1", ["--top-k", "1"]),
    ("top_p 1e-6", ["--top-p", "0.000001"]),
    ("transformers defaults (temperature 1, top_k 50)", ["--temperature", "1", "--top-k", "50"]),
    ("top_p 0.9", ["--top-p", "0.9"]),
    ("temperature 0.7, top_k 50, top_p 0.95", ["--temperature", "0.7", "--top-k", "50", "--top-p", "0.95"]),
    ("repetition_penalty 1.3, top_k 20", ["--repetition-penalty", "1.3", "--top-k", "20"]),
    ("min_p 0.05", ["--min-p", "0.05"]),
    ("temperature 1.5, top_k 100, top_p 0.8, min_p 0.02", ["--temperature", "1.5", "--top-k", "100", "--top-p", "0.8", "--min-p", "0.02"]),
]


def sampling_and_determinism(a, tmp):
    print(f"## sampling at real vocabularies and two-run determinism on {a.device}")
    helptext = subprocess.run([a.crossfeed, "generate", "--help"], capture_output=True, text=True).stdout
    prompts = os.path.join(tmp, "prompts.jsonl")
    with open(prompts, "w") as f:
        for p in ["The cat", "Question: what is", "Once upon a time", "1 2 3"]:
            f.write(json.dumps({"prompt": p}) + "\n")
    for arch, vocab, fixture in [("opt", 50272, "opt125"), ("llama", 128256, "llama32")]:
        kw = dict(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
        kw.update(dict(ffn_dim=256, word_embed_proj_dim=64, max_position_embeddings=512) if arch == "opt" else dict(intermediate_size=256, num_key_value_heads=2))
        d, _, _ = make_model(arch, kw, tmp, f"sampling-{arch}")
        os.remove(os.path.join(d, "tokenizer.json"))
        for f in os.listdir(os.path.join(FIXTURES, fixture)):  # a real tokenizer (its ids are all < vocab)
            if f.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
                shutil.copy(os.path.join(FIXTURES, fixture, f), d)
        outs = {}
        for name, flags in SAMPLING:
            if flags[0] not in helptext:
                check(False, f"{arch} V={vocab} {name}: this crossfeed has no {flags[0]}")
                continue
            out = os.path.join(tmp, f"gen-{arch}-{len(outs)}.jsonl")
            r = subprocess.run([a.crossfeed, "generate", "--model", d, "--prompts", prompts, "--out", out, "--device", a.device,
                                "--max-new-tokens", "16", "--seed", "7", *flags], capture_output=True, text=True)
            ok = r.returncode == 0
            check(ok, f"{arch} V={vocab} {name}: runs" + ("" if ok else f" ({r.stderr.strip().splitlines()[-1:]})"))
            if ok:
                outs[name] = [json.loads(l)["token_ids"] for l in open(out)]
        greedy_batches(a, tmp, d, f"{arch} V={vocab}")
        for name in ["top_k 1", "top_p 1e-6"]:
            if name in outs and "greedy" in outs:
                check(outs[name] == outs["greedy"], f"{arch} V={vocab} {name} equals greedy token for token")
        # The same sampled run twice gives the same tokens.
        again = os.path.join(tmp, f"gen-{arch}-again.jsonl")
        name, flags = SAMPLING[5]
        subprocess.run([a.crossfeed, "generate", "--model", d, "--prompts", prompts, "--out", again, "--device", a.device,
                        "--max-new-tokens", "16", "--seed", "7", *flags], capture_output=True, text=True)
        if name in outs and os.path.exists(again):
            check([json.loads(l)["token_ids"] for l in open(again)] == outs[name], f"{arch} V={vocab} {name}: two runs, same tokens")
    # Two identical `crossfeed train` runs on the device: same log and the same weight bytes.
    d = os.path.join(FIXTURES, "llama32")
    data = os.path.join(tmp, "det.jsonl")
    with open(data, "w") as f:
        for t in json.load(open(os.path.join(d, "golden.json")))["texts"]:
            f.write(json.dumps({"text": t}) + "\n")
    runs = []
    for i in range(2):
        outdir = os.path.join(tmp, f"det-{i}")
        run_measured([a.crossfeed, "train", "--model", d, "--data", data, "--out", outdir, "--device", a.device, "--steps", "3",
                      "--lr", "1e-3", "--batch-size", "2", "--grad-accum", "2"], a.device)
        log = [{k: v for k, v in json.loads(l).items() if k != "tokens_per_s"} for l in open(os.path.join(outdir, "train_log.jsonl"))]
        runs.append((log, open(os.path.join(outdir, "model.safetensors"), "rb").read()))
    check(runs[0][0] == runs[1][0], "train twice on the device: identical losses and grad norms")
    check(runs[0][1] == runs[1][1], "train twice on the device: identical model.safetensors bytes")


# ------------------------------------------------------------------------------------------ benchmarks
def shapes(small):
    if small:
        return {
            "opt-350m-shaped (small)": ("opt", dict(vocab_size=512, hidden_size=64, ffn_dim=256, num_hidden_layers=2, num_attention_heads=4,
                                                     word_embed_proj_dim=32, do_layer_norm_before=False, max_position_embeddings=2048)),
            "llama-3.2-1b-shaped (small)": ("llama", dict(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                                                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)),
        }
    return {
        "opt-350m-shaped": ("opt", dict(vocab_size=50272, hidden_size=1024, ffn_dim=4096, num_hidden_layers=24, num_attention_heads=16,
                                        word_embed_proj_dim=512, do_layer_norm_before=False, max_position_embeddings=2048)),
        "llama-3.2-1b-shaped": ("llama", dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                              num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
                                              rope_theta=500000.0, max_position_embeddings=131072,
                                              rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                                                original_max_position_embeddings=8192))),
    }


def make_model(arch, kw, tmp, name):
    torch.manual_seed(0)
    if arch == "opt":
        cfg = OPTConfig(**kw, bos_token_id=2, eos_token_id=2, pad_token_id=1, enable_bias=True)
        model = OPTForCausalLM(cfg)
    else:
        cfg = LlamaConfig(**kw, bos_token_id=0, eos_token_id=1)
        model = LlamaForCausalLM(cfg)
    d = os.path.join(tmp, re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
    os.makedirs(d, exist_ok=True)
    model.config.save_pretrained(d)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (cfg.tie_word_embeddings and k == "lm_head.weight")}
    save_file(state, os.path.join(d, "model.safetensors"))
    Tokenizer(models.BPE()).save(os.path.join(d, "tokenizer.json"))
    return d, cfg, sum(p.numel() for p in model.parameters())


def tokens(rows, cols, vocab):
    return torch.tensor([[(i * 7919 + j * 104729) % vocab for j in range(cols)] for i in range(rows)])


WORKER = r'''
import json, sys, time, statistics, torch
from transformers import AutoModelForCausalLM
a = json.loads(sys.argv[1])
dev = a["device"]
torch.manual_seed(0)
def toks(r, c, v):
    return torch.tensor([[(i * 7919 + j * 104729) % v for j in range(c)] for i in range(r)], device=dev)
def sync():
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
if a["what"] == "train":
    # PyTorch's strongest plain setting: transformers' default attention (sdpa), the model's own loss
    # (labels=, no sliced copy of the logits) and the fused AdamW.
    m = AutoModelForCausalLM.from_pretrained(a["dir"], attn_implementation="sdpa").float().to(dev)
    # eval() only switches dropout off; gradients flow the same.
    m.train(a.get("dropout", True))
    v = m.config.vocab_size
    ids = toks(a["batch"], a["seq"], v)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5, weight_decay=0.0, fused=True)
    times = []
    for i in range(a["steps"] + a["warmup"]):
        sync(); t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.split(":")[0], dtype=torch.bfloat16, enabled=a["dtype"] == "bf16"):
            loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        sync()
        if i >= a["warmup"]:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"tok_s": a["batch"] * a["seq"] / statistics.median(times)}))
else:
    m = AutoModelForCausalLM.from_pretrained(a["dir"], attn_implementation="sdpa").to(dev).eval()
    if a["dtype"] == "bf16":
        m = m.to(torch.bfloat16)
    p = toks(a["prompts"], a["prompt_len"], m.config.vocab_size)
    b = a["batch"]
    with torch.no_grad():
        m.generate(input_ids=p[:b], attention_mask=torch.ones_like(p[:b]), do_sample=True, max_new_tokens=4, min_new_tokens=4, pad_token_id=0)
        sync(); t0 = time.perf_counter()
        for s in range(0, a["prompts"], b):
            x = p[s:s + b]
            m.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=True, top_k=0, temperature=1.0,
                       top_p=a.get("top_p", 1.0), repetition_penalty=a.get("repetition_penalty", 1.0),
                       max_new_tokens=a["new"], min_new_tokens=a["new"], pad_token_id=0)
        sync()
    print(json.dumps({"tok_s": a["prompts"] * a["new"] / (time.perf_counter() - t0)}))
'''


def torch_worker(args, device):
    out, _, peak = run_measured([sys.executable, "-c", WORKER, json.dumps(args)], device)
    return json.loads(out.strip().splitlines()[-1])["tok_s"], peak


def last_rate(out, pattern):
    m = re.search(pattern, out)
    if not m:
        raise RuntimeError(f"no throughput in crossfeed output: {out!r}")
    return float(m.group(1))


def benchmarks(a, tmp):
    print(f"## benchmarks on {a.device} ({'small shapes' if a.small else 'paper shapes'}, {a.dtype})")
    seq = 32 if a.small else a.seq
    tb = 2 if a.small else a.train_batch
    steps, warmup = (2, 1) if a.small else (10, 3)
    gen = dict(prompts=4, prompt_len=16, new=8, batch=4) if a.small else dict(prompts=a.gen_prompts, prompt_len=48, new=256, batch=a.gen_batch)
    peak_flops = a.peak_tflops * 1e12 if a.peak_tflops else None
    if peak_flops is None and a.device.startswith("cuda"):
        name = torch.cuda.get_device_name(0)
        peak_flops = next((v for k, v in PEAK_BF16.items() if k in name), None)
    env = {"RAYON_NUM_THREADS": str(a.threads)} if a.device == "cpu" else {}
    date = datetime.date.today().isoformat()
    devname = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else f"CPU ({a.threads} threads)"
    rows = []
    for name, (arch, kw) in shapes(a.small).items():
        d, cfg, n_params = make_model(arch, kw, tmp, name)
        common = ["--model", d, "--device", a.device, "--dtype", a.dtype]
        # OPT's config sets dropout 0.1 (transformers' default): its train step is timed with and without.
        for dropout in ([True, False] if arch == "opt" else [True]):
            flag = [] if dropout else ["--no-dropout"]
            label = (", dropout " + ("on" if dropout else "off")) if arch == "opt" else ""
            out, _, cf_mem = run_measured([a.crossfeed, "bench", "train", *common, "--batch-size", str(tb), "--seq-len", str(seq),
                                           "--steps", str(steps), "--warmup", str(warmup), *flag], a.device, env)
            rate = last_rate(out, r"([0-9.]+) tok/s")
            th_rate, th_mem = torch_worker(dict(what="train", dir=d, device=a.device, dtype=a.dtype, batch=tb, seq=seq, steps=steps,
                                                warmup=warmup, dropout=dropout), a.device)
            if dropout:
                cf_train = rate
            # 6 FLOPs per parameter per token (forward + backward) + attention scores 12·L·h·s.
            flops_tok = 6 * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
            mfu = lambda r: f"{100 * r * flops_tok / peak_flops:.1f}%" if peak_flops else "n/a"
            rows.append(f"| {date} | {devname} | {name} ({n_params / 1e6:.1f}M) | train {a.dtype}, batch {tb}x{seq}{label} | {rate:.0f} | {th_rate:.0f} | "
                        f"{rate / th_rate:.2f}x | {cf_mem / 2**30:.2f} GiB | {th_mem / 2**30:.2f} GiB | {mfu(rate)} / {mfu(th_rate)} |")
        # Llama's decode step also with top_p 0.9 and with the repetition penalty (shorter runs: the
        # step's cost, not a paper generation).
        variants = [("", {}, gen)]
        if arch == "llama":
            # One batch of 64 new tokens; --small's own shape already is one batch, its baseline serves.
            short = gen if a.small else dict(gen, prompts=gen["batch"], new=64)
            variants += [(", top_p 0.9", {"top_p": 0.9}, short), (", repetition_penalty 1.3", {"repetition_penalty": 1.3}, short)]
            if not a.small:
                variants.append((", top_p 1", {}, short))
        for label, sampling, g in variants:
            flags = [x for k, val in sampling.items() for x in (f"--{k.replace('_', '-')}", str(val))]
            out, _, cf_gmem = run_measured([a.crossfeed, "bench", "generate", *common, "--prompts", str(g["prompts"]), "--prompt-len", str(g["prompt_len"]),
                                            "--new-tokens", str(g["new"]), "--batch-size", str(g["batch"]), *flags], a.device, env)
            rate = last_rate(out, r"= ([0-9.]+) tok/s")
            th_rate, th_gmem = torch_worker(dict(what="generate", dir=d, device=a.device, dtype=a.dtype, **g, **sampling), a.device)
            if not label:
                cf_gen = rate
            step_ms = lambda r: f"{1e3 * min(g['batch'], g['prompts']) / r:.1f} ms/step"
            rows.append(f"| {date} | {devname} | {name} ({n_params / 1e6:.1f}M) | generate {a.dtype}, {g['prompts']} prompts x {g['prompt_len']}+{g['new']}, "
                        f"batch {g['batch']}{label} ({step_ms(rate)} vs {step_ms(th_rate)}) | {rate:.0f} | {th_rate:.0f} | {rate / th_rate:.2f}x | "
                        f"{cf_gmem / 2**30:.2f} GiB | {th_gmem / 2**30:.2f} GiB | - |")
        out, _, _ = run_measured([a.crossfeed, "bench", "forward", *common, "--batch-size", str(tb), "--seq-len", str(seq), "--steps", str(steps)], a.device, env)
        cf_fwd = last_rate(out, r"forward ([0-9.]+) tok/s")
        bench = dict(device=devname, model=name, train_tokens_per_s=cf_train, generate_tokens_per_s=cf_gen, score_tokens_per_s=cf_fwd)
        path = os.path.join(a.out, f"bench-{os.path.basename(d)}.json")
        with open(path, "w") as f:
            json.dump(bench, f, indent=1)
        print(f"  wrote {path}")
    print("\nRows for BENCHMARKS.md (tokens/s; memory = peak per process: GPU memory from nvidia-smi on cuda, RSS on CPU; "
          "MFU crossfeed / torch against the dense bf16 peak):")
    print("| date | device | model | what | crossfeed tok/s | PyTorch tok/s | ratio | crossfeed mem | PyTorch mem | MFU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(r)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crossfeed", default=os.path.join(ROOT, "target", "cuda", "release", "crossfeed"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32", "f16"])
    ap.add_argument("--small", action="store_true", help="tiny shapes (runs on CPU; tests the script)")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--gen-prompts", type=int, default=128)
    ap.add_argument("--gen-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs' dense bf16)")
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--lazy", action="store_true", help="also time one paper generation with eager and lazy generation (scripts/bench_lazy.py)")
    ap.add_argument("--out", default=".", help="where bench-<model>.json files go")
    a = ap.parse_args()
    if a.device == "cpu":
        torch.set_num_threads(a.threads)
    tmp = tempfile.mkdtemp(prefix="crossfeed-gpu-check-")
    t0 = time.perf_counter()

    def timed(f, *args):
        t = time.perf_counter()
        f(*args)
        print(f"  ({f.__name__}: {time.perf_counter() - t:.0f} s; {time.perf_counter() - t0:.0f} s so far)")

    try:
        timed(environment, a)
        if not a.skip_parity:
            timed(parity, a, tmp)
            timed(argmax_ties, a)
            timed(sampling_and_determinism, a, tmp)
        if not a.skip_bench:
            timed(benchmarks, a, tmp)
        if a.lazy:
            # One paper generation both ways (issue 22): n = 12,500, 100 steps x 2 x 2, 256 new tokens.
            shape = ["--n", "400", "--steps", "5", "--new", "32"] if a.small else ["--n", "12500", "--steps", "100", "--new", "256"]
            subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_lazy.py"), "--crossfeed", a.crossfeed,
                            "--device", a.device, "--dtype", a.dtype, *shape], check=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILURES:
        print(f"\ngpu-check: {len(FAILURES)} parity check(s) FAILED", file=sys.stderr)
        sys.exit(1)
    print("\ngpu-check: all parity checks passed")


if __name__ == "__main__":
    main()
