"""Hostile text through the whole job (`potstill run`: real DirectRunner, DuckDB and
great-expectations, the tiny random teacher): a broken CSV quote never merges rows, and the
counts reconcile with the file's physical lines."""
import json

import pyarrow.parquet as pq

from potstill.beam_pipelines.cli import main

LABELS = ["negative", "positive"]


def run_job(tmp_path, tiny_lm, corpus: dict, files: dict[str, str]):
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(json.dumps({"dataset": "d", "output_root": "out", "task": {"labels": LABELS},
                               "corpus": corpus, "teacher": {"model": tiny_lm, "batch_size": 8}}))
    assert main(["run", str(cfg)]) == 0
    version = sorted((tmp_path / "out" / "d").glob("v*"))[-1]
    return {"manifest": json.loads((version / "manifest.json").read_text()),
            "published": pq.read_table(version / "data").to_pylist(),
            "rejected": pq.read_table(version / "rejected.parquet").to_pylist(),
            "filtered": pq.read_table(version / "filtered.parquet").to_pylist()}


def test_an_unterminated_csv_quote_is_one_rejected_line_not_a_merge(tmp_path, tiny_lm):
    lines = ["text,site"] + [f"review number {n},web" for n in range(2, 103)]
    lines[40] = '"a quote that never closes,web'  # line 41
    v = run_job(tmp_path, tiny_lm, {"unlabeled": {"path": "u.csv"}},
                {"u.csv": "".join(line + "\n" for line in lines)})
    assert len(lines) == 102
    assert len(v["published"]) == 100 and len(v["filtered"]) == 0
    assert [(r["input_ref"].rsplit("/", 1)[1], r["raw"]) for r in v["rejected"]] == [
        ("u.csv:41", lines[40])]
    assert "never closes" in v["rejected"][0]["detail"]
    assert sorted(r["text"] for r in v["published"]) == sorted(
        f"review number {n}" for n in range(2, 103) if n != 41)
    totals = v["manifest"]["counts"]["totals"]
    assert totals["read"] == len(lines) - 1 == totals["published"] + totals["rejected"] + totals["filtered"]


def test_invisible_and_full_width_copies_of_a_test_row_are_not_published(tmp_path, tiny_lm):
    plain = "a test review, word for word"
    disguised = ["a test re\u200bview, word for word", "a test re\u00adview, word for word",
                 "a test\u2060 review, word for word", "a \ufefftest review, word for word",
                 "ａ ｔｅｓｔ ｒｅｖｉｅｗ， ｗｏｒｄ ｆｏｒ ｗｏｒｄ"]
    ordinary = [f"an ordinary review number {n}" for n in range(6)]
    rows = [*disguised, *ordinary, "\u200b", "\ufeff"]
    v = run_job(tmp_path, tiny_lm,
                {"unlabeled": {"path": "u.jsonl"},
                 "test": {"path": "t.jsonl", "label_field": "label"}},
                {"u.jsonl": "".join(json.dumps({"text": t}) + "\n" for t in rows),
                 "t.jsonl": json.dumps({"text": plain, "label": "positive"}) + "\n"})
    assert sorted(r["text"] for r in v["published"]) == sorted(ordinary)
    assert sorted(r["text"] for r in v["filtered"]) == sorted(disguised)
    assert sorted(r["filter_reason"] for r in v["filtered"]) == ["duplicate"] * 4 + ["test_overlap"]
    assert [(r["input_ref"].rsplit(":", 1)[1], r["reason"]) for r in v["rejected"]] == [
        ("12", "empty_text"), ("13", "empty_text")]
    totals = v["manifest"]["counts"]["totals"]
    assert totals["read"] == len(rows) == totals["published"] + totals["rejected"] + totals["filtered"]
