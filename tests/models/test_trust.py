"""The trust rule (models/quality/trust.py) on hand-worked seed rows, and the trainer recording it."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potstill.models.quality.trust import decide, lifts, mix

A, B, C = 0, 1, 2
GOLD = np.array([A] * 4 + [B] * 4 + [C] * 4)


def test_a_teacher_always_wrong_on_one_class_gets_no_trust_there():
    pred = np.array([B] * 4 + [B] * 4 + [C] * 4)        # every gold-A row called B
    lift, table = lifts(GOLD, pred, 3, strength=2.0)
    assert lift[A] == 0.0 and table[A]["claimed"] == 0
    # B: 4 right of 8 claims, shrunk: (4 + 2/3) / 10 = 0.4667; lift (0.4667 - 1/3) / (2/3) = 0.2
    assert table[B]["precision_shrunk"] == pytest.approx(0.4667, abs=1e-4)
    assert lift[B] == pytest.approx(0.2, abs=1e-4)
    # C: 4 of 4, shrunk (4 + 2/3) / 6 = 0.7778; lift 0.6667
    assert lift[C] == pytest.approx(2 / 3, abs=1e-4)


def test_claims_of_a_class_the_teacher_gets_wrong_follow_the_gold_classifier():
    pred = np.array([C] * 4 + [B] * 4 + [A] * 4)        # A and C swapped: never right on them
    lift_t, _ = lifts(GOLD, pred, 3, 2.0)
    assert lift_t[A] == 0 and lift_t[C] == 0 and lift_t[B] > 0.5
    lift_g = np.array([0.3, 0.3, 0.3])
    teacher = np.array([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.05, 0.9, 0.05]])
    gold_clf = np.array([[0.1, 0.1, 0.8], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    targets, tau = mix(teacher, gold_clf, lift_t, lift_g)
    assert tau[0] == 0 and tau[1] == 0                  # teacher says A / C: not trusted at all
    np.testing.assert_allclose(targets[:2], gold_clf[:2])
    assert tau[2] == pytest.approx(lift_t[B] / (lift_t[B] + 0.3))
    assert targets.sum(1) == pytest.approx(np.ones(3))


def test_no_information_on_either_side_is_an_even_mix():
    targets, tau = mix(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), np.zeros(2), np.zeros(2))
    assert tau[0] == 0.5 and targets[0].tolist() == [0.5, 0.5]


def test_decide_reports_what_and_why():
    rng = np.random.default_rng(0)
    centers = np.eye(3) * 3
    x = centers[GOLD] + rng.normal(0, 0.3, (12, 3))
    teacher = np.eye(3)[np.array([B] * 4 + [B] * 4 + [C] * 4)] * 0.9 + 0.1 / 3
    pool_x = centers[[A, B, C]] + rng.normal(0, 0.3, (3, 3))
    pool_teacher = np.eye(3)[[B, B, C]] * 0.9 + 0.1 / 3
    targets, report = decide(x, GOLD, teacher, pool_x, pool_teacher, ["a", "b", "c"], 2.0, 1.0, 4)
    assert report["per_class"]["a"]["teacher"]["lift"] == 0
    assert report["gold_classifier_cv"]["accuracy"] == 1.0
    assert targets[0].argmax() == A                      # the teacher's B on an A row is overruled
    assert targets[2].argmax() == C and "['a', 'b', 'c']" in report["why"]  # a perfect gold classifier


def test_trainer_records_the_recipe(tmp_path, tiny_bert, monkeypatch):
    from potstill.models.student.trainer import train
    from potstill.config.core import parse_config
    from test_trainer import raw_config, toy_rows

    monkeypatch.setenv("POTSTILL_CACHE", str(tmp_path / "cache"))
    rows = []
    for i, (text, label) in enumerate(toy_rows(24)):
        seed = i < 12
        wrong = label == "negative"                      # the teacher calls every negative positive
        p = [0.1, 0.9] if (label == "positive" or wrong) else [0.9, 0.1]
        rows.append({"text": text, "label": label if seed else ["negative", "positive"][int(np.argmax(p))],
                     "label_probs": p, "gold_label": label if seed else None,
                     "source": "seed" if seed else "corpus", "weight": 1.0})
    (tmp_path / "v1" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "v1" / "data" / "part-0.parquet")
    (tmp_path / "v1" / "manifest.json").write_text(json.dumps({"labels": ["negative", "positive"]}))
    cfg = parse_config(raw_config(tmp_path, tiny_bert, epochs=1))
    metrics = train(tmp_path / "v1", cfg, tmp_path / "out")
    recipe = metrics["recipe"]
    assert recipe["recipe"] == "trust" and recipe["seed_rows"] == 12 and recipe["pool_rows"] == 12
    assert recipe["per_class"]["positive"]["teacher"]["lift"] == 0     # its "positive" says nothing
    assert recipe["mean_teacher_weight"] <= 0.5
    extra = json.loads((tmp_path / "out" / "student.json").read_text())["extra"]
    assert extra["recipe"] == recipe
    seed_only = train(tmp_path / "v1", cfg, tmp_path / "out-seed", train_on="seed")
    assert "recipe" not in seed_only
    kd = train(tmp_path / "v1", cfg.model_copy(update={"student": cfg.student.model_copy(
        update={"recipe": "kd"})}), tmp_path / "out-kd")
    assert kd["recipe"]["recipe"] == "kd"


def test_superiority_follows_a_teacher_the_seeds_clearly_prefer():
    """The 1.5B teacher's measured case: right on 14 of 16 claims per class, against a gold-rows
    classifier right on 13 of 22 "negative" and 7 of 10 "positive" claims."""
    from potstill.models.quality.trust import lift_draws, superiority

    gold = np.array([0] * 16 + [1] * 16)
    teacher = np.array([0] * 14 + [1] * 2 + [0] * 2 + [1] * 14)
    clf = np.array([0] * 13 + [1] * 3 + [0] * 9 + [1] * 7)
    rng = np.random.default_rng(0)
    tau = superiority(lift_draws(gold, teacher, 2, 2.0, rng), lift_draws(gold, clf, 2, 2.0, rng))
    lt, _ = lifts(gold, teacher, 2, 2.0)
    lg, _ = lifts(gold, clf, 2, 2.0)
    ratio = lt[:, None] / (lt[:, None] + lg[None, :])
    assert (tau > 0.8).all() and (tau > ratio).all()


def test_superiority_gives_a_class_the_teacher_always_gets_wrong_little_weight():
    from potstill.models.quality.trust import lift_draws, superiority

    pred = np.array([B] * 4 + [A] * 4 + [C] * 4)         # "A" only ever said of B rows
    rng = np.random.default_rng(0)
    tau = superiority(lift_draws(GOLD, pred, 3, 2.0, rng), lift_draws(GOLD, GOLD, 3, 2.0, rng))
    assert (tau[A] < 0.1).all() and (tau[B] < 0.1).all()  # against a classifier right every time
    assert 0.3 < tau[C, C] < 0.7                           # both always right on C: a toss-up


def test_superiority_without_information_is_an_even_mix_and_repeatable():
    from potstill.models.quality.trust import lift_draws, superiority

    gold = np.array([0] * 6 + [1] * 6)
    always_zero = np.zeros(12, dtype=int)                  # says nothing about anything
    rng = np.random.default_rng(0)
    tau = superiority(lift_draws(gold, always_zero, 2, 2.0, rng), lift_draws(gold, always_zero, 2, 2.0, rng))
    np.testing.assert_allclose(np.diag(tau), 0.5, atol=0.02)  # the same evidence on both sides
    x = np.r_[np.eye(2)[gold] + 0.1, [[1.0, 0.1], [0.1, 1.0]]]
    teacher = np.array([[0.8, 0.2], [0.3, 0.7]])
    args = (x[:12], gold, np.eye(2)[always_zero], x[12:], teacher, ["a", "b"], 2.0, 1.0, 3)
    first, report = decide(*args)
    again, _ = decide(*args)
    np.testing.assert_array_equal(first, again)
    assert report["pooling"] == "superiority" and set(report["teacher_weight_by_claims"]) == {"a", "b"}


def test_the_gold_classifier_c_is_the_one_with_the_lowest_out_of_fold_log_loss():
    """Separable seed rows: a weak penalty (large C) gives confident, right probabilities and is
    picked over C = 1, whose distribution would flatten the targets; labels that are noise: the
    strongest penalty (smallest C) is picked."""
    from potstill.models.quality.trust import choose_c, out_of_fold

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 6)
    x = np.eye(4)[y] + rng.normal(0, 0.15, (24, 4))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    grid = [0.3, 1.0, 10.0, 100.0]
    c, oof, losses = choose_c(x, y, 4, grid, folds=3)
    assert c > 1.0 and losses[c] == min(losses.values()) and set(losses) == set(grid)
    np.testing.assert_allclose(oof, out_of_fold(x, y, 4, 3, c))
    assert oof.max(1).mean() > out_of_fold(x, y, 4, 3, 1.0).max(1).mean() + 0.2
    assert (oof.argmax(1) == y).all()

    noise = rng.permutation(y)
    c_noise, _, _ = choose_c(rng.normal(0, 1, (24, 4)), noise, 4, grid, folds=3)
    assert c_noise == 0.3
    assert choose_c(x, y, 4, 3.0, folds=3)[0] == 3.0    # one value: that one


def test_probe_c_takes_one_value_or_a_grid():
    from potstill.config.core import parse_config

    def student(**kw):
        return parse_config({"dataset": "d", "task": {"labels": ["a", "b"]}, "student": kw,
                             "corpus": {"unlabeled": {"path": "x"}}}).student
    assert student(probe_c=2.0).probe_c == [2.0] and len(student().probe_c) > 1
    with pytest.raises(ValueError, match="probe_c values must be > 0"):
        student(probe_c=[1.0, -1.0])
