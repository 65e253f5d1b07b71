"""Reference numbers for the collapse metrics (crates/loop/src/collapse.rs), written to
tests/fixtures/collapse.json and checked by crates/loop/tests/collapse.rs:

- self-BLEU: sacrebleu.sentence_bleu(text_i, [every other text]) (default 13a tokenizer, exp
  smoothing, effective order), averaged over i; also each text's 13a tokens and sentence score;
- Vendi: vendi_score.vendi.score_X (cosine kernel, q = 1) on float32 embeddings;
- type-token ratio (mean over texts of distinct / all 13a tokens), perplexity and error consensus
  with numpy, as the Rust doc comments define them.

Run: python3 scripts/make_collapse_fixtures.py  (pip install sacrebleu vendi-score numpy; made with sacrebleu 2.6.0)
"""
import json
import os

import numpy as np
import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from vendi_score import vendi

VERSION = 1
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "collapse.json")
rng = np.random.RandomState(0)

TRICKY = [
    "The cat sat on the mat.",
    "The cat sat on the mat, and the dog sat on the log.",
    "Pi is 3.14, not 3,15; ask Dr. Smith (he knows) about 5-3 = 2.",
    "Tom &amp; Jerry said &quot;hi&quot; &lt;loudly&gt; <skipped> co-\noperate\nnow",
    "  leading and trailing spaces   \t",
    "naïve café — “quotes” and ‘more’ … ok?!",
    "sep\x1cby\x1dascii\x1eunit\x1fseparators and\u00a0nbsp\u2003em space",
    "",
    "word",
    "The cat sat on the mat.",
    "1,000,000 people... wait... 2.5-3.5 ranges, e.g. x.y,z",
    "[brackets] {braces} `ticks` ~tilde^ |pipe| @at #hash $dollar %pct",
    "A question? An answer! A list: a, b, c.",
]

VOCAB = "the a cat dog sat ran on in mat log park fish water is was very big small".split()


def salad(n, lo=3, hi=14):
    return [" ".join(rng.choice(VOCAB, size=rng.randint(lo, hi))) + rng.choice([".", "", "!", " ."]) for _ in range(n)]


def bleu_group(texts):
    tok = Tokenizer13a()
    scores = [sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:]).score for i, t in enumerate(texts)] if len(texts) >= 2 else []
    tokens = [tok(t.rstrip()).split() for t in texts]
    ttrs = [len(np.unique(np.array(t, dtype=object))) / len(t) for t in tokens if t]
    return {
        "texts": texts,
        "tokens": tokens,
        "sentence_bleu": scores,
        "self_bleu": sum(scores) / len(scores) if len(texts) >= 2 else None,
        "ttr": float(np.mean(ttrs)) if ttrs else None,
    }


def vendi_case(x):
    x = np.asarray(x, dtype=np.float32)
    return {"embeddings": x.tolist(), "vendi": float(vendi.score_X(x.astype(np.float64)))}


def decisions(n, options, agree, correct_rate):
    """Two models' multiple-choice picks on n documents; b copies a's pick with probability `agree`."""
    gold = [int(rng.randint(k)) for k in options]
    a = [g if rng.rand() < correct_rate else int(rng.randint(k)) for g, k in zip(gold, options)]
    b = [x if rng.rand() < agree else int(rng.randint(k)) for x, k in zip(a, options)]
    return gold, a, b


def consensus_case(n, choice):
    options = [int(rng.randint(2, 6)) for _ in range(n)]
    gold, a, b = decisions(n, options, agree=0.6, correct_rate=0.5)
    ca, cb = np.array(a) == np.array(gold), np.array(b) == np.array(gold)
    both = ~ca & ~cb
    chance = np.mean(~ca) * np.mean(~cb)
    case = {
        "a": [{"correct": bool(x), "choice": [int(p), int(k)] if choice else None} for x, p, k in zip(ca, a, options)],
        "b": [{"correct": bool(x), "choice": [int(p), int(k)] if choice else None} for x, p, k in zip(cb, b, options)],
        "both_wrong": float(np.mean(both)),
        "both_wrong_chance": float(chance),
        "same_wrong": float(np.mean(both & (np.array(a) == np.array(b)))) if choice else None,
        "same_wrong_chance": float(chance * np.mean(1.0 / (np.array(options) - 1))) if choice else None,
    }
    return case


def main():
    bleu = [
        bleu_group(TRICKY),
        bleu_group(salad(30)),
        bleu_group(salad(8, 1, 4)),
        bleu_group(["same text here", "same text here", "same text here"]),
        bleu_group(["", "", "x"]),
        bleu_group(["only one"]),
    ]
    vend = [
        vendi_case(rng.randn(12, 8)),
        vendi_case(np.repeat(rng.randn(3, 6), 4, axis=0)),
        vendi_case(np.vstack([rng.randn(5, 4), np.zeros((1, 4))])),
        vendi_case(rng.randn(20, 4)),
        vendi_case(rng.randn(1, 5)),
    ]
    ppl = [{"mean_nll": float(m), "tokens": 7, "perplexity": float(np.exp(m))} for m in [0.0, 1.2345, 3.3, 7.77]]
    cons = [consensus_case(60, True), consensus_case(40, False)]
    out = {
        "version": VERSION,
        "sacrebleu": sacrebleu.__version__,
        "bleu": bleu,
        "vendi": vend,
        "perplexity": ppl,
        "consensus": cons,
    }
    with open(OUT, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
