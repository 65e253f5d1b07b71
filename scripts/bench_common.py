"""What the side-by-side benchmarks share: the random-init model (by default Llama-shaped, 7.36M
parameters, the shape of notes/cpu-performance.md; `arch="opt"` gives the OPT-125m-style pre-LN layout
at the same sizes; `arch="qwen3"` Qwen3-0.6B's layout: per-head q/k norms, head_dim 128, kv heads half the
query heads, FFN 3x hidden, tied head) saved as a directory crossfeed loads, and the token pattern that `crossfeed bench`
uses too, so both sides see identical inputs."""
import atexit
import os
import shutil
import tempfile

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM, Qwen3Config, Qwen3ForCausalLM


def bench_model(prefix, arch="llama", hidden=256, layers=4, vocab=8192):
    """(model, config, directory) for a seeded random-init causal LM saved under a temp dir."""
    heads = max(1, hidden // 64)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 688 // 256,
                          num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                          max_position_embeddings=2048, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1)
        cls = LlamaForCausalLM
    elif arch == "opt":
        cfg = OPTConfig(vocab_size=vocab, hidden_size=hidden, ffn_dim=hidden * 4, num_hidden_layers=layers,
                        num_attention_heads=heads, max_position_embeddings=2048, word_embed_proj_dim=hidden,
                        do_layer_norm_before=True, bos_token_id=0, eos_token_id=1, pad_token_id=1,
                        dropout=0.0, attention_dropout=0.0)  # crossfeed has no dropout: same math on both sides
        cls = OPTForCausalLM
    elif arch == "qwen3":
        cfg = Qwen3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
                          num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=128,
                          max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=0, eos_token_id=1,
                          attention_dropout=0.0)
        cls = Qwen3ForCausalLM
    else:
        raise ValueError(f"arch {arch!r}: expected 'llama', 'opt' or 'qwen3'")
    torch.manual_seed(0)
    model = cls(cfg).float()
    d = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, d, True)  # 0.5 GB at the OPT-125M shape: never left behind
    model.config.save_pretrained(d)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if arch in ("opt", "qwen3"):
        state.pop("lm_head.weight", None)  # tied to the embedding, as transformers saves it
    save_file(state, os.path.join(d, "model.safetensors"))
    # A minimal tokenizer so the directory loads (the benchmarks feed token ids directly).
    Tokenizer(models.BPE()).save(os.path.join(d, "tokenizer.json"))
    return model, cfg, d


def bench_tokens(rows, cols, vocab):
    """The same pattern as crates/cli/src/bench.rs `bench_tokens`."""
    return torch.tensor([[(i * 7919 + j * 104729) % vocab for j in range(cols)] for i in range(rows)])
