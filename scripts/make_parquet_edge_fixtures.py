"""Parquet files in the shapes other writers give the hub's schemas, for the reader's tests
(crates/data/tests/sources.rs `parquet_written_by_pyarrow`): pyarrow's defaults and its other
forms of the same columns.

  pip install pyarrow && python3 scripts/make_parquet_edge_fixtures.py

Writes tests/fixtures/parquet-edge/*.parquet and expected.json (every row as the reader must return it:
nulls read as "", a null list as []).
"""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "parquet-edge")

QUESTIONS = ["Which is a metal?", None, "", "Wh\u00e9re do gl\u00efms live? \u2603", "Pick one."] * 3
TEXTS = [["iron", "wood", "glass", "salt"], None, [], ["caves", None, "trees"], ["a", "b", "c", "d", "e"]] * 3
LABELS = [["A", "B", "C", "D"], ["1"], [], ["A", "B", "C"], ["1", "2", "3", "4", "5"]] * 3
KEYS = ["A", "1", None, "C", "5"] * 3


def table(string=pa.string(), list_of=pa.list_):
    ch = pa.array(
        [None if t is None and i % 5 == 1 and i >= 5 else {"text": t, "label": l} for i, (t, l) in enumerate(zip(TEXTS, LABELS))],
        type=pa.struct([("text", list_of(string)), ("label", list_of(string))]),
    )
    return pa.table({
        "id": pa.array([f"q{i}" for i in range(len(KEYS))], type=string),
        "question": pa.array(QUESTIONS, type=string),
        "choices": ch,
        "answerKey": pa.array(KEYS, type=string),
    })


def expected(t):
    rows = []
    for r in t.to_pylist():
        c = r["choices"]
        rows.append({
            "id": r["id"] or "",
            "question": r["question"] or "",
            "text": [x or "" for x in ((c or {}).get("text") or [])],
            "label": [x or "" for x in ((c or {}).get("label") or [])],
            "answerKey": r["answerKey"] or "",
        })
    return rows


def main():
    os.makedirs(OUT, exist_ok=True)
    files = {}
    t = table()
    # pyarrow's defaults (what `datasets` writes): snappy, dictionary pages, 3-level lists (`list.element`).
    pq.write_table(t, os.path.join(OUT, "default.parquet"))
    files["default.parquet"] = expected(t)
    # Several row groups and tiny pages, zstd, no dictionary: rows cross page boundaries.
    pq.write_table(t, os.path.join(OUT, "paged.parquet"), row_group_size=4, data_page_size=64, compression="zstd", use_dictionary=False)
    files["paged.parquet"] = expected(t)
    # large_string / large_list (Arrow's 64-bit offsets), uncompressed.
    tl = table(pa.large_string(), pa.large_list)
    pq.write_table(tl, os.path.join(OUT, "large.parquet"), compression="none")
    files["large.parquet"] = expected(tl)
    # The older, non-compliant list naming (`list.item`), as files written before pyarrow 13 carry.
    pq.write_table(t, os.path.join(OUT, "item_lists.parquet"), use_compliant_nested_type=False)
    files["item_lists.parquet"] = expected(t)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"pyarrow": pa.__version__, "files": files}, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
