"""What the side-by-side benchmarks share: the random-init Llama-shaped model (7.36M parameters, the
shape of notes/cpu-performance.md) saved as a directory crossfeed loads, and the token pattern that
`crossfeed bench` uses too, so both sides see identical inputs."""
import os
import tempfile

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models
from transformers import LlamaConfig, LlamaForCausalLM


def bench_model(prefix):
    """(model, config, directory) for a seeded random-init LlamaForCausalLM saved under a temp dir."""
    cfg = LlamaConfig(vocab_size=8192, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float()
    d = tempfile.mkdtemp(prefix=prefix)
    model.config.save_pretrained(d)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(d, "model.safetensors"))
    # A minimal tokenizer so the directory loads (the benchmarks feed token ids directly).
    Tokenizer(models.BPE()).save(os.path.join(d, "tokenizer.json"))
    return model, cfg, d


def bench_tokens(rows, cols, vocab):
    """The same pattern as crates/cli/src/bench.rs `bench_tokens`."""
    return torch.tensor([[(i * 7919 + j * 104729) % vocab for j in range(cols)] for i in range(rows)])
