#!/usr/bin/env python3
"""Dropout parity goldens: 5 AdamW steps of transformers in train mode (eager attention) on every fixture
model with dropout 0.1 (OPT: `dropout` and `attention_dropout`; Llama: `attention_dropout`), recording
every mask torch draws. `torch.nn.functional.dropout` is wrapped: it draws `bernoulli(1 - p)` as torch's
own dropout does, applies `x * (keep / (1 - p))` and records `keep` in call order. Same protocol as
`train_golden` in make_model_fixtures.py (full batch of its TEXTS, AdamW lr 1e-2, HF no-decay groups,
weight decay 0.1, linear schedule with 2 warmup steps, clipping at 1.0).

    python3 scripts/make_dropout_fixtures.py   # writes tests/fixtures/train/dropout.{json,safetensors}
    python3 scripts/make_dropout_fixtures.py --families   # dropout_families.* (Qwen2/Qwen3/GPT-2), dropout_gemma3.*, dropout_gemma2.*
    python3 scripts/make_dropout_fixtures.py --families --only dropout_gemma2   # one of those files

crates/train/tests/lm_parity.rs feeds the masks to crossfeed (FineTune::inject_dropout_masks) and
matches losses, gradient norms and weights.
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from make_model_fixtures import ROOT as MODELS, TEXTS, ce_rows, golden_optimizer, padded

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "train")
VARIANTS = {"opt125": {"dropout": 0.1, "attention_dropout": 0.1}, "opt350": {"dropout": 0.1, "attention_dropout": 0.1},
            "llama32": {"attention_dropout": 0.1}, "llama": {"attention_dropout": 0.1}}
# The families added later, in files of their own, each under 1 MB (Qwen, Gemma 3: attention probabilities;
# GPT-2: embeddings, attention probabilities, and after each block's output projection).
FAMILIES = {
    "dropout_families": {"qwen2": {"attention_dropout": 0.1}, "qwen3": {"attention_dropout": 0.1},
                         "gpt2": {"embd_pdrop": 0.1, "attn_pdrop": 0.1, "resid_pdrop": 0.1}},
    "dropout_gemma3": {"gemma3": {"attention_dropout": 0.1}},
    "dropout_gemma2": {"gemma2": {"attention_dropout": 0.1}},
}
STEPS = 5

masks = []
_orig_dropout = torch.nn.functional.dropout


def recording_dropout(input, p=0.5, training=True, inplace=False):
    if not training or p == 0.0:
        return input
    keep = torch.bernoulli(torch.full_like(input, 1.0 - p))
    masks.append(keep.to(torch.uint8))
    return input * keep.div_(1.0 - p)


def run(name, rates):
    d = os.path.join(MODELS, name)
    cfg = AutoConfig.from_pretrained(d)
    for k, v in rates.items():
        setattr(cfg, k, v)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(d, config=cfg, attn_implementation="eager").float().train()
    tok = AutoTokenizer.from_pretrained(d)
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else cfg.eos_token_id
    ids, mask = padded([tok(t)["input_ids"] for t in TEXTS], pad)
    opt, sched, _ = golden_optimizer(model, STEPS)
    tensors, losses, norms, sites = {}, [], [], []
    for step in range(STEPS):
        masks.clear()
        opt.zero_grad()
        logits = model(input_ids=ids, attention_mask=mask).logits
        s, n = ce_rows(logits, ids, mask)
        loss = s.sum() / n.sum()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)))
        opt.step()
        sched.step()
        losses.append(float(loss))
        sites.append(len(masks))
        for i, m in enumerate(masks):
            tensors[f"{name}.step{step}.site{i}"] = m.contiguous()
    for n, p in model.named_parameters():
        if (n.endswith("embed_tokens.weight") or ".0.self_attn.q_proj.weight" in n or n.endswith("fc2.bias") or "down_proj" in n
                or n.endswith("wte.weight") or "mlp.c_proj" in n):
            tensors[f"{name}.final.{n}"] = p.detach().clone().contiguous()
    return tensors, dict(rates=rates, losses=losses, grad_norms=norms, sites_per_step=sites)


def main():
    import sys
    torch.set_num_threads(2)
    torch.nn.functional.dropout = recording_dropout
    files = FAMILIES if "--families" in sys.argv else {"dropout": VARIANTS}
    if "--only" in sys.argv:
        only = sys.argv[sys.argv.index("--only") + 1].split(",")
        files = {k: v for k, v in files.items() if k in only}
    os.makedirs(OUT, exist_ok=True)
    for stem, variants in files.items():
        all_tensors, golden = {}, {}
        for name, rates in variants.items():
            t, g = run(name, rates)
            all_tensors.update(t)
            golden[name] = g
            print(name, g["sites_per_step"], [round(x, 5) for x in g["losses"]])
        save_file(all_tensors, os.path.join(OUT, f"{stem}.safetensors"))
        with open(os.path.join(OUT, f"{stem}.json"), "w") as f:
            json.dump(golden, f, indent=1)


if __name__ == "__main__":
    main()
