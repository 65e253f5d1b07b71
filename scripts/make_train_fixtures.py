#!/usr/bin/env python3
"""Reference fixtures for crates/train (torch.optim.AdamW + transformers schedules/decay rule).

A tiny deterministic MLP (fc1 -> relu -> elementwise `norm.weight` -> fc2, 213 params) is trained
full-batch for 5 steps per case with exactly what HF Trainer does per optimizer step:
loss = CE_sum / n_tokens, backward, clip_grad_norm_ (when max_grad_norm > 0), AdamW.step,
scheduler.step. Writes:
  tests/fixtures/train/mlp_adamw.safetensors  init.*, x, y, <case>.final.*, <case>.loss, <case>.grad_norm, <case>.lr
  tests/fixtures/train/mlp_adamw.json         case configs, schedule tables, warmup-ratio cases,
                                               HF decay decisions for OPT/Llama parameter names
Run: python3 scripts/make_train_fixtures.py   (torch + transformers from PyPI, CPU only)
"""
import json
import math
import os
import types

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import Trainer
from transformers.optimization import (
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "train")
STEPS = 5
N_IN, N_HID, N_OUT, N_EX = 6, 16, 5, 8


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(N_IN, N_HID)
        self.norm = nn.Module()
        self.norm.weight = nn.Parameter(torch.ones(N_HID) + 0.1 * torch.randn(N_HID))
        self.fc2 = nn.Linear(N_HID, N_OUT)

    def forward(self, x):
        h = F.relu(self.fc1(x)) * self.norm.weight
        return self.fc2(h)


CASES = {
    # (a) decoupled weight decay with HF's no-decay groups
    "decay": dict(lr=1e-2, weight_decay=0.1, schedule="constant", warmup_steps=0, max_grad_norm=0.0),
    # (b) plain AdamW
    "plain": dict(lr=1e-2, weight_decay=0.0, schedule="constant", warmup_steps=0, max_grad_norm=0.0),
    # (c) warmup + linear decay
    "linear_warmup": dict(lr=1e-2, weight_decay=0.0, schedule="linear", warmup_steps=2, max_grad_norm=0.0),
    # (d) clipping active every step
    "clip": dict(lr=1e-2, weight_decay=0.0, schedule="constant", warmup_steps=0, max_grad_norm=0.05),
    # (e) everything together: cosine, warmup, decay, clip 1.0
    "cosine_all": dict(lr=2e-2, weight_decay=0.1, schedule="cosine", warmup_steps=1, max_grad_norm=1.0),
}


def make_sched(opt, name, warmup, total):
    if name == "linear":
        return get_linear_schedule_with_warmup(opt, warmup, total)
    if name == "cosine":
        return get_cosine_schedule_with_warmup(opt, warmup, total)
    if name == "constant_with_warmup":
        return get_constant_schedule_with_warmup(opt, warmup)
    if name == "constant":
        return get_constant_schedule(opt)
    raise ValueError(name)


def hf_decay_names(model):
    # Unbound call: get_decay_parameter_names does not use `self`.
    return set(Trainer.get_decay_parameter_names(None, model))


def run_case(init, x, y, cfg):
    model = MLP()
    model.load_state_dict({k: v.clone() for k, v in init.items()})
    decay = hf_decay_names(model)
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": cfg["weight_decay"]},
        {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8, foreach=False)
    sched = make_sched(opt, cfg["schedule"], cfg["warmup_steps"], STEPS)
    losses, norms, lrs = [], [], []
    for _ in range(STEPS):
        opt.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y, reduction="sum") / y.numel()
        loss.backward()
        max_norm = cfg["max_grad_norm"] if cfg["max_grad_norm"] > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
        losses.append(loss.item())
        norms.append(norm.item())
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return final, losses, norms, lrs, sorted(decay)


def fake_model(names):
    """A module tree with exactly these parameter names (for the decay-rule table)."""
    root = nn.Module()
    for name in names:
        *path, leaf = name.split(".")
        mod = root
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, nn.Module())
            mod = getattr(mod, part)
        mod.register_parameter(leaf, nn.Parameter(torch.zeros(2)))
    return root


def main():
    torch.manual_seed(1234)
    model = MLP()
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = torch.randn(N_EX, N_IN)
    y = torch.randint(0, N_OUT, (N_EX,))
    tensors = {f"init.{k}": v.contiguous() for k, v in init.items()}
    tensors["x"] = x.contiguous()
    tensors["y"] = y.to(torch.int64).contiguous()
    meta_cases = {}
    for name, cfg in CASES.items():
        final, losses, norms, lrs, decay = run_case(init, x, y, cfg)
        for k, v in final.items():
            tensors[f"{name}.final.{k}"] = v.contiguous()
        tensors[f"{name}.loss"] = torch.tensor(losses, dtype=torch.float64)
        tensors[f"{name}.grad_norm"] = torch.tensor(norms, dtype=torch.float64)
        tensors[f"{name}.lr"] = torch.tensor(lrs, dtype=torch.float64)
        meta_cases[name] = dict(cfg, steps=STEPS, decay_params=decay)

    # Schedule tables: LambdaLR with base lr 1.0, value used by optimizer step k = get_last_lr before step k.
    schedules = []
    dummy = torch.nn.Parameter(torch.zeros(1))
    for sname in ["linear", "cosine", "constant_with_warmup", "constant"]:
        for warmup, total in [(0, 10), (3, 10), (10, 10), (2, 7), (0, 1), (5, 100), (4, 3)]:
            opt = torch.optim.SGD([dummy], lr=1.0)
            sched = make_sched(opt, sname, warmup, total)
            vals = []
            for _ in range(total + 3):
                vals.append(sched.get_last_lr()[0])
                opt.step()
                sched.step()
            schedules.append(dict(schedule=sname, warmup=warmup, total=total, values=vals))

    warmup_cases = []
    for ratio, total in [(0.025, 100), (0.1, 5), (0.33, 7), (0.0, 50), (0.5, 3)]:
        # Unbound call on a stand-in: get_warmup_steps only reads `self.warmup_steps` (a float < 1
        # is a ratio in transformers 5), and building TrainingArguments would need `accelerate`.
        args = types.SimpleNamespace(warmup_steps=ratio)
        warmup_cases.append(dict(ratio=ratio, total=total, warmup=transformers.TrainingArguments.get_warmup_steps(args, total)))

    names = [
        "model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight",
        "model.decoder.layers.0.self_attn.q_proj.weight", "model.decoder.layers.0.self_attn.q_proj.bias",
        "model.decoder.layers.0.self_attn_layer_norm.weight", "model.decoder.layers.0.self_attn_layer_norm.bias",
        "model.decoder.layers.0.fc1.weight", "model.decoder.layers.0.final_layer_norm.weight",
        "model.decoder.final_layer_norm.weight", "lm_head.weight",
        "model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight", "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.self_attn.o_proj.weight", "model.norm.weight", "norm.weight", "normal.weight",
        "model.enorm.weight", "model.q_norm.weight", "model.layers.0.self_attn.k_norm.weight",
        "model.rmsnorm_scale", "model.normalizer.weight", "model.layer_normx.weight",
    ]
    decay = hf_decay_names(fake_model(names))
    decay_table = [dict(name=n, decay=n in decay) for n in names]

    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "mlp_adamw.safetensors"))
    os.chmod(os.path.join(OUT, "mlp_adamw.safetensors"), 0o644)  # save_file creates it 0600
    meta = dict(
        generated_by="scripts/make_train_fixtures.py",
        torch=torch.__version__,
        transformers=transformers.__version__,
        model=dict(n_in=N_IN, n_hidden=N_HID, n_out=N_OUT, n_examples=N_EX),
        cases=meta_cases,
        schedules=schedules,
        warmup_ratio=warmup_cases,
        decay_names=decay_table,
    )
    with open(os.path.join(OUT, "mlp_adamw.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
