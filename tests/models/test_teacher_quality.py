"""Demonstration selection, calibration and the seed audit on crafted inputs."""
import numpy as np
import pytest

from potstill.models.teacher.calibration import Calibration, contextual_prior, fit_temperature
from potstill.models.teacher.demos import DemoSelector

TEXTS = ["good film", "great film", "bad film", "awful film", "fine film"]
GOLD = ["pos", "pos", "neg", "neg", "pos"]
ANSWERS = {"pos": "positive", "neg": "negative"}


def fake_embed(texts):
    """2-d embeddings: x = 'goodness', y = constant; cosine orders by goodness."""
    score = {"good": 1.0, "great": 0.9, "fine": 0.5, "bad": -0.9, "awful": -1.0}
    v = np.array([[score.get(t.split()[0], 0.0), 1.0] for t in texts])
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_similar_demos_are_balanced_nearest_last_and_never_the_text_itself():
    sel = DemoSelector(TEXTS, GOLD, ANSWERS, k=2, mode="similar", embed=fake_embed)
    demos = sel.select(["good film", "awful film"])
    assert [d.text for d in demos[0]] == ["bad film", "great film"]   # itself excluded
    assert [d.answer for d in demos[0]] == ["negative", "positive"]
    assert [d.text for d in demos[1]] == ["fine film", "bad film"]    # nearest last


def test_fixed_demos_are_shared_and_balanced():
    sel = DemoSelector(TEXTS, GOLD, ANSWERS, k=4, mode="fixed", seed=1)
    a, b = sel.select(["x", "y"])
    assert a == b and sorted(d.answer for d in a) == ["negative", "negative", "positive", "positive"]
    assert all(d.text != "good film" for d in sel.select(["good film"])[0])


def test_zero_k_gives_no_demos():
    assert DemoSelector(TEXTS, GOLD, ANSWERS, k=0, mode="fixed").select(["a"]) == [[]]


def test_contextual_calibration_removes_the_prompt_bias():
    # The prompt says "pos" 80% of the time on content-free inputs.
    prior = contextual_prior(np.log(np.array([[0.2, 0.8], [0.2, 0.8]])))
    cal = Calibration(prior)
    out = np.exp(cal.apply(np.log(np.array([[0.2, 0.8], [0.3, 0.7]]))))
    np.testing.assert_allclose(out[0], [0.5, 0.5], atol=1e-9)   # exactly the bias: neutral
    assert out[1, 0] > 0.5                                        # less "pos" than usual: "neg"


def test_temperature_fit_softens_an_overconfident_teacher():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 400)
    right = rng.random(400) < 0.7                     # 70% accurate ...
    pred = np.where(right, gold, 1 - gold)
    logits = np.where(np.eye(2)[pred] == 1, 0.0, -6.0)  # ... but ~99.7% confident
    t = fit_temperature(logits, gold)
    assert t > 3
    conf = np.exp(Calibration(None, t).apply(logits)).max(1).mean()
    assert conf == pytest.approx(0.7, abs=0.05)
    assert fit_temperature(logits[:0], gold[:0]) == 1.0


def test_audit_without_calibration_reports_identical_raw_and_calibrated(tiny_lm, tmp_path):
    import json

    from potstill.models.quality.audit import audit, build_teacher, read_seed
    from potstill.config.core import parse_config

    seed = tmp_path / "s.jsonl"
    seed.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in zip(TEXTS, GOLD)))
    cfg = parse_config({"dataset": "d", "task": {"labels": ["neg", "pos"]},
                        "corpus": {"unlabeled": {"path": str(seed)},
                                   "seed": {"path": str(seed), "label_field": "label"}},
                        "teacher": {"model": tiny_lm}})
    seeds = read_seed(cfg)
    report = audit(cfg.teacher, cfg.task.labels, build_teacher(cfg, tiny_lm, seeds), seeds)
    assert report["n"] == 5
    assert report["raw"]["ece"] == pytest.approx(report["calibrated"]["ece"])
    assert report["raw"]["accuracy"] == report["calibrated"]["accuracy"]
