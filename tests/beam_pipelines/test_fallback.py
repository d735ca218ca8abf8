"""A weak LLM teacher is replaced by the gold rows' own classifier (audit.on_weak_teacher:
fallback, the default): the job publishes, the pool costs no LLM call, and every place a user
looks says which teacher labelled the rows and why. Real DirectRunner, DuckDB and GE."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from potstill.beam_pipelines.pipeline import run
from potstill.config.core import parse_config

LABELS = ["negative", "positive"]
NEG = "bad awful dull poor boring weak flat slow thin stale grim tired".split()
POS = "good great fine superb lovely bright warm sharp fresh vivid rich bold".split()


def seed_rows():
    return ([{"text": f"the film was {w}", "label": "negative"} for w in NEG]
            + [{"text": f"the film was {w}", "label": "positive"} for w in POS])


def config(tmp_path, encoder, **audit):
    seed, unl = tmp_path / "seed.jsonl", tmp_path / "unl.jsonl"
    seed.write_text("".join(json.dumps(r) + "\n" for r in seed_rows()))
    pool = [f"a {w} {w} story, really {w}" for w in NEG + POS] + ["{not json"]
    unl.write_text("".join(json.dumps({"text": t}) + "\n" for t in pool[:-1]) + pool[-1] + "\n")
    return parse_config({
        "dataset": "d", "output_root": str(tmp_path / "out"), "task": {"labels": LABELS},
        "corpus": {"unlabeled": {"path": str(unl)}, "seed": {"path": str(seed)}},
        "teacher": {"threads": 1, "batch_size": 4},
        "student": {"threads": 1},
        "audit": {"search": {"few_shot_k": [0], "calibration": ["none"], "verbalizers": ["exact"]},
                  "folds": 3, "gold_encoder": encoder, **audit}})


def run_fallback(tmp_path, tiny_lm, encoder, **audit):
    cfg = config(tmp_path, encoder, **audit)
    cfg = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"model": tiny_lm})})
    version = run(cfg)
    return cfg, version, json.loads((version / "manifest.json").read_text())


def test_a_weak_teacher_falls_back_to_the_gold_rows_classifier_and_publishes(tmp_path, tiny_lm, tiny_bert,
                                                                              monkeypatch):
    from potstill.models.teacher.hf import HFTeacher

    pool_calls = []
    original = HFTeacher.score_encoded
    monkeypatch.setattr(HFTeacher, "score_encoded",
                        lambda self, enc: pool_calls.append(len(enc)) or original(self, enc))
    cfg, version, m = run_fallback(tmp_path, tiny_lm, tiny_bert, self_training_rounds=2,
                                   self_training_max_rows=20)
    gate = m["teacher_audit"]["gate"]
    assert gate["weak"] and gate["action"] == "fallback"
    by = m["labelled_by"]
    assert by["teacher"] == "gold_classifier" and by["encoder"] == tiny_bert
    assert by["seed_rows"] == 24 and by["c"] in cfg.student.probe_c and "weak" in by["why"]
    # two rounds of self-training on 20 of the 24 valid pool rows (the malformed one is no row)
    st = by["self_training"]
    assert st["rounds"] == 2 and st["pool_rows_sampled"] == 20 and st["pool_rows"] == 24
    assert st["max_rows"] == 20 and len(st["pseudo_labelled"]) == 2
    assert 0 < st["pseudo_labelled"][0] < st["pseudo_labelled"][1] <= 20
    # the audit asked the LLM about the seed rows; the pool cost it nothing
    assert sum(pool_calls) == m["teacher_audit"]["teacher_usage"]["calls"]
    assert m["teacher_usage"]["calls"] == 0
    totals = m["counts"]["totals"]
    assert totals["read"] == totals["published"] + totals["rejected"] + totals["filtered"]
    assert totals["published"] == 48 and m["counts"]["rejected"] == {"malformed_record": 1}
    assert m["validation"]["success"] is True
    data = pq.read_table(version / "data").to_pylist()
    probs = np.array([r["label_probs"] for r in data])
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert all(r["teacher_label"] == LABELS[int(np.argmax(r["label_probs"]))] for r in data)
    seeds = [r for r in data if r["source"] == "seed"]
    assert all(r["label"] == r["gold_label"] for r in seeds)  # gold rows keep their gold label
    card = (version / "README.md").read_text()
    assert "labelled by the gold rows' own classifier, not by the LLM teacher" in card
    assert "then self-trained in 2 rounds on 20 pool rows" in card
    assert "labelled by the gold rows&#x27; own classifier" in (version / "report.html").read_text()


def test_the_classifier_matches_sklearn_and_seed_rows_get_out_of_fold_probabilities(tiny_bert):
    from sklearn.linear_model import LogisticRegression

    from potstill.config.core import parse_config as parse
    from potstill.models.quality import fallback
    from potstill.rows.records import Record
    from potstill.transforms.classifier import classify

    cfg = parse({"dataset": "d", "task": {"labels": ["a", "b", "c"]}, "corpus": {"unlabeled": {"path": "x"}},
                 "audit": {"gold_encoder": tiny_bert, "folds": 2}})
    texts = [f"{w} {i}" for w in ("apple", "berry", "cherry") for i in range(4)]
    seeds = [Record(f"s{i}", t, "seed", "abc"[i // 4], f"s:{i}") for i, t in enumerate(texts)]
    clf = fallback.fit(cfg.audit, cfg.student, ["a", "b", "c"], seeds)
    _, embed = fallback.gold_embedder(cfg.audit, cfg.student)
    x = embed(texts)
    y = np.arange(12) // 4
    reference = LogisticRegression(C=clf.c, max_iter=2000).fit(x, y).predict_proba(x)
    assert np.allclose(clf.predict(x), reference, atol=1e-6)
    pool = [Record("p1", "apple 9", "corpus", None, "u:1"), seeds[5]]
    out = classify(clf, embed, pool)
    assert np.allclose(out[0].value("label_probs"), clf.predict(embed(["apple 9"]))[0], atol=1e-6)
    assert np.allclose(out[1].value("label_probs"), clf.oof["s5"], atol=1e-6)  # not the in-sample fit
    two = fallback.fit(cfg.audit, cfg.student, ["a", "b", "c"], seeds[:8])  # two classes seen
    assert np.allclose(two.predict(x)[:, 2], 0) and np.allclose(
        two.predict(x)[:, :2], LogisticRegression(C=two.c, max_iter=2000).fit(x[:8], y[:8]).predict_proba(x))


@pytest.mark.slow
def test_the_default_fallback_runs_on_the_packaged_mpnet(tmp_path, tiny_lm):
    """The default `audit.gold_encoder` (the packaged all-mpnet-base-v2) labels the pool."""
    _, version, m = run_fallback(tmp_path, tiny_lm, "all-mpnet-base-v2")
    assert m["labelled_by"]["encoder"] == "all-mpnet-base-v2" and m["teacher_usage"]["calls"] == 0
    data = pq.read_table(version / "data").to_pylist()
    pool = {r["text"]: r["teacher_label"] for r in data if r["source"] == "corpus"}
    right = sum(pool[f"a {w} {w} story, really {w}"] == "negative" for w in NEG) + \
        sum(pool[f"a {w} {w} story, really {w}"] == "positive" for w in POS)
    assert right >= 20, f"MPNet's gold classifier labelled {right} of 24 plain reviews right"


def collapsing_teacher(monkeypatch):
    """The LLM answers the first label for every row, however sure its gold rows say to be."""
    from potstill.models.teacher.hf import HFTeacher

    def one_answer(self, encoded):
        out = np.full((len(encoded), len(self.cand_ids)), -12.0)
        out[:, 0] = 0.0
        return out
    monkeypatch.setattr(HFTeacher, "score_encoded", one_answer)


def small_gold_config(tmp_path, tiny_lm, tiny_bert, action):
    cfg = config(tmp_path, tiny_bert, on_weak_teacher=action)
    seeds = seed_rows()[:3] + seed_rows()[12:15]  # 6 gold rows: below min_seed_rows, not judged
    (tmp_path / "seed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seeds))
    return cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"model": tiny_lm}),
                                  "validation": cfg.validation.model_copy(update={"label_share_min_rows": 20})})


def test_a_pool_labelled_all_one_class_falls_back_when_the_gate_could_not_judge(tmp_path, tiny_lm, tiny_bert,
                                                                                monkeypatch):
    collapsing_teacher(monkeypatch)
    version = run(small_gold_config(tmp_path, tiny_lm, tiny_bert, "fallback"))
    m = json.loads((version / "manifest.json").read_text())
    assert m["teacher_audit"]["gate"]["weak"] is None  # 6 gold rows: the gate did not judge
    collapse = m["teacher_audit"]["label_collapse"]
    assert collapse["label"] == "negative" and collapse["share"] == 1.0 and collapse["rows"] == 24
    assert m["labelled_by"]["teacher"] == "gold_classifier" and "label collapse" in m["labelled_by"]["why"]
    data = pq.read_table(version / "data").to_pylist()
    pool = [r for r in data if r["source"] == "corpus"]
    assert len(pool) == 24 and max(r["teacher_confidence"] for r in pool) < 0.999  # not the LLM's ~1.0
    totals = m["counts"]["totals"]
    assert totals["read"] == totals["published"] + totals["rejected"] + totals["filtered"]


def test_a_collapsed_pool_stops_before_publishing_when_told_to(tmp_path, tiny_lm, tiny_bert, monkeypatch):
    from potstill.models.quality.gate import WeakTeacher

    collapsing_teacher(monkeypatch)
    with pytest.raises(WeakTeacher, match=r"label collapse: the teacher labelled 24 of 24 pool rows 'negative'"):
        run(small_gold_config(tmp_path, tiny_lm, tiny_bert, "stop"))
    assert not (tmp_path / "out" / "d" / "v1").exists()
