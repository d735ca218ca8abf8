"""student.input=text+rationale: the input format, and the trainer with test rationales computed
by a tiny random teacher at evaluation time (cached next to the student)."""
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potstill.models.student.rationale_input import CACHE_FILE, separator, with_rationale
from potstill.models.student.trainer import TrainerError, evaluate, train
from potstill.config.core import ConfigError, parse_config

LABELS = ["negative", "positive"]
ROWS = [("the film was good", "positive", "good"), ("the plot was awful", "negative", "awful"),
        ("the cast was great", "positive", "great"), ("the movie was boring", "negative", None)] * 4
TEST = [("a good film", "positive"), ("an awful plot", "negative"), ("great cast", "positive")]


def test_rationale_follows_the_students_own_separator(tiny_bert, tiny_lm):
    from transformers import AutoTokenizer

    bert = AutoTokenizer.from_pretrained(tiny_bert)
    (joined, alone) = with_rationale(["the film was good", "meh"], ["good", None], bert)
    assert joined == "the film was good [SEP] good" and alone == "meh"
    ids = bert(joined)["input_ids"]
    assert ids.count(bert.sep_token_id) == 2  # the boundary, and the end of the sequence
    assert separator(AutoTokenizer.from_pretrained(tiny_lm)) == " [SEP] "  # no sep token: literal


def write(tmp_path: Path, with_column=True) -> Path:
    rows = [{"text": t, "label": l, "label_probs": [0.2, 0.8] if l == "positive" else [0.8, 0.2],
             "gold_label": None, "source": "corpus", "weight": 1.0, **({"rationale": r} if with_column else {})}
            for t, l, r in ROWS]
    root = tmp_path / ("v1" if with_column else "v0")
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "part-0.parquet")
    (root / "manifest.json").write_text(json.dumps({"version": "v1", "labels": LABELS}))
    return root


def config(tmp_path, tiny_bert, tiny_lm, enabled=True):
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in TEST))
    return parse_config({
        "dataset": "toy", "task": {"labels": LABELS},
        "corpus": {"unlabeled": {"path": str(tmp_path / "u.jsonl")}, "test": {"path": str(test)}},
        "teacher": {"model": tiny_lm}, "saliency": {"enabled": enabled, "top_k": 1},
        "student": {"model": tiny_bert, "epochs": 2, "batch_size": 8, "max_length": 16, "threads": 1,
                    "min_steps": 0, "input": "text+rationale"}})


def test_trainer_reads_rationales_and_scores_both_inputs(tmp_path, tiny_bert, tiny_lm):
    cfg = config(tmp_path, tiny_bert, tiny_lm)
    metrics = train(write(tmp_path), cfg, tmp_path / "out")
    assert metrics["n"] == 3 and metrics["text_only"]["n"] == 3
    assert metrics["test_rationale_rows"] == 3 and metrics["test_rationale_seconds"] > 0
    cached = json.loads((tmp_path / "out" / CACHE_FILE).read_text())
    assert len(cached) == 3 and all(len(r.split()) == 1 for r in cached.values())
    again = evaluate(tmp_path / "out", cfg)  # reuses the cached test rationales
    assert again["accuracy"] == metrics["accuracy"]


def test_text_rationale_input_needs_the_column_and_the_stage(tmp_path, tiny_bert, tiny_lm):
    with pytest.raises(TrainerError, match="no rationale column"):
        train(write(tmp_path, with_column=False), config(tmp_path, tiny_bert, tiny_lm), tmp_path / "o")
    with pytest.raises(ConfigError, match="needs saliency.enabled"):
        config(tmp_path, tiny_bert, tiny_lm, enabled=False)
