"""Student signals (entropy, MC-dropout self-consistency), the TA read-out and the warm-up
student, on a tiny random BERT."""
import math

import numpy as np
import pytest
import torch

from potstill.models.student.signals import student_signals, train_student
from potstill.models.teacher.calibration import Calibration
from potstill.models.teacher.teacher_setup import TeacherSetup
from potstill.publish.contract import row as contract_row
from potstill.models.student.student import StudentClassifier, load_student, predict_proba
from potstill.config.core import parse_config
from potstill.rows.records import Record

LABELS = ["negative", "positive", "neutral"]
TEXTS = ["good", "a rather long and winding text about a film that was fine", "bad film", "meh"]


@pytest.fixture
def student(tiny_bert):
    torch.manual_seed(0)
    return StudentClassifier.from_pretrained_encoder(tiny_bert, LABELS)


def set_dropout(model, p):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def test_student_columns_match_its_own_distribution(student):
    student.eval()
    found = student_signals(student, TEXTS, LABELS, samples=4, batch_size=2)
    probs = predict_proba(student, student.tokenizer, TEXTS)
    for row, p in zip(found, probs):  # in input order, although batches are sorted by length
        assert row["student_label"] == LABELS[int(p.argmax())]
        assert row["student_confidence"] == pytest.approx(float(p.max()), abs=1e-5)
        assert row["student_entropy"] == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-5)
        assert 0 <= row["student_entropy"] <= math.log(len(LABELS)) + 1e-6
    assert not student.training  # mode restored


def test_consistency_is_one_without_dropout_and_drops_with_heavy_dropout(student):
    set_dropout(student, 0.0)
    assert {r["student_consistency"] for r in student_signals(student, TEXTS, LABELS, 8)} == {1.0}
    set_dropout(student, 0.9)
    noisy = [r["student_consistency"] for r in student_signals(student, TEXTS * 4, LABELS, 8)]
    assert min(noisy) < 1.0
    assert all(abs(c * 8 - round(c * 8)) < 1e-9 for c in noisy)  # a share of 8 predictions
    again = [r["student_consistency"] for r in student_signals(student, TEXTS * 4, LABELS, 8)]
    assert noisy == again  # seeded


def test_ta_probabilities_are_read_at_the_teacher_and_student_labels():
    values = {"student_label": "neutral", "student_confidence": 0.5, "student_entropy": 0.9,
              "student_consistency": 0.75, "ta_probs": (0.1, 0.6, 0.3), "selection_round": 2}
    record = Record("r", "text", "corpus", None, "u:1")
    row = contract_row(record.with_values(**values, teacher_label="positive"), LABELS)
    assert row["ta_teacher_confidence"] == 0.6 and row["ta_student_confidence"] == 0.3
    assert row["selection_round"] == 2 and row["student_consistency"] == 0.75
    bare = contract_row(record.with_values(student_label="neutral", teacher_label="positive"), LABELS)
    assert bare["ta_teacher_confidence"] is None and bare["ta_student_confidence"] is None


def config(tmp_path, tiny_bert, **extra):
    return parse_config({
        "dataset": "toy", "output_root": str(tmp_path),
        "task": {"labels": ["negative", "positive"]},
        "corpus": {"unlabeled": {"path": "u.jsonl"}, "seed": {"path": "s.jsonl"}},
        "student": {"model": tiny_bert, "min_steps": 60, "learning_rate": 1e-3, "batch_size": 4},
        **extra})


def test_ta_uses_the_teachers_prompt_zero_shot_and_uncalibrated(tmp_path, tiny_bert):
    cfg = config(tmp_path, tiny_bert, teacher={"few_shot": {"k": 2}, "calibration": "contextual",
                                               "verbalizers": {"positive": ["good"]}})
    teacher = TeacherSetup.from_config(cfg, "the-teacher", calibration=Calibration((-1.0, -0.5)))
    ta = teacher.for_assistant("some-ta")
    k = ta.few_shot.k if ta.few_shot else 0
    assert ta.model_path == "some-ta" and k == 0 and ta.calibration == Calibration() and not ta.demo_pool
    assert ta.backend == "hf" and ta.verbalizers == {"positive": ["good"]}


def test_warm_up_student_learns_seed_and_teacher_rows(tmp_path, tiny_bert):
    cfg = config(tmp_path, tiny_bert)
    seeds = [Record(f"s{i}", t, "seed", label, f"s:{i}") for i, (t, label) in enumerate(
        [("good good good", "positive"), ("bad bad bad", "negative")] * 4)]
    labelled = [("lovely lovely", [0.1, 0.9]), ("awful awful", [0.8, 0.2])] * 4
    folder = train_student(cfg.student, cfg.task.labels, seeds, labelled, tmp_path / "warm")
    model, tok = load_student(folder)
    assert model.labels == ["negative", "positive"]
    assert model.extra["warm_up"] == {"seed_rows": 8, "teacher_rows": 8}
    probs = predict_proba(model, tok, ["good good good", "bad bad bad", "lovely lovely", "awful awful"])
    assert probs.argmax(1).tolist() == [1, 0, 1, 0]
