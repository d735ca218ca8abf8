"""A deliberately hostile corpus, built in the test: every bad-row case the job must survive,
with where each row must end up (published, rejected with a reason, or filtered).

    unlabeled/a.jsonl     UTF-8 with a BOM, CRLF and LF lines, blank lines, a Latin-1 line,
                          NUL bytes, a 50 MB line, nested JSON, a broken line, duplicate ids
    unlabeled/b.jsonl.gz  real gzip: a duplicate of a row in a.jsonl, a row the seed repeats
    unlabeled/wide.csv    1,000 columns, CRLF, a quoted field over two lines, a cp1252 byte,
                          a row with more cells than the header
    seed/labels.jsonl     a label with trailing spaces, a numeric label, a corpus duplicate
    seed/numeric.parquet  an integer label column
    test.jsonl            ordinary rows

`CASES` maps each case to (file, physical line or Parquet row, outcome, reason or None, the
normalised text of a published or filtered row, else None). Counts: 20 corpus + 6 seed rows read; 12 published, 11 rejected, 3 filtered.
"""
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

BIG = 50 * 1024 * 1024
LABELS = ["negative", "positive"]
WIDE_COLUMNS = ["text"] + [f"c{i}" for i in range(1, 1000)]


def _j(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


A_LINES = [
    b"\xef\xbb\xbf" + _j({"text": "a review that starts after a byte-order mark"}) + b"\r\n",   # 1
    b"\r\n",                                                                                     # 2
    _j({"text": "a review with windows line endings"}) + b"\r\n",                              # 3
    b'{"text": "caf\xe9 in latin-1 inside a utf-8 file"}\n',                                    # 4
    _j({"text": "café in proper utf-8 in the same file"}) + b"\n",                              # 5
    b'{"text": "a NUL \\u0000 escaped in JSON"}\n',                                             # 6
    b'{"text": "a raw NUL \x00 byte"}\n',                                                       # 7
    b'{"text": "' + b"x" * BIG + b'"}\n',                                                       # 8
    _j({"text": {"nested": "json object"}}) + b"\n",                                           # 9
    _j({"text": json.dumps({"nested": "json as a string"})}) + b"\n",                         # 10
    b"   \n",                                                                                    # 11
    b'{"text": "broken json line"\n',                                                           # 12
    _j({"id": "x1", "text": "the same review twice in one file"}) + b"\n",                    # 13
    _j({"id": "x1", "text": "the same review twice in one file"}) + b"\n",                    # 14
    _j({"id": "x1", "text": "a different review with the same id"}) + b"\n",                  # 15
    _j({"text": "the same review in two files"}) + b"\n",                                     # 16
]
B_LINES = [_j({"text": "the same review in two files"}) + b"\n",
           _j({"text": "a review in a gzip file"}) + b"\n"]
SEED_LINES = [_j({"text": "a seed review with a padded label", "label": "positive  "}) + b"\n",
              _j({"text": "a seed review labelled negative", "label": "negative"}) + b"\n",
              _j({"text": "a seed review with a numeric label", "label": 1}) + b"\n",
              _j({"text": "a review in a gzip file", "label": "positive"}) + b"\n"]


def _wide_row(text: str, extra: int = 0) -> bytes:
    return text.encode("utf-8") + b"," + b",".join(b"v" for _ in range(999 + extra)) + b"\r\n"


WIDE_LINES = [",".join(WIDE_COLUMNS).encode() + b"\r\n",                                          # 1
              _wide_row("a review in a thousand-column csv"),                                      # 2
              _wide_row('"a review whose quoted field\r\nspans two lines"'),                       # 3-4
              b"a cp1252 \x93quote\x94 in a utf-8 csv," + b",".join(b"v" for _ in range(999)) + b"\r\n",  # 5
              _wide_row("a row with more cells than the header", extra=1)]                         # 6

PUB, REJ, FIL = "published", "rejected", "filtered"
CASES = {
    "bom": ("a.jsonl", 1, PUB, None, "a review that starts after a byte-order mark"),
    "crlf_jsonl": ("a.jsonl", 3, PUB, None, "a review with windows line endings"),
    "mixed_encoding_bad_line": ("a.jsonl", 4, REJ, "bad_encoding", None),
    "mixed_encoding_good_line": ("a.jsonl", 5, PUB, None, "café in proper utf-8 in the same file"),
    "nul_escaped": ("a.jsonl", 6, REJ, "nul_character", None),
    "nul_raw_byte": ("a.jsonl", 7, REJ, "malformed_record", None),
    "line_50mb": ("a.jsonl", 8, REJ, "text_too_long", None),
    "nested_json_object": ("a.jsonl", 9, REJ, "non_string_text", None),
    "nested_json_string": ("a.jsonl", 10, PUB, None, '{"nested": "json as a string"}'),
    "malformed_json": ("a.jsonl", 12, REJ, "malformed_record", None),
    "duplicate_id_first": ("a.jsonl", 13, PUB, None, "the same review twice in one file"),
    "duplicate_within_file": ("a.jsonl", 14, FIL, "duplicate", "the same review twice in one file"),
    "same_id_other_text": ("a.jsonl", 15, PUB, None, "a different review with the same id"),
    "duplicate_across_files_kept": ("a.jsonl", 16, PUB, None, "the same review in two files"),
    "duplicate_across_files": ("b.jsonl.gz", 1, FIL, "duplicate", "the same review in two files"),
    "duplicate_of_seed": ("b.jsonl.gz", 2, FIL, "duplicate", "a review in a gzip file"),
    "wide_csv": ("wide.csv", 2, PUB, None, "a review in a thousand-column csv"),
    "csv_multiline_crlf": ("wide.csv", 3, PUB, None, "a review whose quoted field spans two lines"),
    "csv_cp1252_byte": ("wide.csv", 5, REJ, "bad_encoding", None),
    "csv_extra_cells": ("wide.csv", 6, REJ, "malformed_record", None),
    "label_trailing_spaces": ("labels.jsonl", 1, PUB, None, "a seed review with a padded label"),
    "seed_plain": ("labels.jsonl", 2, PUB, None, "a seed review labelled negative"),
    "label_numeric_json": ("labels.jsonl", 3, REJ, "unknown_label", None),
    "seed_wins_duplicate": ("labels.jsonl", 4, PUB, None, "a review in a gzip file"),
    "label_numeric_parquet_0": ("numeric.parquet", 1, REJ, "unknown_label", None),
    "label_numeric_parquet_1": ("numeric.parquet", 2, REJ, "unknown_label", None),
}
TOTALS = {"read": 26, "published": 12, "rejected": 11, "filtered": 3}


def build(folder: Path) -> dict[str, str]:
    """Write the hostile corpus under `folder`; returns the corpus config (paths as globs)."""
    folder = Path(folder)
    (folder / "unlabeled").mkdir(parents=True)
    (folder / "seed").mkdir()
    (folder / "unlabeled" / "a.jsonl").write_bytes(b"".join(A_LINES))
    (folder / "unlabeled" / "b.jsonl.gz").write_bytes(gzip.compress(b"".join(B_LINES)))
    (folder / "unlabeled" / "wide.csv").write_bytes(b"".join(WIDE_LINES))
    (folder / "seed" / "labels.jsonl").write_bytes(b"".join(SEED_LINES))
    pq.write_table(pa.table({"text": ["an integer label zero", "an integer label one"],
                             "label": pa.array([0, 1], pa.int64())}),
                   folder / "seed" / "numeric.parquet")
    (folder / "test.jsonl").write_text(json.dumps({"text": "a test review", "label": "positive"})
                                       + "\n", encoding="utf-8")
    return {"unlabeled": {"path": str(folder / "unlabeled" / "*")},
            "seed": {"path": str(folder / "seed" / "*"), "label_field": "label"},
            "test": {"path": str(folder / "test.jsonl"), "label_field": "label"}}
