#!/usr/bin/env python3
"""Golden numbers for mixed-precision training (crates/train/tests/mixed_precision.rs).

On every tiny fixture model (tests/fixtures/models/*), 12 full-batch AdamW steps from the same weights,
the way HF Trainer runs them with `bf16=True` / `fp16=True` on CPU:
  f32      plain f32 (the reference the mixed modes are measured against)
  bf16     torch.autocast("cpu", bfloat16); master weights, gradients and AdamW state f32
  bf16_pure  crossfeed's bf16 exactly: every step the f32 master weights are copied into a bf16 copy of
           the model, forward and backward run wholly in bf16 (residual stream included; transformers
           still normalises and takes softmax in f32), gradients are cast to f32 for AdamW on the masters.
           autocast differs in keeping the residual stream in f32; the two differ by about as much as
           autocast differs from f32 (printed below), so the tight check is against this one.
  f16      torch.autocast("cpu", float16) + torch.amp.GradScaler("cpu") (init 65536, backoff 0.5, growth
           2.0, every 8 steps here so growth is exercised)
  f16_skip crossfeed's f16 exactly (the whole forward and backward in f16, as bf16_pure) with the same
           GradScaler at init_scale 2**27, backoff 0.25, growth 4.0 every 3 steps: the first steps overflow
           f16 and are skipped, the scale backs off, grows, overflows again. (Under autocast only matmuls run in f16, so it overflows at other scales than a model whose
           residual stream is f16 too; the scaler's logic is the same.)
Per step: loss (token-mean CE, f32), grad norm after unscaling (inf on a skipped step), lr, loss scale,
skipped; the final weights. HF semantics for a skipped step: no optimizer step and no scheduler step.
Writes tests/fixtures/train/mixed_precision.json and .safetensors. (Each parameter's first-step gradient under
autocast, sdpa and eager, is scripts/make_sdpa_fixtures.py's.)
Run: python3 scripts/make_mixed_precision_fixtures.py   (torch + transformers from PyPI, CPU only)
     python3 scripts/make_mixed_precision_fixtures.py --gelu-new   # only gelu_new.safetensors: GPT-2's
         activation on bf16 and f16 tensors, value and gradient as torch computes them op by op
     python3 scripts/make_mixed_precision_fixtures.py --norms   # only torch_norms.safetensors: f32
         LayerNorm and LlamaRMSNorm values and gradients as torch's CPU kernels round them (what
         crossfeed's autocast path reproduces bit for bit)
"""
import copy
import json
import math
import os

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, get_linear_schedule_with_warmup

from make_model_fixtures import padded

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "train")
VARIANTS = ["opt125", "opt350", "llama32", "llama"]
STEPS = 12
HP = dict(lr=2e-3, warmup_steps=2, weight_decay=0.1, max_grad_norm=1.0)
MODES = {
    "f32": dict(dtype=None),
    "bf16": dict(dtype=torch.bfloat16),
    "bf16_pure": dict(dtype=torch.bfloat16, pure=True),
    "f16": dict(dtype=torch.float16, init_scale=65536.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=8),
    # Factors of 4 keep every decision far from f16's limit (the gradients at 2**17 are 0.5-0.85 of it,
    # at 2**19 2-3.4x over), so skips do not hinge on rounding differences between the two sides.
    "f16_skip": dict(dtype=torch.float16, init_scale=2.0**27, growth_factor=4.0, backoff_factor=0.25, growth_interval=3, pure=True),
}


def ce_sum(logits, ids, mask):
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -lp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    w = mask[:, 1:].float()
    return (nll * w).sum(), w.sum()


def run(variant, mode):
    spec = MODES[mode]
    d = os.path.join(MODELS, variant)
    g = json.load(open(os.path.join(d, "golden.json")))
    model = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager").float().train()
    ids, mask = padded(g["token_ids"], g["pad_id"])
    # HF Trainer's no-decay rule by name (biases and norm weights).
    no_decay = {n for n, _ in model.named_parameters() if "bias" in n or "norm" in n.lower()}
    groups = [
        {"params": [p for n, p in model.named_parameters() if n not in no_decay], "weight_decay": HP["weight_decay"]},
        {"params": [p for n, p in model.named_parameters() if n in no_decay], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=HP["lr"], betas=(0.9, 0.999), eps=1e-8, foreach=False)
    sched = get_linear_schedule_with_warmup(opt, HP["warmup_steps"], STEPS)
    scaler = None
    if spec["dtype"] == torch.float16:
        scaler = torch.amp.GradScaler("cpu", init_scale=spec["init_scale"], growth_factor=spec["growth_factor"],
                                      backoff_factor=spec["backoff_factor"], growth_interval=spec["growth_interval"])
    rows = dict(loss=[], grad_norm=[], lr=[], scale=[], skipped=[], max_abs_grad=[])
    low = copy.deepcopy(model).to(spec["dtype"]) if spec.get("pure") else None
    for _ in range(STEPS):
        opt.zero_grad()
        if low is not None:
            with torch.no_grad():
                for p, q in zip(model.parameters(), low.parameters()):
                    q.copy_(p)
            low.zero_grad()
            logits = low(input_ids=ids, attention_mask=mask).logits
        elif spec["dtype"] is None:
            logits = model(input_ids=ids, attention_mask=mask).logits
        else:
            with torch.autocast("cpu", dtype=spec["dtype"]):
                logits = model(input_ids=ids, attention_mask=mask).logits
        s, n = ce_sum(logits, ids, mask)
        loss = s / n
        scale = scaler.get_scale() if scaler else 1.0
        (scaler.scale(loss) if scaler else loss).backward()
        if low is not None:
            for p, q in zip(model.parameters(), low.parameters()):
                p.grad = q.grad.float()
        if scaler:
            scaler.unscale_(opt)
        # How close the (unscaled) gradients came to f16's limit, to check skip decisions are not marginal.
        rows["max_abs_grad"].append(max(float(p.grad.abs().max()) for p in model.parameters()) * scale)
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), HP["max_grad_norm"]))
        rows["lr"].append(sched.get_last_lr()[0])
        rows["scale"].append(scale)
        if scaler:
            scaler.step(opt)
            scaler.update()
            skipped = scaler.get_scale() < scale
        else:
            opt.step()
            skipped = False
        if not skipped:
            sched.step()  # accelerate skips the scheduler when the optimizer step was skipped
        rows["skipped"].append(skipped)
        rows["loss"].append(float(loss.detach()))
        rows["grad_norm"].append(norm if math.isfinite(norm) else None)
    # JSON has no NaN/inf: a non-finite value is stored as null.
    rows = {k: [x if not isinstance(x, float) or math.isfinite(x) else None for x in v] for k, v in rows.items()}
    final = {f"{variant}.{mode}.{k}": v.detach().float().contiguous() for k, v in model.named_parameters()}
    return rows, final


def gelu_new_values():
    """`gelu_new` (transformers' NewGELUActivation, GPT-2) on bf16 and f16 tensors, forward and backward, as
    torch evaluates it op by op (autocast widens none of its ops): keys `<dtype>.{x,g,y,gx}`, stored f32."""
    from transformers.activations import NewGELUActivation
    torch.manual_seed(0)
    out = {}
    for name, dtype in [("bf16", torch.bfloat16), ("f16", torch.float16)]:
        # Inputs across GELU's range: small, around the knee, past where tanh saturates.
        x = (torch.randn(4096) * torch.tensor([0.3, 1.0, 3.0, 8.0]).repeat(1024)).to(dtype).requires_grad_()
        g = (torch.randn(4096) * 0.01).to(dtype)
        y = NewGELUActivation()(x)
        y.backward(g)
        out.update({f"{name}.x": x.detach().float(), f"{name}.g": g.float(), f"{name}.y": y.detach().float(), f"{name}.gx": x.grad.float()})
    save_file(out, os.path.join(OUT, "gelu_new.safetensors"))


def norm_values():
    """f32 LayerNorm (`torch.nn.functional.layer_norm`, ATen's CPU kernel) and transformers'
    `LlamaRMSNorm` on rows of widths 64, 100 and 2048 with offsets and scales of both signs, forward and backward
    on one thread: keys `<width>.{x,w,b,dy}`, the outputs `<width>.ln` (eps 1e-5) and `<width>.rms` (eps
    1e-6, weight w), and the gradients `<width>.{ln,rms}.{dx,dw}`, `<width>.ln.db` for the upstream
    gradient dy. Under autocast these f32 values are rounded to bf16/f16 next, so crossfeed's autocast
    kernels must give the same bits."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    torch.manual_seed(0)
    torch.set_num_threads(1)  # ATen's LayerNorm backward sums dγ/dβ per thread first
    out = {}
    for width in [64, 100, 2048]:
        x = torch.randn(4, width) * torch.tensor([[0.1], [1.0], [3.0], [20.0]]) + torch.tensor([[0.0], [1.5], [-2.0], [30.0]])
        w, b, dy = torch.randn(width), torch.randn(width), torch.randn(4, width) * 1e-2
        out.update({f"{width}.x": x, f"{width}.w": w, f"{width}.b": b, f"{width}.dy": dy})
        xl, wl, bl = (t.clone().requires_grad_() for t in (x, w, b))
        y = torch.nn.functional.layer_norm(xl, (width,), wl, bl, 1e-5)
        y.backward(dy)
        out.update({f"{width}.ln": y.detach(), f"{width}.ln.dx": xl.grad, f"{width}.ln.dw": wl.grad, f"{width}.ln.db": bl.grad})
        rms = LlamaRMSNorm(width, eps=1e-6)
        with torch.no_grad():
            rms.weight.copy_(w)
        xr = x.clone().requires_grad_()
        y = rms(xr)
        y.backward(dy)
        out.update({f"{width}.rms": y.detach(), f"{width}.rms.dx": xr.grad, f"{width}.rms.dw": rms.weight.grad})
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "torch_norms.safetensors"))


def main():
    import sys
    if "--norms" in sys.argv:
        norm_values()
        return
    if "--gelu-new" in sys.argv:
        gelu_new_values()
        return
    torch.manual_seed(0)
    torch.set_num_threads(1)  # reproducible reductions
    meta = dict(steps=STEPS, hp=HP, modes={m: {k: (str(v) if k == "dtype" else v) for k, v in s.items()} for m, s in MODES.items()},
                torch=torch.__version__, runs={})
    tensors = {}
    for v in VARIANTS:
        for m in MODES:
            rows, final = run(v, m)
            meta["runs"][f"{v}.{m}"] = rows
            tensors.update(final)
            print(f"{v:8} {m:9} loss {rows['loss'][0]:.4f} -> {rows['loss'][-1]:.4f}  skipped {sum(rows['skipped'])}"
                  f"  max|g|*scale {max(x for x in rows['max_abs_grad'] if x is not None):.3g}")
        runs = meta["runs"]
        gap = lambda a, b: max(abs(x - y) / abs(y) for x, y in zip(runs[f"{v}.{a}"]["loss"], runs[f"{v}.{b}"]["loss"]))
        print(f"{v:8} loss max rel: autocast bf16 vs f32 {gap('bf16', 'f32'):.1e}, bf16_pure vs autocast {gap('bf16_pure', 'bf16'):.1e}")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "mixed_precision.json"), "w") as f:
        json.dump(meta, f, indent=1)
    save_file(tensors, os.path.join(OUT, "mixed_precision.safetensors"))


if __name__ == "__main__":
    main()
