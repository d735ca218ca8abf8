"""Signals and the teacher budget through the whole job: real DirectRunner, DuckDB and GE, a tiny
random teacher and TA (causal LMs) and a tiny random student (BERT)."""
import json

import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from potstill.beam_pipelines.pipeline import run, split_budget
from potstill.config.core import ConfigError, parse_config
from potstill.publish.contract import SIGNAL_COLUMNS

POOL = [f"the {noun} was {adj}" for noun in ("film", "plot", "cast", "score")
        for adj in ("good", "bad", "dull")]          # 12 distinct rows
SEED = [("good", "positive"), ("bad", "negative"), ("great", "positive"), ("awful", "negative")]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def make_config(tmp_path, tiny_lm, tiny_bert, **blocks):
    raw = {
        "dataset": "toy", "output_root": str(tmp_path / "out"),
        "task": {"labels": ["negative", "positive"]},
        "corpus": {
            "unlabeled": {"path": write_jsonl(tmp_path / "u.jsonl", [{"text": t} for t in POOL] +
                                              [{"text": ""}])},   # one rejected row
            "seed": {"path": write_jsonl(tmp_path / "s.jsonl", [{"text": t, "label": l} for t, l in SEED]),
                     "label_field": "label"},
        },
        "teacher": {"model": tiny_lm, "batch_size": 4},
        "student": {"model": tiny_bert, "min_steps": 5, "batch_size": 4},
        "signals": {"enabled": True, "ta_model": tiny_lm, "consistency_samples": 4},
    }
    raw.update(blocks)
    return parse_config(raw)


def read_version(version):
    manifest = json.loads((version / "manifest.json").read_text())
    return (manifest, pq.read_table(version / "data"), pq.read_table(version / "filtered.parquet"),
            pq.read_table(version / "rejected.parquet"))


def test_budget_rounds_never_overspend_and_account_for_every_row(tmp_path, tiny_lm, tiny_bert):
    cfg = make_config(tmp_path, tiny_lm, tiny_bert, budget={"teacher_calls": 5, "rounds": 2})
    manifest, published, filtered, rejected = read_version(run(cfg, test_pipeline=BeamTestPipeline()))

    budget = manifest["budget"]
    assert [r["teacher_calls"] for r in budget["rounds"]] == [3, 2] == [r["budget"] for r in budget["rounds"]]
    assert budget["spent"] == 5 <= budget["teacher_calls"]
    assert budget["rounds"][0]["student_trained_on"] == {"seed_rows": 4, "teacher_rows": 0}
    assert budget["rounds"][1]["student_trained_on"] == {"seed_rows": 4, "teacher_rows": 3}

    pool = published.filter([s == "corpus" for s in published["source"].to_pylist()])
    assert pool.num_rows == 5 and sorted(pool["selection_round"].to_pylist()) == [1, 1, 1, 2, 2]
    assert manifest["counts"]["published"] == {"corpus": 5, "seed": 4}
    assert filtered["filter_reason"].to_pylist() == ["over_budget"] * 7
    assert rejected["reason"].to_pylist() == ["empty_text"]
    assert manifest["counts"]["totals"] == {"read": 17, "published": 9, "rejected": 1, "filtered": 7}
    assert not set(pool["id"].to_pylist()) & set(filtered["id"].to_pylist())

    for column in SIGNAL_COLUMNS:
        assert column in published.column_names
        assert None not in published[column].to_pylist(), column
    # over-budget rows keep the student's signals (they never met the teacher or the TA)
    assert None not in filtered["student_entropy"].to_pylist()
    assert set(filtered["ta_teacher_confidence"].to_pylist()) == {None}
    assert set(filtered["teacher_label"].to_pylist()) == {None}
    assert manifest["models"]["ta"]["sha256"] and manifest["models"]["student"]["sha256"]
    assert manifest["throughput"]["teacher_rows"] == 4 + 5  # seeds once, then 3 + 2 pool rows


def test_signals_without_budget_and_select_sql(tmp_path, tiny_lm, tiny_bert):
    cfg = make_config(tmp_path, tiny_lm, tiny_bert,
                      curation={"query": "select.sql", "weight_floor": 0.3})
    manifest, published, filtered, _ = read_version(run(cfg, test_pipeline=BeamTestPipeline()))
    assert "budget" not in manifest and manifest["signals"]["warm_up"]["seed_rows"] == 4
    assert set(published["selection_round"].to_pylist()) == {1}
    assert set(filtered["filter_reason"].to_pylist()) <= {"llkd_teacher_unsure", "llkd_student_confident"}
    totals = manifest["counts"]["totals"]
    assert filtered.num_rows > 0  # rows below their class's averages (12 distinct random scores)
    assert totals == {"read": 17, "published": published.num_rows, "rejected": 1,
                      "filtered": filtered.num_rows} and published.num_rows + filtered.num_rows == 16
    rows = published.to_pylist()
    assert all(r["weight"] == 1.0 for r in rows if r["source"] == "seed")
    assert all(0.3 - 1e-6 <= r["weight"] <= 1 + 1e-6 for r in rows)
    assert manifest["curation"]["params"]["weight_floor"] == 0.3


def test_random_budget_needs_no_student(tmp_path, tiny_lm, tiny_bert):
    cfg = make_config(tmp_path, tiny_lm, tiny_bert, signals={"enabled": False},
                      budget={"teacher_calls": 4, "strategy": "random"})
    manifest, published, filtered, _ = read_version(run(cfg, test_pipeline=BeamTestPipeline()))
    assert manifest["budget"]["spent"] == 4 and filtered.num_rows == 8
    assert set(published["student_label"].to_pylist()) == {None}


def test_budget_split_and_config_errors(tmp_path, tiny_lm, tiny_bert):
    assert split_budget(10, 3) == [4, 3, 3] and split_budget(2, 2) == [1, 1]
    with pytest.raises(ConfigError, match="budget.strategy=need needs signals.enabled"):
        make_config(tmp_path, tiny_lm, tiny_bert, signals={"enabled": False}, budget={"teacher_calls": 4})
    with pytest.raises(ConfigError, match="budget.rounds > 1 needs budget.teacher_calls"):
        make_config(tmp_path, tiny_lm, tiny_bert, budget={"rounds": 2})
    with pytest.raises(ConfigError, match="signals.enabled needs corpus.seed"):
        parse_config({"dataset": "x", "task": {"labels": ["a", "b"]},
                      "corpus": {"unlabeled": {"path": "u.jsonl"}}, "signals": {"enabled": True}})
