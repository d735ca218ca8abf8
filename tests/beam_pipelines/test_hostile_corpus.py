"""The whole job over the hostile corpus (tests/hostile_corpus.py): real DirectRunner, DuckDB and
great-expectations, the tiny random teacher. Row-level problems never stop the job: each case
ends exactly where it should, with its evidence, and the counts reconcile."""
import json

import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

import hostile_corpus as hc
from potstill.beam_pipelines.cli import main
from potstill.beam_pipelines.pipeline import run
from potstill.config.core import parse_config


@pytest.fixture(scope="module")
def version(tmp_path_factory, tiny_lm):
    folder = tmp_path_factory.mktemp("hostile-job")
    cfg = parse_config({"dataset": "hostile", "output_root": str(folder / "out"),
                        "task": {"labels": hc.LABELS}, "corpus": hc.build(folder / "in"),
                        "teacher": {"model": tiny_lm, "batch_size": 4}})
    path = run(cfg, test_pipeline=BeamTestPipeline())
    assert not list((folder / "out" / "hostile" / ".staging").iterdir())
    return {"manifest": json.loads((path / "manifest.json").read_text()),
            "published": pq.read_table(path / "data").to_pylist(),
            "rejected": pq.read_table(path / "rejected.parquet").to_pylist(),
            "filtered": pq.read_table(path / "filtered.parquet").to_pylist()}


def assert_reconciled(v):
    totals = v["manifest"]["counts"]["totals"]
    assert totals == hc.TOTALS
    assert totals["read"] == len(v["published"]) + len(v["rejected"]) + len(v["filtered"])
    assert v["manifest"]["counts"]["read"] == {"corpus": 20, "seed": 6}


@pytest.mark.parametrize("case", list(hc.CASES))
def test_each_hostile_row_ends_where_it_should(case, version):
    file, line, outcome, reason, text = hc.CASES[case]
    if outcome == hc.REJ:
        rows = [r for r in version["rejected"] if r["input_ref"].endswith(f"/{file}:{line}")]
        assert [r["reason"] for r in rows] == [reason]
        assert rows[0]["detail"] and rows[0]["raw"] and len(rows[0]["raw"]) <= 2000 + 40
    elif outcome == hc.FIL:
        rows = [r for r in version["filtered"] if r["text"] == text]
        assert [r["filter_reason"] for r in rows] == [reason]
        assert [r["text"] for r in version["published"]].count(text) == 1  # one copy is kept
    else:
        rows = [r for r in version["published"] if r["text"] == text]
        assert len(rows) == 1 and "\ufffd" not in rows[0]["text"]
        if file in ("labels.jsonl", "numeric.parquet"):
            assert rows[0]["source"] == "seed" and rows[0]["gold_label"] in hc.LABELS
    assert_reconciled(version)


def test_evidence_of_the_hostile_rows(version):
    rejected = {r["input_ref"].rsplit("/", 1)[1]: r for r in version["rejected"]}
    assert rejected["a.jsonl:4"]["raw"] == '{"text": "caf\\xe9 in latin-1 inside a utf-8 file"}'
    assert "byte offset 13 of line 4" in rejected["a.jsonl:4"]["detail"]
    assert rejected["a.jsonl:12"]["raw"] == '{"text": "broken json line"'
    assert rejected["a.jsonl:8"]["raw"].endswith(f"…[truncated: {len(hc.A_LINES[7]) - 1:,} chars in all]")
    assert rejected["labels.jsonl:3"]["detail"] == "label '1' is not one of ['negative', 'positive']"
    seed = {r["text"]: r for r in version["published"] if r["source"] == "seed"}
    assert seed["a seed review with a padded label"]["gold_label"] == "positive"
    assert seed["a review in a gzip file"]["label"] == "positive"
    assert not any("\ufffd" in (r["raw"] or "") for r in version["rejected"])


def test_a_failed_validation_leaves_no_staging_folder(tmp_path, tiny_lm, capsys):
    (tmp_path / "u.jsonl").write_text('{"text": "a fine film"}\n{"text": "a dull film"}\n')
    cfg = tmp_path / "config.yaml"
    cfg.write_text(json.dumps({"dataset": "toy", "output_root": "out",
                               "task": {"labels": hc.LABELS},
                               "corpus": {"unlabeled": {"path": "u.jsonl"}},
                               "teacher": {"model": tiny_lm}, "validation": {"min_rows": 100}}))
    assert main(["run", str(cfg)]) == 3
    assert "nothing was published" in capsys.readouterr().err
    dataset = tmp_path / "out" / "toy"
    assert not list(dataset.glob("v*")) and not list((dataset / ".staging").iterdir())
