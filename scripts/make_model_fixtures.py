#!/usr/bin/env python3
"""Builds the tiny random-weight checkpoints under tests/fixtures/models/ and the golden numbers the
Rust tests compare against (transformers + torch from PyPI; `make test` itself needs no Python).

    pip install torch transformers tokenizers safetensors
    python3 scripts/make_model_fixtures.py            # regenerate every fixture
    python3 scripts/make_model_fixtures.py --check-saved DIR --variant opt125   # load a checkpoint that
        # `crossfeed` saved into transformers and compare its logits with the golden ones
    python3 scripts/make_model_fixtures.py --formats  # checkpoints as the installed transformers saves them
    pip install --target /tmp/tf4 'transformers<5'
    PYTHONPATH=/tmp/tf4 python3 scripts/make_model_fixtures.py --formats     # ... and as 4.x saves them

Variants (each a directory with config.json, weights, tokenizer files, golden.safetensors, golden.json):
  opt125     pre-LN OPT with a final layer norm; vocab.json + merges.txt; model.safetensors
  opt350     post-LN OPT (do_layer_norm_before=false) with project_in/out; pytorch_model.bin, `decoder.*` names
  llama32    Llama 3.2 style: GQA, llama3 rope scaling, tied embeddings, tokenizer.json; sharded safetensors
  llama      plain Llama: no rope scaling, untied head, model.safetensors
  qwen2      Qwen2.5 style: q/k/v biases, GQA, tied embeddings, rope_theta 1e6, sliding window keys off;
             Qwen's tokenizer.json (regex Split + byte-level, no BOS)
  qwen3      Qwen3 style: q/k norms, explicit head_dim != hidden/heads, GQA, untied head, Qwen tokenizer
  gpt2       GPT-2: Conv1D weights, learned positions, gelu_new, tied head; weights saved as the hub's gpt2
             (bare `h.*`/`wte.*` names with the `attn.bias` mask buffers); vocab.json + merges.txt + tokenizer.json
  gemma3     Gemma 3 text: sliding window (4) shorter than the sequences on local layers with their own RoPE
             base, linear RoPE scaling on the global layer, final logit soft-capping, q/k norms,
             query_pre_attn_scalar != head_dim, GQA, tied head; tokenizer.json with a <bos> post-processor.
             Its greedy golden is the left-padded batch (as every variant's), and the script asserts that each
             prompt generated alone gives the same tokens (`greedy_solo`): transformers' window is counted in
             cache slots (`kv_idx > q_idx - sliding_window`), and left padding shifts a row's slots and
             positions alike, so the window holds the same real tokens with or without padding
  gemma2     Gemma 2: gemma3's shape without q/k norms, attention logit soft-capping (4.0, small enough to
             bend the scores), final logit soft-capping, one RoPE, sliding window (4) on alternating layers
             (no layer_types: transformers' default, layer 0 local), GQA; Gemma's tokenizer; greedy checked
             against each prompt alone as gemma3's. transformers runs it with eager attention (its only
             non-flash kernel: `_supports_sdpa = False`), as every golden here is made

    python3 scripts/make_model_fixtures.py --only qwen2,qwen3   # regenerate only these variants

Format fixtures (tests/fixtures/models/formats/tfN-*, `--formats`): checkpoints written by transformers N
itself (`save_pretrained`: the config.json keys of that era, tokenizer files re-saved by it) with weights
stored as f32/bf16/f16 safetensors or as an old-hub `pytorch_model.bin` with bare `decoder.*` names. Their
golden is the f32 logits of transformers loading that same directory with dtype float32.

Golden numbers: token ids of TEXTS, full f32 logits of a right-padded batch (eager attention), per-row
CE sums and counts (full-sequence and completion-only), gradients of a few named tensors of the mean CE,
greedy generations of a left-padded batch, and 5 AdamW steps (see `train_golden`); variants made since
the Qwen families also carry a second recipe (`train2`: cosine schedule, no weight decay, clipping active).
"""
import argparse
import json
import math
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, processors, trainers

VERSION = 1
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "models")

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: What is the boiling point of water?\nAnswer: 100 degrees Celsius.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "#### 72",
    "Mitochondria are the powerhouse of the cell. Photosynthesis happens in chloroplasts.",
    "Which of these is a mammal? (A) shark (B) whale (C) trout (D) squid",
    "Once upon a time there was a small village by the sea, where the fishermen sang at dawn.",
    "Caf\u00e9 cr\u00e8me, na\u00efve r\u00e9sum\u00e9 \u2014 unicode text is tokenized byte by byte.",
] * 20

TEXTS = [
    "Hello world",
    "Question: What is 2 + 3?\nAnswer: 5",
    "  leading spaces, caf\u00e9 and a dash \u2014 here.",
    "The fox",
]
# Completion-only loss: labels start at this many tokens into each row (prompt length in tokens).
LABEL_STARTS = [2, 6, 3, 1]
PROMPTS = ["Question: What is", "The", "Once upon a time there was"]
GEN_NEW_TOKENS = 8


def train_bpe(specials, vocab_size=320):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def opt_tokenizer(d):
    """OPT repos: vocab.json + merges.txt, no tokenizer.json; bos = eos = </s>, add_bos_token."""
    tok = train_bpe(["<s>", "<pad>", "</s>", "<unk>"])
    tok.model.save(d)
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "add_bos_token": True, "add_prefix_space": False, "bos_token": "</s>", "eos_token": "</s>",
        "pad_token": "<pad>", "unk_token": "</s>", "errors": "replace", "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": 1000000000000000019884624838656,
    })
    write_json(os.path.join(d, "special_tokens_map.json"), {
        "bos_token": "</s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "</s>"})
    return tok.get_vocab_size()


def llama_tokenizer(d):
    """Llama 3 repos: tokenizer.json whose post-processor prepends <|begin_of_text|>."""
    tok = train_bpe(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    tok.save(os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 131072})
    write_json(os.path.join(d, "special_tokens_map.json"), {
        "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"})
    return tok.get_vocab_size()


QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")


def qwen_tokenizer(d):
    """Qwen2/Qwen3 repos: tokenizer.json with an NFC normalizer, the regex Split pre-tokenizer then
    byte-level without its own regex, no post-processor BOS (add_bos_token false, bos_token null)."""
    from tokenizers import Regex, normalizers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(os.path.join(d, "tokenizer.json"))
    added = {str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                         "single_word": False, "special": True} for t in specials}
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added, "bos_token": None,
        "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": None, "errors": "replace",
        "tokenizer_class": "Qwen2Tokenizer", "model_max_length": 131072})
    return tok.get_vocab_size()


VARIANTS = {
    "opt125": dict(kind="opt", config=dict(
        model_type="opt", architectures=["OPTForCausalLM"], vocab_size=328, hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, max_position_embeddings=64,
        do_layer_norm_before=True, word_embed_proj_dim=32, activation_function="relu",
        dropout=0.0, attention_dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2,
        enable_bias=True, layer_norm_elementwise_affine=True, init_std=0.2)),
    "opt350": dict(kind="opt", config=dict(
        model_type="opt", architectures=["OPTForCausalLM"], vocab_size=328, hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, max_position_embeddings=64,
        do_layer_norm_before=False, word_embed_proj_dim=16, activation_function="relu",
        dropout=0.0, attention_dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2,
        enable_bias=True, layer_norm_elementwise_affine=True, init_std=0.2)),
    "llama32": dict(kind="llama", config=dict(
        model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=328, hidden_size=32,
        intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=131072,
        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192),
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False, hidden_act="silu",
        bos_token_id=0, eos_token_id=1, initializer_range=0.2)),
    "llama": dict(kind="llama", config=dict(
        model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=330, hidden_size=32,
        intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=256, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, hidden_act="silu", bos_token_id=0, eos_token_id=1,
        initializer_range=0.2)),
    "qwen2": dict(kind="qwen", config=dict(
        model_type="qwen2", architectures=["Qwen2ForCausalLM"], vocab_size=324, hidden_size=32,
        intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=32768, tie_word_embeddings=True,
        hidden_act="silu", use_sliding_window=False, sliding_window=32768, max_window_layers=2,
        attention_dropout=0.0, bos_token_id=0, eos_token_id=0, initializer_range=0.2)),
    "qwen3": dict(kind="qwen", config=dict(
        model_type="qwen3", architectures=["Qwen3ForCausalLM"], vocab_size=324, hidden_size=32,
        intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=40960, tie_word_embeddings=False,
        attention_bias=False, hidden_act="silu", use_sliding_window=False, sliding_window=None,
        max_window_layers=2, attention_dropout=0.0, bos_token_id=0, eos_token_id=0, initializer_range=0.2)),
    "gpt2": dict(kind="gpt2", hub_names=True, config=dict(
        model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=322, n_positions=64, n_ctx=64, n_embd=32,
        n_layer=2, n_head=4, n_inner=None, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, layer_norm_epsilon=1e-5, initializer_range=0.2, scale_attn_weights=True,
        summary_activation=None, summary_first_dropout=0.1, summary_proj_to_labels=True, summary_type="cls_index",
        summary_use_proj=True, bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)),
    "gemma3": dict(kind="gemma3", check_solo=True, config=dict(
        model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], vocab_size=328, hidden_size=32,
        intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        hidden_activation="gelu_pytorch_tanh", max_position_embeddings=512, rms_norm_eps=1e-6,
        tie_word_embeddings=True, attention_bias=False, attention_dropout=0.0, query_pre_attn_scalar=24,
        sliding_window=4, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        final_logit_softcapping=5.0, attn_logit_softcapping=None, use_bidirectional_attention=False,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
        pad_token_id=0, eos_token_id=1, bos_token_id=2, initializer_range=0.2)),
    # No layer_types and no rope_parameters: the 4.x-style config whose layers alternate by default
    # (sliding, full, sliding) with rope_theta at the top level.
    "gemma2": dict(kind="gemma3", check_solo=True, config=dict(
        model_type="gemma2", architectures=["Gemma2ForCausalLM"], vocab_size=328, hidden_size=32,
        intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        hidden_activation="gelu_pytorch_tanh", max_position_embeddings=512, rms_norm_eps=1e-6,
        tie_word_embeddings=True, attention_bias=False, attention_dropout=0.0, query_pre_attn_scalar=24,
        sliding_window=4, final_logit_softcapping=5.0, attn_logit_softcapping=4.0, rope_theta=10000.0,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, initializer_range=0.2)),
}
def gpt2_tokenizer(d):
    """GPT-2 repos: vocab.json + merges.txt and tokenizer.json, byte-level BPE, <|endoftext|> for bos, eos
    and unk, no BOS prepended."""
    tok = train_bpe(["<|endoftext|>"])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.model.save(d)
    tok.save(os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "add_bos_token": False, "add_prefix_space": False, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "tokenizer_class": "GPT2Tokenizer", "model_max_length": 64})
    return tok.get_vocab_size()


def gemma_tokenizer(d):
    """Gemma repos: tokenizer.json whose post-processor prepends <bos>; pad 0, eos 1, bos 2, unk 3."""
    tok = train_bpe(["<pad>", "<eos>", "<bos>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    tok.save(os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "add_bos_token": True, "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1000000000000000019884624838656})
    return tok.get_vocab_size()


TOKENIZERS = {"opt": opt_tokenizer, "llama": llama_tokenizer, "qwen": qwen_tokenizer, "gpt2": gpt2_tokenizer,
              "gemma3": gemma_tokenizer}


def gemma3_multimodal_config():
    """A `gemma3` (Gemma3ForConditionalGeneration) config around the gemma3 fixture's text model and a
    tiny SigLIP vision tower, as Gemma 3 4B and up ship; the hub's text_config lists only what differs
    from Gemma3TextConfig's defaults, so this one drops the keys that equal them."""
    text = dict(VARIANTS["gemma3"]["config"])
    for k in ["architectures", "hidden_activation", "rms_norm_eps", "attention_bias", "use_bidirectional_attention",
              "attn_logit_softcapping"]:
        text.pop(k)
    vision = dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, image_size=28, patch_size=14)
    return dict(model_type="gemma3", architectures=["Gemma3ForConditionalGeneration"], text_config=text,
                vision_config=vision, mm_tokens_per_image=4, boi_token_index=325, eoi_token_index=326,
                image_token_index=327, initializer_range=0.2, eos_token_id=[1, 3])


def hub_minimal_text_config(cfg):
    """The hub's Gemma 3 multimodal configs list in text_config only the keys that differ from
    Gemma3TextConfig's defaults; transformers fills in the rest."""
    from transformers import Gemma3TextConfig
    defaults = Gemma3TextConfig().to_dict()
    text = {k: v for k, v in cfg["text_config"].items() if k == "model_type" or defaults.get(k, object()) != v}
    return dict(cfg, text_config=text)


def build_model(kind, config):
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.for_model(**config)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Non-trivial norm weights and biases, so a transposed or skipped one is caught.
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    model.eval()
    return model


def padded(ids_list, pad, left=False):
    t = max(len(x) for x in ids_list)
    ids = torch.full((len(ids_list), t), pad, dtype=torch.long)
    mask = torch.zeros((len(ids_list), t), dtype=torch.long)
    for i, x in enumerate(ids_list):
        if left:
            ids[i, t - len(x):] = torch.tensor(x)
            mask[i, t - len(x):] = 1
        else:
            ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
    return ids, mask


def ce_rows(logits, ids, mask, label_mask=None):
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tgt = ids[:, 1:]
    w = mask[:, 1:].float()
    if label_mask is not None:
        w = w * label_mask[:, 1:].float()
    nll = -lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    return (nll * w).sum(1), w.sum(1)


def hf_no_decay(model):
    """HF Trainer's no-decay names (by name pattern and by nn.LayerNorm type: GPT-2's `ln_*`)."""
    from transformers import Trainer
    decay = set(Trainer.get_decay_parameter_names(None, model))
    return [n for n, _ in model.named_parameters() if n not in decay]


def golden_optimizer(model, steps):
    """The goldens' optimizer: torch.optim.AdamW (lr 1e-2) over HF's no-decay groups (weight decay 0.1,
    none on biases and norms) and get_linear_schedule_with_warmup (2 warmup steps). Returns
    (optimizer, scheduler, no-decay names); make_dropout_fixtures.py uses it too."""
    from transformers import get_linear_schedule_with_warmup
    no_decay = hf_no_decay(model)
    groups = [
        {"params": [p for n, p in model.named_parameters() if n not in no_decay], "weight_decay": 0.1},
        {"params": [p for n, p in model.named_parameters() if n in no_decay], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    return opt, get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=steps), no_decay


def recipe2_optimizer(model, steps):
    """The second recipe: AdamW lr 2e-2 without weight decay, cosine schedule without warmup."""
    from transformers import get_cosine_schedule_with_warmup
    no_decay = hf_no_decay(model)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    return opt, get_cosine_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=steps), no_decay


RECIPE2 = dict(lr=2e-2, schedule="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=0.5)


def train_golden(model, ids, mask, steps=5, optimizer=golden_optimizer, clip=1.0):
    """5 full-batch AdamW steps (golden_optimizer, clipping at 1.0): per-step loss and grad norm, and
    final weights of a few tensors."""
    model = model.train()
    opt, sched, no_decay = optimizer(model, steps)
    losses, norms, lrs = [], [], []
    for _ in range(steps):
        opt.zero_grad()
        logits = model(input_ids=ids, attention_mask=mask).logits
        s, n = ce_rows(logits, ids, mask)
        loss = s.sum() / n.sum()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
        losses.append(float(loss))
    model.eval()
    return dict(losses=losses, grad_norms=norms, lrs=lrs, no_decay=sorted(no_decay))


def save_weights(model, d, variant):
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    tied = variant["config"].get("tie_word_embeddings", True)
    if tied:
        sd.pop("lm_head.weight", None)
    if variant.get("hub_names"):
        # The hub's gpt2 repo: names without the `transformer.` prefix, each layer's causal-mask buffer
        # `h.N.attn.bias` included (old transformers saved it), no tied head.
        sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
        n = variant["config"]["n_positions"]
        for i in range(variant["config"]["n_layer"]):
            sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.uint8)).view(1, 1, n, n)
        save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    elif variant.get("bin"):
        # Old OPT repos ship only pytorch_model.bin with bare `decoder.*` names (and the tied head).
        sd = {k.removeprefix("model."): v for k, v in model.state_dict().items()}
        sd = {k: v.detach().clone().contiguous() for k, v in sd.items()}
        torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    elif variant.get("sharded"):
        names = sorted(sd)
        half = len(names) // 2
        shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
        weight_map = {}
        for fname, keys in shards.items():
            save_file({k: sd[k] for k in keys}, os.path.join(d, fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in keys})
        write_json(os.path.join(d, "model.safetensors.index.json"), {"metadata": {}, "weight_map": weight_map})
    else:
        save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})


def make_variant(name, variant):
    from transformers import AutoTokenizer
    d = os.path.join(ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    ntok = TOKENIZERS[variant["kind"]](d)
    assert ntok <= variant["config"]["vocab_size"], (ntok, variant["config"]["vocab_size"])
    write_json(os.path.join(d, "config.json"), variant["config"])
    eos = variant["config"]["eos_token_id"]
    write_json(os.path.join(d, "generation_config.json"), {"bos_token_id": variant["config"]["bos_token_id"], "eos_token_id": eos})
    model = build_model(variant["kind"], variant["config"])
    save_weights(model, d, variant)

    tok = AutoTokenizer.from_pretrained(d)
    token_ids = [tok(t)["input_ids"] for t in TEXTS]
    pad = variant["config"].get("pad_token_id") or eos
    ids, mask = padded(token_ids, pad)
    label_mask = torch.zeros_like(mask)
    for i, s in enumerate(LABEL_STARTS):
        label_mask[i, s:] = 1
    label_mask = label_mask * mask

    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask).logits
    ce_sum, ce_n = ce_rows(logits, ids, mask)
    loss = ce_sum.sum() / ce_n.sum()
    loss.backward()
    grads = {}
    for n, p in model.named_parameters():
        if p.grad is not None and (n.endswith("embed_tokens.weight") or ".0.self_attn.q_proj.weight" in n
                                   or ".1.fc1.bias" in n or ".1.mlp.down_proj.weight" in n
                                   or n.endswith("layers.0.input_layernorm.weight")
                                   or n.endswith("layers.1.final_layer_norm.weight")
                                   or "project_in" in n or n == "lm_head.weight"):
            grads["grad." + n] = p.grad.detach().clone()
    grad_norms = {n: float(p.grad.norm()) for n, p in model.named_parameters() if p.grad is not None}
    with torch.no_grad():
        cm_sum, cm_n = ce_rows(logits, ids, mask, label_mask)
        # Each row alone, unpadded: padding must not change a row's logits.
        solo = [model(input_ids=torch.tensor([x])).logits[0] for x in token_ids]

    # Greedy generation over a left-padded batch, as transformers' generate does it.
    gen_tok = AutoTokenizer.from_pretrained(d)
    prompt_ids = [gen_tok(p)["input_ids"] for p in PROMPTS]
    gids, gmask = padded(prompt_ids, pad, left=True)
    def greedy(**kw):
        with torch.no_grad():
            out = model.generate(input_ids=gids, attention_mask=gmask, do_sample=False, max_new_tokens=GEN_NEW_TOKENS,
                                 pad_token_id=pad, **kw)
        return out[:, gids.shape[1]:].tolist()

    def greedy_solo(**kw):
        """Each prompt alone, unpadded."""
        rows = []
        for p in prompt_ids:
            with torch.no_grad():
                o = model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                   do_sample=False, max_new_tokens=GEN_NEW_TOKENS, pad_token_id=pad, **kw)
            rows.append(o[0, len(p):].tolist())
        return rows
    generated = greedy(min_new_tokens=GEN_NEW_TOKENS, eos_token_id=eos)
    # Random weights never emit the real EOS: call the third greedy token of row 0 the EOS, so that row
    # stops early while the others run on (transformers pads finished rows with pad_token_id).
    eos_test = generated[0][2]
    generated_eos = greedy(eos_token_id=eos_test)
    extra = {}
    if variant.get("check_solo"):
        # Sliding-window families: the left-padded batch must equal each prompt alone (padding is only a
        # shift of a row's slots), or the batch golden would pin a transformers quirk.
        solo_rows = greedy_solo(min_new_tokens=GEN_NEW_TOKENS, eos_token_id=eos)
        assert solo_rows == generated, (solo_rows, generated)
        extra["greedy_solo"] = solo_rows

    import copy
    train2 = train_golden(copy.deepcopy(model), ids, mask, optimizer=recipe2_optimizer, clip=RECIPE2["max_grad_norm"])
    train = train_golden(model, ids, mask)
    final = {"final." + n: p.detach().clone() for n, p in model.named_parameters()
             if n.endswith("embed_tokens.weight") or ".0.self_attn.q_proj.weight" in n or n.endswith("bias")}

    tensors = {"logits": logits.detach().contiguous(), "input_ids": ids.to(torch.int64), "attention_mask": mask.to(torch.int64),
               **grads, **final}
    for i, s in enumerate(solo):
        tensors[f"solo_logits.{i}"] = s.contiguous()
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "golden.safetensors"))
    write_json(os.path.join(d, "golden.json"), {
        "version": VERSION, "texts": TEXTS, "token_ids": token_ids, "pad_id": pad,
        "ce_sum": ce_sum.tolist(), "ce_tokens": ce_n.tolist(), "label_starts": LABEL_STARTS,
        "ce_completion_sum": cm_sum.tolist(), "ce_completion_tokens": cm_n.tolist(), "loss": float(loss),
        "grad_norms": grad_norms, "prompts": PROMPTS, "prompt_ids": prompt_ids, "greedy": generated,
        "greedy_eos": generated_eos, "greedy_eos_id": eos_test, "train": train,
        "train2": dict(train2, recipe=RECIPE2), "tokenizer_size": len(tok), **extra,
    })
    print(f"{name}: ok ({sum(p.numel() for p in model.parameters())} params)")


def check_saved(path, variant):
    """Loads a checkpoint `crossfeed` saved into transformers and compares logits with the golden ones."""
    from transformers import AutoModelForCausalLM
    from safetensors.torch import load_file
    golden = load_file(os.path.join(ROOT, variant, "golden.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").float().eval()
    with torch.no_grad():
        logits = model(input_ids=golden["input_ids"], attention_mask=golden["attention_mask"]).logits
    diff = float((logits - golden["logits"]).abs().max())
    print(f"{path}: max |logits - golden| = {diff:.3e}")
    return diff < 1e-4


# --- Format fixtures: what each transformers era writes ------------------------------------------------

LLAMA32_SHAPE = dict(
    model_type="llama", vocab_size=328, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-5, max_position_embeddings=131072,
    tie_word_embeddings=True, bos_token_id=0, eos_token_id=1)
# Llama 3.2's RoPE: theta 500000 and llama3 frequency scaling (in 4.x `rope_theta` + `rope_scaling`).
LLAMA3_ROPE = dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=8192)
OPT350_SHAPE = dict(
    model_type="opt", vocab_size=328, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
    max_position_embeddings=64, do_layer_norm_before=False, word_embed_proj_dim=16, pad_token_id=1,
    bos_token_id=2, eos_token_id=2)
# Keys facebook/opt-350m's config.json carries besides the shape (dropout 0.1 is training-only).
OPT_HUB_EXTRAS = dict(dropout=0.1, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0, init_std=0.02,
                      prefix="</s>", _name_or_path="facebook/opt-350m")


def format_variants(major):
    """(name, tokenizer source, config kwargs, storage dtype, how to write weights, config rewrite)."""
    if major >= 5:
        return [
            ("tf5-llama32", "llama32", dict(LLAMA32_SHAPE, rope_parameters=dict(LLAMA3_ROPE, rope_theta=500000.0)),
             torch.float32, "save_pretrained", None),
            ("tf5-llama32-bf16", "llama32", dict(LLAMA32_SHAPE, rope_parameters=dict(LLAMA3_ROPE, rope_theta=500000.0)),
             torch.bfloat16, "save_pretrained", None),
            ("tf5-llama-f16", "llama", dict(model_type="llama", vocab_size=330, hidden_size=32, intermediate_size=48,
                                            num_hidden_layers=2, num_attention_heads=4,
                                            rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
             torch.float16, "save_pretrained", None),
            # A hand-written config with only the sizes: every other key takes transformers' default.
            ("tf5-llama-minimal", "llama", dict(model_type="llama", vocab_size=330, hidden_size=32, intermediate_size=48,
                                                num_hidden_layers=2, num_attention_heads=4),
             torch.float32, "save_pretrained", minimal_llama_config),
            ("tf5-opt350-bf16", "opt350", dict(OPT350_SHAPE), torch.bfloat16, "save_pretrained", None),
            # Gemma 3 4B and up: the multimodal `gemma3` config; crossfeed reads its text model.
            ("tf5-gemma3-multimodal-bf16", "gemma3", gemma3_multimodal_config(), torch.bfloat16, "save_pretrained",
             hub_minimal_text_config),
        ]
    return [
        ("tf4-llama32-bf16", "llama32", dict(LLAMA32_SHAPE, rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE)),
         torch.bfloat16, "save_pretrained", hub_dtype_key),
        ("tf4-opt350-f16-bin", "opt350", dict(OPT350_SHAPE, **OPT_HUB_EXTRAS), torch.float16, "decoder_bin",
         lambda cfg: dict(cfg, architectures=["OPTForCausalLM"], torch_dtype="float16")),
        ("tf4-opt125", "opt125", dict(OPT350_SHAPE, do_layer_norm_before=True, word_embed_proj_dim=32, **OPT_HUB_EXTRAS),
         torch.float32, "save_pretrained", None),
    ]


def hub_dtype_key(cfg):
    """4.x before 4.56 (every Llama 3.2 / OPT config on the hub) wrote `torch_dtype`; 4.56+ writes `dtype`."""
    cfg = dict(cfg)
    cfg["torch_dtype"] = cfg.pop("dtype")
    return cfg


def minimal_llama_config(cfg):
    return {k: cfg[k] for k in ["architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size",
                                "num_hidden_layers", "num_attention_heads"]}


def reload_f32(d):
    """transformers loading `d` as a user would, weights widened to f32 (the keyword changed in 5.x)."""
    from transformers import AutoModelForCausalLM
    import transformers
    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", **{key: torch.float32}).eval()


def golden_logits(d):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(d)
    model = reload_f32(d)
    token_ids = [tok(t)["input_ids"] for t in TEXTS]
    text_config = model.config.get_text_config()  # the config itself, or a multimodal config's text part
    pad = text_config.pad_token_id if text_config.pad_token_id is not None else tok.eos_token_id
    ids, mask = padded(token_ids, pad)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    ce_sum, ce_n = ce_rows(logits, ids, mask)
    return token_ids, pad, ids, mask, logits, ce_sum, ce_n


def make_format_variant(name, tok_src, config, dtype, writer, rewrite):
    import transformers
    from transformers import AutoTokenizer
    d = os.path.join(ROOT, "formats", name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    AutoTokenizer.from_pretrained(os.path.join(ROOT, tok_src)).save_pretrained(d)
    kind = config["model_type"]
    model = build_model(kind, config).to(dtype)
    if writer == "save_pretrained":
        model.save_pretrained(d)
    else:
        # Old OPT hub repos: only pytorch_model.bin, names without the `model.` prefix, no tied head.
        model.config.save_pretrained(d)
        sd = {k.removeprefix("model."): v.detach().clone().contiguous() for k, v in model.state_dict().items()
              if k != "lm_head.weight"}
        torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    model.generation_config.save_pretrained(d)
    if rewrite is not None:
        path = os.path.join(d, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        write_json(path, rewrite(cfg))
    token_ids, pad, ids, mask, logits, ce_sum, ce_n = golden_logits(d)
    save_file({"logits": logits.contiguous(), "input_ids": ids, "attention_mask": mask},
              os.path.join(d, "golden.safetensors"))
    write_json(os.path.join(d, "golden.json"), {
        "version": VERSION, "transformers_version": transformers.__version__, "storage_dtype": str(dtype),
        "texts": TEXTS, "token_ids": token_ids, "pad_id": pad, "ce_sum": ce_sum.tolist(), "ce_tokens": ce_n.tolist()})
    files = sorted(os.listdir(d))
    size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
    print(f"{name}: transformers {transformers.__version__}, {dtype}, {size // 1024} KiB: {files}")


def check_formats():
    """Loads every format fixture with the installed transformers and compares with its golden (so a
    checkpoint 4.x wrote is checked against 5.x's reading of it, and the other way round)."""
    from safetensors.torch import load_file
    ok = True
    for name in sorted(os.listdir(os.path.join(ROOT, "formats"))):
        d = os.path.join(ROOT, "formats", name)
        golden = load_file(os.path.join(d, "golden.safetensors"))
        try:
            model = reload_f32(d)
        except Exception as e:  # noqa: BLE001 -- report and go on: an older transformers may not read a newer config
            print(f"{name}: not loadable here: {e}")
            continue
        with torch.no_grad():
            logits = model(input_ids=golden["input_ids"], attention_mask=golden["attention_mask"]).logits.float()
        m = golden["attention_mask"].bool()
        diff = float((logits - golden["logits"])[m].abs().max())
        print(f"{name}: max |logits - golden| = {diff:.3e}")
        ok &= diff < 1e-4
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-saved")
    ap.add_argument("--only", help="comma-separated variants to (re)generate; default all")
    ap.add_argument("--variant", default="opt125")
    ap.add_argument("--formats", action="store_true", help="write the format fixtures of the installed transformers")
    ap.add_argument("--check-formats", action="store_true", help="compare every format fixture with this transformers")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.check_saved:
        sys.exit(0 if check_saved(args.check_saved, args.variant) else 1)
    if args.check_formats:
        sys.exit(0 if check_formats() else 1)
    if args.formats:
        import transformers
        os.makedirs(os.path.join(ROOT, "formats"), exist_ok=True)
        for v in format_variants(int(transformers.__version__.split(".")[0])):
            make_format_variant(*v)
        return
    os.makedirs(ROOT, exist_ok=True)
    VARIANTS["opt350"]["bin"] = True
    VARIANTS["llama32"]["sharded"] = True
    only = args.only.split(",") if args.only else list(VARIANTS)
    for name in only:
        make_variant(name, VARIANTS[name])


if __name__ == "__main__":
    main()
