"""Multiple choice: per-row options, a distribution over each row's own letters."""
import json

import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from potstill.beam_pipelines.pipeline import run
from potstill.config.core import parse_config
from potstill.rows.records import Record, validate, with_choices

ROWS = [
    {"q": "Which is a planet?", "options": ["Mars", "The Moon", "The Sun"], "answer": "A"},
    {"q": "What do plants need?", "options": ["sunlight", "plastic"], "answer": "A"},
    {"q": "Which is a gas?", "options": {"text": ["ice", "steam", "rock", "wood"], "label": ["1", "2", "3", "4"]}},
    {"q": "Too few options?", "options": ["only one"]},
    {"q": "Answer out of range?", "options": ["x", "y"], "answer": "C"},
]


def test_choices_are_validated_and_part_of_the_id():
    kw = dict(source="seed", input_ref="f:1", text_field="q", label_field="answer",
              labels=list("ABCD"), choices_field="options")
    ok = validate(ROWS[0], **kw)
    assert isinstance(ok, Record) and ok.choices == ("Mars", "The Moon", "The Sun")
    assert ok.model_input == "Which is a planet?\nA) Mars\nB) The Moon\nC) The Sun"
    other = validate({**ROWS[0], "options": ["Venus", "The Moon", "The Sun"]}, **kw)
    assert other.id != ok.id
    assert validate(ROWS[3], **{**kw, "label_field": None}).reason == "bad_choices"
    assert validate(ROWS[4], **kw).reason == "unknown_label"
    assert with_choices("q", ["a"]) == "q\nA) a"


def test_job_scores_only_each_rows_own_letters(tmp_path, tiny_lm):
    (tmp_path / "u.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "answer"}) + "\n"
                                              for r in ROWS[2:4]))
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    cfg = parse_config({
        "dataset": "mc", "output_root": str(tmp_path / "out"),
        "task": {"kind": "multiple_choice", "labels": list("ABCD")},
        "corpus": {"unlabeled": {"path": str(tmp_path / "u.jsonl"), "text_field": "q", "choices_field": "options"},
                   "seed": {"path": str(tmp_path / "s.jsonl"), "text_field": "q", "label_field": "answer",
                            "choices_field": "options"}},
        "teacher": {"model": tiny_lm}})
    version = run(cfg, test_pipeline=BeamTestPipeline())
    rows = {r["text"]: r for r in pq.read_table(version / "data").to_pylist()}
    assert rows["What do plants need?"]["label_probs"][2:] == [0.0, 0.0]
    assert rows["Which is a planet?"]["label_probs"][3] == 0.0
    assert rows["Which is a gas?"]["choices"] == ["ice", "steam", "rock", "wood"]
    assert rows["Which is a gas?"]["teacher_label"] in "ABCD"
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["counts"]["rejected"] == {"bad_choices": 1}


def test_choices_field_must_match_the_task_kind():
    import pytest
    from potstill.config.core import ConfigError

    with pytest.raises(ConfigError, match="choices_field"):
        parse_config({"dataset": "mc", "task": {"kind": "multiple_choice", "labels": ["A", "B"]},
                      "corpus": {"unlabeled": {"path": "u.jsonl"}}})
