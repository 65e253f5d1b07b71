"""The custom-task example's questions as pyarrow writes parquet (as `datasets` pushes them to the hub),
for the custom-task tests (crates/cli/tests/custom.rs: the same task from parquet, from JSONL and
through the hub-compatible test server).

  pip install pyarrow && python3 scripts/make_custom_fixtures.py

Reads examples/custom-qa/{train,test}.jsonl; writes tests/fixtures/custom-qa-parquet/
{train,test}-00000-of-00001.parquet with string columns question, answer, opt_a..opt_d and a letter
label, the options again as a list<string> `options` with an int64 `label_idx`, and a nullable int32
`maybe` and a bool `even` (rows split over row groups of 16).
"""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.join(os.path.dirname(__file__), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "custom-qa-parquet")


def main():
    os.makedirs(OUT, exist_ok=True)
    for split in ["train", "test"]:
        rows = [json.loads(l) for l in open(os.path.join(ROOT, "examples", "custom-qa", f"{split}.jsonl")) if l.strip()]
        cols = {"question": [r["question"] for r in rows], "answer": [r["answer"] for r in rows]}
        for j, name in enumerate(["opt_a", "opt_b", "opt_c", "opt_d"]):
            cols[name] = [r["options"][j] for r in rows]
        cols["label"] = [r["label"] if isinstance(r["label"], str) else "ABCD"[r["label"]] for r in rows]
        # The same options and gold as a list<string> column and an int64 index, as `datasets` stores them;
        # and a nullable int and a bool for the reader's number/boolean text.
        cols["options"] = pa.array([r["options"] for r in rows], type=pa.list_(pa.string()))
        cols["label_idx"] = pa.array(["ABCD".index(l) for l in cols["label"]], type=pa.int64())
        cols["maybe"] = pa.array([None if i % 3 == 0 else i for i in range(len(rows))], type=pa.int32())
        cols["even"] = pa.array([i % 2 == 0 for i in range(len(rows))], type=pa.bool_())
        pq.write_table(pa.table(cols), os.path.join(OUT, f"{split}-00000-of-00001.parquet"), row_group_size=16)


if __name__ == "__main__":
    main()
