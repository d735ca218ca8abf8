"""The frozen-encoder student (models/student/head.py): the head's fit, its cross-validated penalty, and
the trainer's `student.encoder: frozen` path end to end on a tiny random BERT."""
import json

import numpy as np
import pytest
import torch

from potstill.models.student.head import choose_c, fit_linear
from potstill.models.student.losses import row_losses
from potstill.config.core import ConfigError, parse_config


def tensors(x, y, n_labels, seed_rows=0):
    """(x, one-hot targets, label_idx, is_seed, weight) as fit_linear takes them."""
    y = np.asarray(y)
    is_seed = np.arange(len(y)) < seed_rows
    return (torch.as_tensor(x, dtype=torch.float64),
            torch.as_tensor(np.eye(n_labels)[y], dtype=torch.float64), torch.as_tensor(y),
            torch.as_tensor(is_seed), torch.ones(len(y), dtype=torch.float64))


def test_the_head_separates_what_the_features_separate_and_minimises_its_objective():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = np.eye(3)[y] * 2 + rng.normal(0, 0.3, (60, 3))
    args = tensors(x, y, 3, seed_rows=10)
    w, b = fit_linear(*args, c=1.0, temperature=2.0, seed_weight=1.0)
    assert ((args[0] @ w.T + b).argmax(1).numpy() == y).all()

    def objective(w_, b_):
        losses = row_losses(args[0] @ w_.T + b_, args[1], args[2], args[3], 2.0, 1.0)
        return float((args[4] * losses).sum() + (w_ * w_).sum() / 2.0)
    best = objective(w, b)
    for scale in (0.9, 1.1):                          # a stationary point: nudges only cost
        assert objective(w * scale, b) > best
    assert objective(w, b + 0.05) > best - 1e-9


def test_cross_validation_penalises_noise_and_lets_signal_through():
    rng = np.random.default_rng(1)
    y = np.arange(80) % 2
    grid = [0.01, 1.0, 100.0]
    noise = tensors(rng.normal(0, 1, (80, 20)), y, 2)      # features that say nothing
    c_noise, cv = choose_c(*noise, grid, 5, 0, 1.0, 1.0)
    assert c_noise == 0.01 and set(cv) == {"0.01", "1.0", "100.0"}
    signal = np.c_[(2 * y - 1) * 1.5 + rng.normal(0, 0.5, 80), rng.normal(0, 1, (80, 3))]
    c_signal, _ = choose_c(*tensors(signal, y, 2), grid, 5, 0, 1.0, 1.0)
    assert c_signal > 0.01


def test_frozen_training_fits_only_the_head_and_the_saved_student_predicts_as_fitted(tmp_path, tiny_bert):
    from potstill.models.student.student import load_student, predict_proba
    from potstill.models.student.trainer import new_student, train
    from test_trainer import raw_config, toy_rows, write_version

    dataset = write_version(tmp_path / "v1")
    cfg = parse_config(raw_config(tmp_path, tiny_bert, encoder="frozen", head_c=[0.1, 10.0]))
    metrics = train(dataset, cfg, tmp_path / "out")
    head = metrics["head"]
    assert head["encoder"] == "frozen" and head["c"] in (0.1, 10.0) and set(head["cv_loss"]) == {"0.1", "10.0"}
    assert metrics["epochs"] == 0 and metrics["recipe"]["recipe"] == "trust"

    fresh, _ = new_student(cfg.student, cfg.task.labels)
    model, tokenizer = load_student(tmp_path / "out")
    for (name, a), b in zip(fresh.encoder.state_dict().items(), model.encoder.state_dict().values()):
        assert torch.equal(a, b), f"encoder weight {name} changed"
    assert not torch.equal(fresh.head.weight, model.head.weight)
    texts = [t for t, _ in toy_rows(10, start=100)]
    probs = predict_proba(model, tokenizer, texts, max_length=16)
    assert metrics["accuracy"] == pytest.approx(
        float(np.mean(probs.argmax(1) == [int(l == "positive") for _, l in toy_rows(10, start=100)])))
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["head"] == head


def test_frozen_encoder_refuses_in_loop_selection(tmp_path, tiny_bert):
    from test_trainer import raw_config

    with pytest.raises(ConfigError, match="selection=llkd"):
        parse_config(raw_config(tmp_path, tiny_bert, encoder="frozen", selection="llkd"))
    with pytest.raises(ConfigError, match="head_c"):
        parse_config(raw_config(tmp_path, tiny_bert, encoder="frozen", head_c=[0.0]))
