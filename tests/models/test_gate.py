"""The quality gate: a teacher no better than the majority class is stopped before it labels the
pool, with the numbers in plain words and exit code 2."""
import json

import numpy as np
import pytest
import yaml

from potstill.config.core import parse_config

LABELS = ["negative", "positive"]
# 10 negative, 2 positive: a teacher must beat 10/12 = 0.833 to be better than the majority.
SEEDS = [(f"the film was {w}", "negative") for w in
         ("bad", "awful", "dull", "poor", "boring", "weak", "flat", "slow", "thin", "stale")] + \
        [("the film was good", "positive"), ("the film was great", "positive")]


def raw_config(tmp_path, teacher, student, **audit):
    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in SEEDS))
    unl = tmp_path / "unl.jsonl"
    unl.write_text(json.dumps({"text": "a film"}) + "\n")
    return {"dataset": "d", "output_root": str(tmp_path / "out"), "task": {"labels": LABELS},
            "corpus": {"unlabeled": {"path": str(unl)}, "seed": {"path": str(seed)}},
            "teacher": {"model": teacher, "threads": 1},
            "student": {"model": student, "threads": 1},
            "audit": {"search": {"few_shot_k": [0]}, "on_weak_teacher": "stop",
                      "gold_encoder": student, **audit}}


def test_judge_names_the_numbers():
    from potstill.models.quality.gate import judge

    cfg = parse_config({"dataset": "d", "task": {"labels": ["ham", "spam"]},
                        "corpus": {"unlabeled": {"path": "x"}}, "audit": {"on_weak_teacher": "stop"}})
    gold = np.array([0] * 8 + [1] * 8)
    verdict = judge(cfg.audit, cfg.task.labels, gold, np.ones(16, dtype=int), gold_clf_pred=gold)
    assert verdict["weak"] and verdict["action"] == "stop"
    text = " ".join(verdict["reasons"])
    assert "accuracy 0.500" in text and "majority class 'ham' (0.500)" in text
    assert "recall on 'ham' is 0.00 (0 of 8 gold rows" in text
    assert "macro-F1 0.333 is below the 1.000" in text
    assert not judge(cfg.audit, cfg.task.labels, gold, gold)["weak"]


def test_gate_stops_a_teacher_below_the_majority_class(tiny_lm, tiny_bert, tmp_path):
    from potstill.models.quality.audit import read_seed, tune_and_gate
    from potstill.models.teacher.teacher_setup import TeacherSetup
    from potstill.models.quality.gate import WeakTeacher

    cfg = parse_config(raw_config(tmp_path, tiny_lm, tiny_bert))
    with pytest.raises(WeakTeacher, match=r"no better than always answering the majority class "
                                          r"'negative' \(0\.833\).*audit.on_weak_teacher=stop"):
        tune_and_gate(cfg, TeacherSetup.from_config(cfg, tiny_lm, read_seed(cfg)), read_seed(cfg))


def test_warn_and_continue_label_anyway_and_record_it(tiny_lm, tiny_bert, tmp_path, caplog):
    from potstill.models.quality.audit import read_seed, tune_and_gate
    from potstill.models.teacher.teacher_setup import TeacherSetup

    for action in ("warn", "continue"):
        cfg = parse_config(raw_config(tmp_path, tiny_lm, tiny_bert, on_weak_teacher=action))
        caplog.clear()
        _, report = tune_and_gate(cfg, TeacherSetup.from_config(cfg, tiny_lm, read_seed(cfg)), read_seed(cfg))
        assert report["gate"]["weak"] and report["gate"]["action"] == action
        assert report["gate"]["accuracy"] <= report["gate"]["majority_share"]
        assert ("looks weak" in caplog.text) == (action == "warn")
        assert "gold_classifier_cv" in report["gate"] and report["search"]["candidates"]


def test_too_few_gold_rows_are_not_judged(tiny_lm, tiny_bert, tmp_path):
    from potstill.models.quality.audit import read_seed, tune_and_gate
    from potstill.models.teacher.teacher_setup import TeacherSetup

    cfg = parse_config(raw_config(tmp_path, tiny_lm, tiny_bert, min_seed_rows=20))
    setup = TeacherSetup.from_config(cfg, tiny_lm, read_seed(cfg))
    tuned, report = tune_and_gate(cfg, setup, read_seed(cfg))
    assert tuned.verbalizers == setup.verbalizers and tuned.prompt_style == setup.prompt_style
    assert "search" not in report and report["gate"]["weak"] is None


def test_cli_exits_2_before_labelling_the_pool(tiny_lm, tiny_bert, tmp_path, capsys):
    from potstill.beam_pipelines.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw_config(tmp_path, tiny_lm, tiny_bert)))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "potstill: error: the teacher looks weak on the 12 gold seed rows" in err
    assert not (tmp_path / "out" / "d" / "v1").exists()


def _gate_cfg(**audit):
    return parse_config({"dataset": "d", "task": {"labels": ["ham", "spam"]},
                         "corpus": {"unlabeled": {"path": "x"}},
                         "audit": {"on_weak_teacher": "fallback", **audit}})


def test_a_gap_one_row_could_close_leaves_the_pool_to_the_llm():
    """32 gold rows, the classifier right on one row more than the teacher: past gold_margin,
    but not a difference 32 rows can resolve, so the teacher is not judged weak."""
    from potstill.models.quality.gate import judge

    cfg = _gate_cfg()
    gold = np.array([0] * 16 + [1] * 16)
    teacher = gold.copy()
    teacher[[0, 1, 2, 16, 17, 18, 19]] ^= 1           # 7 wrong
    clf = gold.copy()
    clf[[3, 4, 5, 20, 21, 22]] ^= 1                   # 6 wrong, on other rows
    verdict = judge(cfg.audit, cfg.task.labels, gold, teacher, gold_clf_pred=clf)
    g = verdict["gold_classifier_cv"]
    assert g["macro_f1"] - verdict["macro_f1"] > cfg.audit.gold_margin
    assert 0.4 < g["wins_in_resamples"] < cfg.audit.gold_confidence
    assert g["gap_interval_90"][0] < 0 < g["gap_interval_90"][1]
    assert not verdict["weak"] and verdict["reasons"] == []
    assert "too few rows to tell them apart" in verdict["undecided"]
    # the margin alone (gold_confidence 0) would have called it weak
    assert judge(_gate_cfg(gold_confidence=0).audit, cfg.task.labels, gold, teacher,
                 gold_clf_pred=clf)["weak"]


def test_a_gap_the_rows_resolve_falls_back():
    """The same 32 rows with the classifier right on 6 more rows than the teacher."""
    from potstill.models.quality.gate import judge

    cfg = _gate_cfg()
    gold = np.array([0] * 16 + [1] * 16)
    teacher = gold.copy()
    teacher[[0, 1, 2, 3, 4, 16, 17, 18, 19, 20]] ^= 1  # 10 wrong
    clf = gold.copy()
    clf[[5, 21, 22, 6]] ^= 1                           # 4 wrong
    verdict = judge(cfg.audit, cfg.task.labels, gold, teacher, gold_clf_pred=clf)
    assert verdict["weak"] and verdict["action"] == "fallback"
    assert verdict["gold_classifier_cv"]["wins_in_resamples"] >= 0.9
    assert "paired bootstrap resamples of the 32 rows" in verdict["reasons"][0]
    assert "undecided" not in verdict


def test_the_paired_bootstrap_measures_the_difference_alone():
    from potstill.models.metrics import classification_metrics, paired_bootstrap_macro_f1

    rng = np.random.default_rng(3)
    gold = rng.integers(0, 3, 60)
    a = np.where(rng.random(60) < 0.7, gold, rng.integers(0, 3, 60))
    same = paired_bootstrap_macro_f1(gold, a, a, 3, resamples=500, seed=1)
    assert np.all(same == 0)  # paired: the same predictions never differ on any resample
    b = gold.copy()
    gap = paired_bootstrap_macro_f1(gold, a, b, 3, resamples=500, seed=1)
    assert np.all(gap >= 0)   # b is right wherever a is
    point = classification_metrics(gold, b, ["x", "y", "z"])["macro_f1"] - \
        classification_metrics(gold, a, ["x", "y", "z"])["macro_f1"]
    assert abs(np.median(gap) - point) < 0.05
    again = paired_bootstrap_macro_f1(gold, a, b, 3, resamples=500, seed=1)
    assert np.array_equal(gap, again)
    with pytest.raises(ValueError, match="pred_b"):
        paired_bootstrap_macro_f1(gold, a, np.full(60, 5), 3)
