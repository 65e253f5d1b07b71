#!/usr/bin/env python3
"""Golden numbers for bf16/f16 attention as transformers computes it, `sdpa` (the default) and `eager`
(crates/train/tests/attention_precision.rs).

Three extra tiny random checkpoints widen the shapes the four fixture models cover (written to
tests/fixtures/models/attn/<name>/, config.json + model.safetensors, f32):
  llama_gqa64   Llama, head_dim 64, 2 query heads on 1 KV head (GQA), untied head
  opt_post64    OPT post-LN (do_layer_norm_before false), head_dim 64
  llama_tied    Llama with a tied head, 4 heads of 16, 2 layers
On every model (those three and tests/fixtures/models/{opt125,opt350,llama32,llama}) the first-step
loss (token-mean CE as HF's trainer takes it) and every parameter's gradient under
torch.autocast("cpu", bfloat16 / float16), with attn_implementation "sdpa" and "eager"; the f32 loss.
The families added later (tests/fixtures/models/{qwen2,qwen3,gpt2,gemma3,gemma2}) likewise, but Gemma 2,
for which transformers has no sdpa: its `sdpa.*` keys hold eager's gradients, as a default load runs eager.
Writes tests/fixtures/train/attention/<model>.<dtype>.safetensors (keys `<attn>.<parameter>`) and
tests/fixtures/train/attention/losses.json.
Run: python3 scripts/make_sdpa_fixtures.py   (torch + transformers from PyPI, CPU only; 2.15 / 5.25 on a
Xeon with AVX-512 FP16 made the committed files; f16 goldens depend on the CPU)
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

from make_mixed_precision_fixtures import ce_sum
from make_model_fixtures import padded

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "train", "attention")
OLD = ["opt125", "opt350", "llama32", "llama", "qwen2", "qwen3", "gpt2", "gemma3", "gemma2"]
NO_SDPA = {"gemma2"}
LENGTHS = [23, 16, 9]  # right-padded: the mask keeps HF's sdpa off is_causal and on repeat_kv for GQA
VOCAB = 48


def new_models():
    torch.manual_seed(1234)
    specs = {
        "llama_gqa64": LlamaForCausalLM(LlamaConfig(
            vocab_size=VOCAB, hidden_size=128, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, head_dim=64, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
            tie_word_embeddings=False, initializer_range=0.2, bos_token_id=0, eos_token_id=1, pad_token_id=2)),
        "opt_post64": OPTForCausalLM(OPTConfig(
            vocab_size=VOCAB, hidden_size=128, ffn_dim=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=40, do_layer_norm_before=False, word_embed_proj_dim=128, dropout=0.0,
            attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0, init_std=0.2, bos_token_id=0,
            eos_token_id=1, pad_token_id=2)),
        "llama_tied": LlamaForCausalLM(LlamaConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
            tie_word_embeddings=True, initializer_range=0.2, bos_token_id=0, eos_token_id=1, pad_token_id=2)),
    }
    for name, model in specs.items():
        d = os.path.join(MODELS, "attn", name)
        model.float().save_pretrained(d, safe_serialization=True)
        ids = [[int(x) for x in torch.randint(3, VOCAB, (n,))] for n in LENGTHS]
        with open(os.path.join(d, "golden.json"), "w") as f:
            json.dump({"token_ids": ids, "pad_id": 2}, f)
    return list(specs)


def first_step(d, attn, dtype):
    g = json.load(open(os.path.join(d, "golden.json")))
    ids, mask = padded(g["token_ids"], g["pad_id"])
    model = AutoModelForCausalLM.from_pretrained(d, attn_implementation=attn, dtype=torch.float32).train()
    if dtype is None:
        logits = model(input_ids=ids, attention_mask=mask).logits
    else:
        with torch.autocast("cpu", dtype=dtype):
            logits = model(input_ids=ids, attention_mask=mask).logits
    s, n = ce_sum(logits, ids, mask)
    loss = s / n
    loss.backward()
    return float(loss.detach()), {k: p.grad.detach().float().contiguous() for k, p in model.named_parameters()}


def main():
    torch.set_num_threads(1)  # reproducible reductions
    os.makedirs(OUT, exist_ok=True)
    dirs = {v: os.path.join(MODELS, v) for v in OLD}
    dirs.update({v: os.path.join(MODELS, "attn", v) for v in new_models()})
    losses = {"torch": torch.__version__}
    for v, d in dirs.items():
        losses[f"{v}.f32"], f32 = first_step(d, "eager", None)
        for mode, dtype in [("bf16", torch.bfloat16), ("f16", torch.float16)]:
            out = {}
            for attn in ["sdpa", "eager"]:
                loss, grads = first_step(d, "eager" if v in NO_SDPA else attn, dtype)
                losses[f"{v}.{mode}.{attn}"] = loss
                out.update({f"{attn}.{k}": t for k, t in grads.items()})
                dist = sum(float((grads[k] - f32[k]).norm() ** 2) for k in f32) ** 0.5
                print(f"{v:12} {mode:4} {attn:5} loss {loss:.6f} (f32 {losses[f'{v}.f32']:.6f})  |grad - f32| {dist:.3e}")
            save_file(out, os.path.join(OUT, f"{v}.{mode}.safetensors"))
    with open(os.path.join(OUT, "losses.json"), "w") as f:
        json.dump(losses, f, indent=1)


if __name__ == "__main__":
    main()
