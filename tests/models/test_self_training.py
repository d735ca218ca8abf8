"""Class-balanced self-training of the fallback teacher (models/quality/self_training.py): the
rounds fix what the gold rows alone get wrong, every class keeps its share, zero rounds is the
classifier as fitted, and the pool sample is the same rows whatever the files' order."""
import json
import logging

import numpy as np
import pytest

from potstill.models.quality import fallback, self_training
from potstill.rows.records import Bounds, Record, stable_id


def arc(rng, angle_deg, spread, n):
    a = np.deg2rad(angle_deg + rng.uniform(-spread, spread, n))
    return np.stack([np.cos(a), np.sin(a)], 1)


def tilted_gold_rows():
    """Two wide pool clusters (angles 0 and 180 degrees) and gold rows from their tilted edges:
    the gold rows' boundary cuts a third of each cluster off."""
    rng = np.random.default_rng(0)
    x_pool = np.concatenate([arc(rng, 0, 60, 100), arc(rng, 180, 60, 100)])
    x_seed = np.concatenate([arc(rng, 75, 5, 4), arc(rng, 255, 5, 4)])
    return x_seed, np.repeat([0, 1], 4), x_pool, np.repeat([0, 1], 100)


def test_rounds_fix_what_the_gold_rows_alone_get_wrong(caplog):
    x_seed, y_seed, x_pool, y_pool = tilted_gold_rows()
    first = fallback.from_arrays(x_seed, y_seed, ["a", "b"], 1.0, oof={"s0": (0.4, 0.6)})
    right = [(first.predict(x_pool).argmax(1) == y_pool).mean()]
    with caplog.at_level(logging.INFO, logger="potstill.models.quality.self_training"):
        final = self_training.self_train(first, x_seed, y_seed, x_pool, 2, {"pool_rows_sampled": 200})
    each = [clf for _, clf, _ in self_training.rounds(first, x_seed, y_seed, x_pool, 2)]
    right += [(clf.predict(x_pool).argmax(1) == y_pool).mean() for clf in each]
    assert right[0] < 0.75 and right[0] < right[1] < right[2] and right[2] > 0.8, right
    assert final.coef == each[-1].coef and final.intercept == each[-1].intercept  # the last round's
    assert final.self_training == {"rounds": 2, "pseudo_labelled": [68, 134], "pool_rows_sampled": 200}
    assert final.summary()["self_training"] == final.self_training
    assert final.oof == first.oof and final.c == first.c  # round 0's honest figures stay
    said = [r.getMessage() for r in caplog.records]
    assert any("round 1 of 2" in m and "68 pseudo-labelled" in m for m in said)
    assert any("round 2 of 2" in m and "134 pseudo-labelled" in m for m in said)


def test_each_class_keeps_its_share_of_the_pseudo_labels_its_surest_rows():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([1, 1, 1], size=50)
    probs[:, 2] *= 0.2  # the third class: rarely predicted, never surely
    probs /= probs.sum(1, keepdims=True)
    top = probs.argmax(1)
    for r, total in ((1, 2), (2, 2), (1, 3), (3, 3)):
        rows, labels = self_training.top_share(probs, r, total)
        assert list(rows) == sorted(rows) and np.array_equal(labels, top[rows])
        for c in range(3):
            predicted = np.flatnonzero(top == c)
            chosen = rows[labels == c]
            assert len(chosen) == int(np.ceil(len(predicted) * r / (total + 1)))
            left = np.setdiff1d(predicted, chosen)
            if len(chosen) and len(left):  # the surest of that class's rows
                assert probs[chosen, c].min() >= probs[left, c].max()


def test_zero_rounds_one_class_or_no_pool_is_the_classifier_as_fitted(caplog):
    x_seed, y_seed, x_pool, _ = tilted_gold_rows()
    first = fallback.from_arrays(x_seed, y_seed, ["a", "b"], 1.0)
    assert self_training.self_train(first, x_seed, y_seed, x_pool, 0) is first
    with caplog.at_level(logging.INFO, logger="potstill.models.quality.self_training"):
        empty = self_training.self_train(first, x_seed, y_seed, x_pool[:0], 2)
        one = fallback.from_arrays(x_seed[:4], y_seed[:4], ["a", "b"], 1.0)
        single = self_training.self_train(one, x_seed[:4], y_seed[:4], x_pool, 2)
    assert empty.coef == first.coef and empty.self_training == {"rounds": 0, "skipped": "no pool rows to pseudo-label"}
    assert single.classes == (0,) and single.self_training["skipped"] == "the gold rows hold one label"
    assert sum("self-training of the fallback teacher skipped" in r.getMessage() for r in caplog.records) == 2


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def test_the_pool_sample_is_the_same_rows_whatever_the_files_order(tmp_path):
    from potstill.config.core import Source

    texts = [f"pool row number {i}" for i in range(40)]
    write_jsonl(tmp_path / "one.jsonl", texts + texts[:5] + [""])  # duplicates, and an empty row
    (tmp_path / "split").mkdir()
    write_jsonl(tmp_path / "split" / "b.jsonl", texts[::-1][:25])
    write_jsonl(tmp_path / "split" / "c.jsonl", texts[::-1][25:])
    exclude = {stable_id(texts[0]), stable_id(texts[1])}  # seed and test rows

    def sample(path, cap, seed=0):
        return self_training.pool_sample(Source(path=str(path)), ["a", "b"], Bounds(1, 1000), cap,
                                         seed, exclude)
    whole = sample(tmp_path / "one.jsonl", 10)
    assert whole.unique_rows == 38 and whole.max_rows == 10 and len(whole.rows) == 10
    assert [r.text for r in sample(tmp_path / "split" / "*.jsonl", 10).rows] == [r.text for r in whole.rows]
    assert not {r.id for r in whole.rows} & exclude and len({r.id for r in whole.rows}) == 10
    assert {r.text for r in sample(tmp_path / "one.jsonl", 100).rows} == set(texts[2:])
    assert [r.text for r in sample(tmp_path / "one.jsonl", 10, seed=1).rows] != [r.text for r in whole.rows]


@pytest.fixture
def gold(tiny_bert):
    from potstill.config.core import parse_config

    def cfg(rounds):
        return parse_config({"dataset": "d", "task": {"labels": ["a", "b"]}, "corpus": {"unlabeled": {"path": "x"}},
                             "audit": {"gold_encoder": tiny_bert, "folds": 2, "self_training_rounds": rounds}})
    texts = [f"{w} {i}" for w in ("apple", "berry") for i in range(5)]
    seeds = [Record(f"s{i}", t, "seed", "ab"[i // 5], f"s:{i}") for i, t in enumerate(texts)]
    pool = self_training.PoolSample([Record(stable_id(t), t, "corpus", None, f"u:{i}") for i, t in
                                     enumerate(f"{w} pie {i}" for w in ("apple", "berry") for i in range(6))], 12, 20)
    return cfg, seeds, pool


def test_fit_with_zero_rounds_is_todays_classifier_and_with_rounds_labels_its_sample_once(gold):
    from sklearn.linear_model import LogisticRegression

    from potstill.transforms.classifier import classify

    cfg, seeds, pool = gold
    off = cfg(0)
    today = fallback.fit(off.audit, off.student, ["a", "b"], seeds)
    assert self_training.fit(off.audit, off.student, ["a", "b"], seeds, pool) == today
    assert self_training.fit(cfg(2).audit, off.student, ["a", "b"], seeds, None) == today
    assert "self_training" not in today.summary() and not today.pool_probs
    _, embed = fallback.gold_embedder(off.audit, off.student)
    x = embed([r.text for r in seeds])
    reference = LogisticRegression(C=today.c, max_iter=2000).fit(x, np.repeat([0, 1], 5))
    assert np.allclose(today.coef, reference.coef_) and np.allclose(today.intercept, reference.intercept_)

    on = cfg(2)
    st = self_training.fit(on.audit, on.student, ["a", "b"], seeds, pool)
    assert st.oof == today.oof and st.c == today.c
    assert st.self_training["rounds"] == 2 and st.self_training["pool_rows_sampled"] == 12
    assert st.self_training["pool_rows"] == 12 and st.self_training["max_rows"] == 20
    assert len(st.self_training["pseudo_labelled"]) == 2 and len(st.pool_probs) == 12

    def no_embedding(texts):
        raise AssertionError(f"embedded again: {texts}")
    out = classify(st, no_embedding, pool.rows[:3] + seeds[:1])  # the sample and a seed row: no pass
    assert np.allclose(out[0].value("label_probs"), st.predict(embed([pool.rows[0].text]))[0], atol=1e-5)
    assert np.allclose(out[3].value("label_probs"), st.oof["s0"])
