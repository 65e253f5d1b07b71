#!/usr/bin/env python3
"""Writes the task-accuracy parity fixtures under tests/fixtures/accuracy/ (lm-evaluation-harness 0.4.13,
HF backend, f32 CPU; `make test` itself needs no Python):

    pip install lm_eval==0.4.13 torch transformers datasets pandas pyarrow
    python3 scripts/make_accuracy_fixtures.py

1. Tiny task files in the hub schemas (`data/<task>/<config>/<split>-00000-of-00001.parquet`): SciQ,
   ARC-Easy, ARC-Challenge (numeric labels "1".."4", 3 and 5 options), GSM8K main (train for few-shot).
2. For each fixture model (opt125: max_length 64, so contexts are truncated from the left; llama:
   max_length 256) and task, lm-eval's own task YAML with only `dataset_path`/`dataset_kwargs` pointed at
   the local files, run by `simple_evaluate(..., log_samples=True)`, batch size 1; per example the
   requests, token ids (`_encode_pair`), log-likelihoods, is_greedy, acc / acc_norm choices, generations,
   filtered answers and exact matches; the aggregate metrics; `make_table`'s output.
3. `filters.json`: lm-eval's RegexFilter / exact_match on hand-written strings.
"""
import json
import os
import random
import sys

import pandas as pd

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
OUT = os.path.join(ROOT, "accuracy")
DATA = os.path.join(OUT, "data")
VERSION = 1
MAX_GEN_TOKS = 32
MODELS = ["opt125", "llama"]

SCIQ = [
    dict(question="What organelle makes energy for the cell?", distractor3="vacuole", distractor1="ribosome",
         distractor2="nucleus", correct_answer="mitochondria",
         support="Mitochondria are the powerhouses of the cell."),
    dict(question="What gas do plants absorb?", distractor3="helium", distractor1="oxygen", distractor2="nitrogen",
         correct_answer="carbon dioxide", support="  Plants take in carbon dioxide."),
    dict(question="What has a negative charge?", distractor3="nucleus", distractor1="proton", distractor2="neutron",
         correct_answer="electron", support=""),
    dict(question="What is the boiling point of water in Celsius?", distractor3="50", distractor1="0",
         distractor2="212", correct_answer="100", support="\nWater boils at 100 degrees."),
    dict(question="Which planet is largest?", distractor3="Mars", distractor1="Earth", distractor2="Venus",
         correct_answer="Jupiter", support="Jupiter is a gas giant."),
    dict(question="What do bees make?", distractor3="silk", distractor1="milk", distractor2="wax paper",
         correct_answer="honey", support="Bees make honey from nectar. "),
    dict(question="Café or crème: which is French for coffee?", distractor3="thé", distractor1="crème",
         distractor2="lait", correct_answer="café", support="Un café, s'il vous plaît."),
]

ARC_EASY = [
    dict(id="E0", question="Which of these is a source of light energy?",
         choices=dict(text=["the Sun", "a rock", "a pillow", "a shadow"], label=["A", "B", "C", "D"]), answerKey="A"),
    dict(id="E1", question="A student mixes salt into water. What is formed?",
         choices=dict(text=["a gas", "a solution", "a solid", "an element"], label=["A", "B", "C", "D"]), answerKey="B"),
    dict(id="E2", question="Which tool measures mass?",
         choices=dict(text=["ruler", "balance", "thermometer", "clock"], label=["1", "2", "3", "4"]), answerKey="2"),
    dict(id="E3", question="What do plants need to make food?",
         choices=dict(text=["sunlight", "sand", "noise"], label=["A", "B", "C"]), answerKey="A"),
    dict(id="E4", question="Which is a mammal?",
         choices=dict(text=["shark", "whale", "trout", "squid", "crab"], label=["A", "B", "C", "D", "E"]), answerKey="B"),
    dict(id="E5", question="Water freezes at which temperature (°C)?",
         choices=dict(text=["0", "10", "100", "-40"], label=["1", "2", "3", "4"]), answerKey="1"),
]

ARC_CHALLENGE = [
    dict(id="C0", question="Which process releases energy from glucose in cells?",
         choices=dict(text=["photosynthesis", "respiration", "transpiration", "condensation"],
                      label=["A", "B", "C", "D"]), answerKey="B"),
    dict(id="C1", question="A ball rolls down a ramp. Which energy increases?",
         choices=dict(text=["potential", "kinetic", "chemical", "nuclear"], label=["1", "2", "3", "4"]), answerKey="2"),
    dict(id="C2", question="Which layer of Earth is liquid?",
         choices=dict(text=["crust", "mantle", "outer core", "inner core"], label=["A", "B", "C", "D"]), answerKey="C"),
    dict(id="C3", question="Which is a renewable resource?",
         choices=dict(text=["coal", "wind", "oil"], label=["A", "B", "C"]), answerKey="B"),
    dict(id="C4", question="What causes the seasons?",
         choices=dict(text=["the tilt of Earth's axis", "distance to the Sun", "the Moon", "clouds"],
                      label=["1", "2", "3", "4"]), answerKey="1"),
    dict(id="C5", question="Which unit measures force?",
         choices=dict(text=["newton", "joule", "watt", "volt"], label=["A", "B", "C", "D"]), answerKey="A"),
]

GSM_TRAIN = [
    dict(question="Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether?",
         answer="Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72"),
    dict(question="Weng earns $12 an hour. She did 50 minutes of babysitting. How much did she earn?",
         answer="Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nShe earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"),
    dict(question="A shop sold 1,200 pens on Monday and 300 more on Tuesday. How many pens in total?",
         answer="Tuesday: 1,200 + 300 = <<1200+300=1500>>1,500 pens.\nTotal: 1,200 + 1,500 = <<1200+1500=2700>>2,700.\n#### 2,700"),
    dict(question="Tom has 10 marbles and buys 3 times as many. How many does he buy?",
         answer="He buys 10*3 = <<10*3=30>>30 marbles.\n#### 30"),
    dict(question="A train travels 60 miles an hour for 2 hours. How far does it go?",
         answer="It goes 60*2 = <<60*2=120>>120 miles.\n#### 120"),
    dict(question="Sam had 5 apples and ate 8. How many more did he eat than he had?",
         answer="He ate 8-5 = <<8-5=3>>3 more.\n#### 3"),
    dict(question="A box holds 7 eggs. How many eggs are in 6 boxes?",
         answer="6*7 = <<6*7=42>>42 eggs.\n#### 42"),
]

GSM_TEST = [
    dict(question="Tom has 11 marbles. A friend gives Tom 2 more. How many marbles does Tom have?",
         answer="Tom has 11+2 = <<11+2=13>>13 marbles.\n#### 13"),
    dict(question="A car costs $12,500 and a bike $500. What do both cost?",
         answer="12,500 + 500 = $<<12500+500=13000>>13,000.\n#### 13,000"),
    dict(question="The temperature was 2 degrees and fell by 5. What is it now?",
         answer="2 - 5 = <<2-5=-3>>-3.\n#### -3"),
    dict(question="Jin has 17 stickers and gives away 4. How many are left?",
         answer="17-4 = <<17-4=13>>13.\n#### 13"),
    dict(question="A pizza has 8 slices. Four friends share 2 pizzas equally. How many slices each?",
         answer="2*8 = <<2*8=16>>16 slices.\n16/4 = <<16/4=4>>4 each.\n#### 4"),
    dict(question="Lee reads 20 pages a day. How many pages in a week?",
         answer="20*7 = <<20*7=140>>140 pages.\n#### 140"),
]

FILTER_CASES = [
    "The answer is $1,234.", "#### 72", "-3.5 apples", "no number", "#### -1,000.50 and then 3",
    "Step 1: 4+4=8. So 8", "costs $5 or $7.", "a - 5", "x -5 y", "1 #### 2 #### 3", "#### ",
    "The total is 13,000.\n", "12.\n", "1..", "$.", "- 12", "answer: 013", "It is 4.",
]
TARGETS = ["Tom has 13.\n#### 13", "#### 1,234", "#### -3", "#### 72", "#### 8"]


def write_split(rel, rows):
    path = os.path.join(DATA, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return os.path.abspath(path)


def task_config(name, files):
    import yaml
    import lm_eval
    tasks = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    path = os.path.join(tasks, "arc" if name.startswith("arc") else name, f"{name}.yaml")
    cfg = yaml.safe_load(open(path))
    if "include" in cfg:  # arc_challenge includes arc_easy
        base = yaml.safe_load(open(os.path.join(os.path.dirname(path), cfg.pop("include"))))
        cfg = {**base, **cfg}
    cfg.pop("tag", None)
    cfg["task"] = name
    cfg["dataset_path"] = "parquet"
    cfg["dataset_name"] = None
    cfg["dataset_kwargs"] = {"data_files": files}
    for split in ("training_split", "validation_split"):  # only the splits written here
        if cfg.get(split) not in files:
            cfg.pop(split, None)
    return cfg


def run_model(model_name, files):
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.utils import make_table

    mdir = os.path.abspath(os.path.join(ROOT, "models", model_name))
    lm = HFLM(pretrained=mdir, dtype="float32", device="cpu", batch_size=1)
    out = {"model": model_name, "max_length": lm.max_length, "runs": []}
    plans = [("sciq", 0), ("arc_easy", 0), ("arc_challenge", 0), ("gsm8k", 2), ("gsm8k", None)]
    for task, shots in plans:
        cfg = task_config(task, files[task])
        if task == "gsm8k":
            cfg["generation_kwargs"] = dict(cfg["generation_kwargs"], max_gen_toks=MAX_GEN_TOKS)
        res = simple_evaluate(model=lm, tasks=[cfg], num_fewshot=shots, log_samples=True,
                              bootstrap_iters=0, random_seed=0, numpy_random_seed=1234,
                              torch_random_seed=1234, fewshot_random_seed=1234)
        table = make_table(res)
        metrics = {k: v for k, v in res["results"][task].items() if k != "alias"}
        examples = []
        seen = {}
        for s in sorted(res["samples"][task], key=lambda s: s["doc_id"]):
            ex = seen.get(s["doc_id"])
            if ex is None:
                ex = {"doc_id": s["doc_id"], "target": s["target"]}
                seen[s["doc_id"]] = ex
                examples.append(ex)
            if task == "gsm8k":
                ex["context"] = s["arguments"][0][0]
                ex["generation"] = s["resps"][0][0]
                ex.setdefault("filtered", {})[s["filter"]] = s["filtered_resps"][0]
                ex.setdefault("exact_match", {})[s["filter"]] = s["exact_match"]
                ids = lm.tok_encode(ex["context"])
                ex["context_ids"] = ids[-(lm.max_length - MAX_GEN_TOKS):]
            else:
                reqs = [tuple(a) for a in s["arguments"]]
                ex["requests"] = reqs
                ex["loglikelihoods"] = [float(r[0][0]) for r in s["resps"]]
                ex["is_greedy"] = [bool(r[0][1]) for r in s["resps"]]
                ex["acc"] = s["acc"]
                ex["acc_norm"] = s["acc_norm"]
                enc = [lm._encode_pair(c, x) for c, x in reqs]
                ex["context_enc"] = [e[0] for e in enc]
                ex["continuation_enc"] = [e[1] for e in enc]
        out["runs"].append({
            "task": task, "num_fewshot": res["n-shot"][task], "max_gen_toks": MAX_GEN_TOKS if task == "gsm8k" else None,
            "metrics": metrics, "table": table, "examples": examples,
            "version": res["versions"][task],
        })
    return out


def filters_fixture():
    from lm_eval.filters.extraction import RegexFilter
    from lm_eval.filters.selection import TakeFirstFilter
    from lm_eval.api.metrics import exact_match_hf_evaluate
    strict = RegexFilter(regex_pattern=r"#### (\-?[0-9\.\,]+)")
    flex = RegexFilter(regex_pattern=r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1)
    take = TakeFirstFilter()
    cases = []
    for s in FILTER_CASES:
        st = list(take.apply(strict.apply([[s]], [None]), [None]))[0]
        fl = list(take.apply(flex.apply([[s]], [None]), [None]))[0]
        ems = {}
        for t in TARGETS:
            ems[t] = [
                float(exact_match_hf_evaluate([x], [t], regexes_to_ignore=[",", "\\$", "(?s).*#### ", "\\.$"],
                                              ignore_case=True, ignore_punctuation=False)["exact_match"])
                for x in (st, fl, s)
            ]
        cases.append({"text": s, "strict-match": st, "flexible-extract": fl, "exact_match": ems})
    return {"targets": TARGETS, "cases": cases}


def main():
    files = {
        "sciq": {"test": write_split("sciq/data/test-00000-of-00001.parquet", SCIQ)},
        "arc_easy": {"test": write_split("ai2_arc/ARC-Easy/test-00000-of-00001.parquet", ARC_EASY)},
        "arc_challenge": {"test": write_split("ai2_arc/ARC-Challenge/test-00000-of-00001.parquet", ARC_CHALLENGE)},
        "gsm8k": {"train": write_split("gsm8k/main/train-00000-of-00001.parquet", GSM_TRAIN),
                  "test": write_split("gsm8k/main/test-00000-of-00001.parquet", GSM_TEST)},
    }
    import lm_eval
    for m in MODELS:
        out = run_model(m, files)
        out["version"] = VERSION
        out["lm_eval"] = lm_eval.__version__
        with open(os.path.join(OUT, f"{m}.json"), "w") as f:
            json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(OUT, "filters.json"), "w") as f:
        json.dump(dict(filters_fixture(), version=VERSION), f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
