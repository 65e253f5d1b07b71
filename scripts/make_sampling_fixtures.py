#!/usr/bin/env python3
"""Kept sets of transformers' logits processors at the real vocabularies (OPT 50,272; Llama 3 128,256).

Random logits with many ties (normal, quantised to 1/8, stored exactly as f16) go through transformers'
own processors in generate's order (RepetitionPenalty, Temperature, TopK, TopP, MinP; min_tokens_to_keep 1)
for a grid of settings; per (setting, row) the script records the kept set as (count, sum of ids, sum of
squared ids) — exact set identity at a few bytes — and the processed distribution as two f64 moments of
softmax(processed logits) (mean id, sum of squared probabilities). TopP's one ambiguity is recorded, not matched: at a tie
group on its threshold torch keeps the members that its unstable sort happens to put last; crossfeed
keeps the whole group (`tie_split` marks those rows; `transformers_count` is what torch kept). crates/generate/tests/sampling_fixtures.rs checks
crossfeed's warpers (CPU sort path and the device-generic selection) against it.

    python3 scripts/make_sampling_fixtures.py   # writes tests/fixtures/sampling.{json,safetensors}
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import (LogitsProcessorList, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
VOCABS = [50272, 128256]
ROWS = 2
SETTINGS = [
    dict(top_k=1), dict(top_k=50), dict(top_k=1000), dict(top_k=3000),
    dict(top_p=0.000001), dict(top_p=0.5), dict(top_p=0.9), dict(top_p=0.99),
    dict(min_p=0.05), dict(min_p=0.5),
    dict(temperature=0.7, top_k=50, top_p=0.95, min_p=0.02),
    dict(temperature=1.5, top_k=3000, top_p=0.8),
    dict(repetition_penalty=1.3, top_k=20),
    dict(repetition_penalty=1.3, temperature=0.8, top_p=0.9),
]
SEEN = [17, 256, 1000, 4242, 40000]  # token ids "already in the row" for the repetition penalty


def processors(s):
    procs = []
    if s.get("repetition_penalty", 1.0) != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(s["repetition_penalty"]))
    if s.get("temperature", 1.0) != 1.0:
        procs.append(TemperatureLogitsWarper(s["temperature"]))
    if s.get("top_k", 0):
        procs.append(TopKLogitsWarper(top_k=s["top_k"], min_tokens_to_keep=1))
    if s.get("top_p", 1.0) < 1.0:
        procs.append(TopPLogitsWarper(top_p=s["top_p"], min_tokens_to_keep=1))
    if s.get("min_p"):
        procs.append(MinPLogitsWarper(min_p=s["min_p"], min_tokens_to_keep=1))
    return LogitsProcessorList(procs)


def smooth(v):
    """Logits with (almost) no ties, computed the same way in Rust: a multiplicative hash of the id."""
    rows = []
    for r in range(ROWS):
        i = torch.arange(v, dtype=torch.int64)
        h = ((i * 2654435761 + r * 40503) % 2**32).to(torch.float64) / 2**32
        rows.append((12.0 * (h * h * h * h * h * h)).to(torch.float32))
    return torch.stack(rows)


def run(v, kind, logits):
    ids = torch.tensor([SEEN] * ROWS)
    cases = []
    for s in SETTINGS:
        scores = processors(s)(ids, logits.float().clone())
        # The same scores before any filter (penalty and temperature only): every kept set is the
        # tokens at or above the lowest kept score, except that TopP may split the tie group at its
        # threshold in torch.sort's (unstable, implementation-defined) order. The fixture records
        # that closure (what crossfeed keeps: the whole tie group) and whether transformers split it.
        base = processors({k: s[k] for k in ("repetition_penalty", "temperature") if k in s})(ids, logits.float().clone())
        for r in range(ROWS):
            kept = torch.isfinite(scores[r])
            lowest = base[r][kept].min()
            closure = (base[r] >= lowest).nonzero().flatten().to(torch.float64)
            assert bool(kept[base[r] > lowest].all()), "a kept set that is not a superlevel set"
            # The processed distribution itself (penalty and temperature values, renormalisation), as two
            # f64 moments of softmax(scores): mean id and sum of squares. Only where the kept set is
            # unambiguous (a split tie group changes the distribution, not just the set).
            split = int(kept.sum()) < int(closure.numel())
            probs = torch.softmax(scores[r].double(), -1)
            moments = None if split else [float((probs * torch.arange(v, dtype=torch.float64)).sum()), float((probs * probs).sum())]
            cases.append(dict(vocab=v, kind=kind, row=r, settings=s, count=int(closure.numel()), id_sum=int(closure.sum()),
                              id_sq_sum=int((closure * closure).sum()), transformers_count=int(kept.sum()),
                              tie_split=split, moments=moments))
    return cases


def main():
    torch.manual_seed(0)
    tensors, cases = {}, []
    for v in VOCABS:
        logits = (torch.randn(ROWS, v) * 3 * 8).round() / 8  # ties: 1/8 steps
        logits = logits.to(torch.float16)
        tensors[f"logits{v}"] = logits.contiguous()
        for kind, lg in [("tied", logits), ("smooth", smooth(v))]:
            cases.extend(run(v, kind, lg))
    save_file(tensors, os.path.join(OUT, "sampling.safetensors"))
    with open(os.path.join(OUT, "sampling.json"), "w") as f:
        json.dump(dict(seen=SEEN, cases=cases), f, indent=0)
    for c in cases:
        print(c["vocab"], c["row"], c["settings"], c["count"], "(transformers split the tie group: kept %d)" % c["transformers_count"] if c["tie_split"] else "")


if __name__ == "__main__":
    main()
