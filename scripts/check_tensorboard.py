#!/usr/bin/env python3
"""Reads a run directory's TensorBoard events with TensorBoard's own reader (`EventAccumulator`, from
the `tensorboard` package on PyPI) and checks every scalar against metrics.jsonl and the train logs.

    python3 scripts/check_tensorboard.py runs/tiny     # exits 1 on any mismatch
"""
import glob
import json
import os
import sys
import tomllib

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(run):
    acc = EventAccumulator(os.path.join(run, "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    got = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    want = {}
    for line in open(os.path.join(run, "metrics.jsonl")):
        m = json.loads(line)
        tag = f"{m['metric']}/{m['eval_set']}" + (f"/entity{m['entity']}" if "entity" in m else "") + (f"-{m['peer']}" if "peer" in m else "")
        want[(tag, m["generation"])] = m["value"]
    with open(os.path.join(run, "config.toml"), "rb") as f:
        steps = tomllib.load(f)["train"]["total_steps"]
    for log in sorted(glob.glob(os.path.join(run, "gen-*", "entity-*", "train_log.jsonl"))):
        gen = int(log.split("gen-")[1][:3])
        entity = int(log.split("entity-")[1].split("/")[0])
        for line in open(log):
            s = json.loads(line)
            for key in ["loss", "lr", "grad_norm"]:
                want[(f"train/{key}/entity{entity}", gen * steps + s["step"])] = s[key]
    bad = [(k, want[k], got.get(k)) for k in want if k not in got or abs(got[k] - want[k]) > 1e-6 * max(1.0, abs(want[k]))]
    extra = [k for k in got if k not in want]
    print(f"{len(got)} scalars read by EventAccumulator, {len(want)} expected, {len(bad)} wrong or missing, {len(extra)} extra")
    for b in bad[:10]:
        print("  mismatch", b)
    return 0 if not bad and not extra else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
