"""The saliency stage: the Beam transform on a few scored rows, its failure path, and the whole job
with rationales on (a tiny random teacher)."""
import json

import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

import apache_beam as beam
from potstill.beam_pipelines.pipeline import run
from potstill.models.saliency.faithfulness import locate
from potstill.models.teacher.teacher_setup import TeacherSetup
from potstill.config.core import ConfigError, parse_config
from potstill.publish.contract import row, scored_schema
from potstill.rows.records import Record
from potstill.transforms.saliency import AddRationales, SaliencyModelHandler

LABELS = ["negative", "positive"]


def scored(text, teacher_label, gold=None):
    """A record the teacher has scored."""
    return Record(text[:8], text, "seed" if gold else "corpus", gold, f"t:{text[:8]}").with_values(
        label_probs=[0.5, 0.5], teacher_label=teacher_label, teacher_confidence=0.5,
        teacher_entropy=0.69, teacher_margin=0.0)


def handler(cfg, model_path):
    return SaliencyModelHandler(TeacherSetup.from_config(cfg, model_path), cfg.saliency)


ROWS = [scored("the movie was good", "positive"),
        scored("a bad film with terrible pacing and awful dialogue", "negative"),
        scored("good", "negative", gold="positive")]


def config(tmp_path, tiny_lm, **saliency):
    return parse_config({
        "dataset": "toy", "output_root": str(tmp_path / "out"), "task": {"labels": LABELS},
        "corpus": {"unlabeled": {"path": str(tmp_path / "u.jsonl")}},
        "teacher": {"model": tiny_lm},
        "saliency": {"enabled": True, "top_k": 2, "batch_size": 2, **saliency}})


def check_rows(expected_texts, k):
    def check(rows):
        rows = [row(r, LABELS) if isinstance(r, Record) else r for r in rows]
        assert sorted(r["text"] for r in rows) == sorted(expected_texts)
        for r in rows:
            words = r["rationale"].split()
            assert len(words) == min(k, len(r["text"].split())) == len(r["rationale_scores"])
            assert locate(r["text"].split(), words) is not None
            assert r["teacher_label"] in LABELS  # the scored row's columns are kept
    return check


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_stage_adds_rationales_to_scored_rows(tmp_path, tiny_lm, method):
    stage = handler(config(tmp_path, tiny_lm, method=method, ig_steps=4), tiny_lm)
    with BeamTestPipeline() as p:
        out = p | beam.Create(ROWS) | AddRationales(stage)
        assert_that(out, check_rows([r.text for r in ROWS], 2))


def test_gold_rationales_explain_the_gold_label(tmp_path, tiny_lm):
    from potstill.models.saliency.attribution import Explainer
    from potstill.models.quality.audit import build_teacher
    from potstill.transforms.saliency import explain_records

    cfg = config(tmp_path, tiny_lm, method="input_x_gradient")
    ex = Explainer(build_teacher(cfg, tiny_lm, []), "input_x_gradient", top_k=2)
    gold = explain_records(ex, ROWS[2:], "gold")
    teacher = explain_records(ex, ROWS[2:], "teacher")
    assert gold[0]["rationale"] == teacher[0]["rationale"] == "good"
    assert gold[0]["rationale_scores"] != teacher[0]["rationale_scores"]  # other label, other sign


def test_a_failed_batch_keeps_its_rows_without_rationale(tmp_path, tiny_lm):
    stage = handler(config(tmp_path, tiny_lm), tiny_lm)
    bad = scored("an unknown label", "neutral")  # not a task label: explain() raises
    with BeamTestPipeline() as p:
        out = p | beam.Create([bad]) | AddRationales(stage)

        def check(rows):
            rows = [row(r, LABELS) for r in rows]
            assert [(r["text"], r["rationale"], r["rationale_scores"]) for r in rows] == \
                [("an unknown label", None, None)]
        assert_that(out, check)


def test_a_vllm_teacher_is_explained_with_the_same_weights_in_torch(tmp_path, tiny_lm, caplog):
    from potstill.models.teacher.hf import HFTeacher

    cfg = parse_config({**config(tmp_path, tiny_lm).model_dump(mode="json"),
                        "teacher": {"model": tiny_lm, "backend": "vllm"}})
    with caplog.at_level("INFO", logger="potstill.transforms.saliency"):
        explainer = handler(cfg, tiny_lm).load_model()
    assert isinstance(explainer.teacher, HFTeacher)
    assert "no gradients" in caplog.text and "in torch" in caplog.text


def test_config_validation(tmp_path, tiny_lm):
    with pytest.raises(ConfigError, match="internal_batch_size"):
        config(tmp_path, tiny_lm, method="integrated_gradients", batch_size=8, internal_batch_size=4)
    with pytest.raises(ConfigError, match="saliency.method"):
        config(tmp_path, tiny_lm, method="lime")
    with pytest.raises(ConfigError, match="saliency.topk: unknown key"):
        config(tmp_path, tiny_lm, topk=3)


def test_job_publishes_rationales_and_the_deletion_test(tmp_path, tiny_lm):
    rows = [{"text": t} for t in ["the movie was good", "a bad film with terrible pacing",
                                  "the acting was great and the music too", "awful dialogue all along"]]
    (tmp_path / "u.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(tmp_path, tiny_lm, faithfulness_sample=3)
    version = run(cfg, test_pipeline=BeamTestPipeline())
    published = pq.read_table(version / "data")
    assert published.schema.equals(scored_schema(["rationale", "rationale_scores"]),
                                   check_metadata=False)
    check_rows([r["text"] for r in rows], 2)(published.to_pylist())
    entry = json.loads((version / "manifest.json").read_text())["saliency"]
    assert entry["rows_with_rationale"] == 4 and entry["rows_without_rationale"] == 0
    test = entry["deletion_test"]
    assert test["sample"] == 3 and test["n"] + test["skipped"] == 3
    assert test["n"] == 3 and 0 <= test["frac_topk_beats_random"] <= 1


def test_with_saliency_the_teacher_is_loaded_once_per_process(tmp_path, tiny_lm):
    """The audit, the teacher stage, the saliency stage and the faithfulness test share weights."""
    from potstill.models import loading

    (tmp_path / "u.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in
                                              ["the movie was good", "a bad film with terrible pacing"]))
    (tmp_path / "s.jsonl").write_text(json.dumps({"text": "good", "label": "positive"}) + "\n")
    cfg = parse_config({**config(tmp_path, tiny_lm, faithfulness_sample=2).model_dump(mode="json"),
                        "corpus": {"unlabeled": {"path": str(tmp_path / "u.jsonl")},
                                   "seed": {"path": str(tmp_path / "s.jsonl")}}})
    loading.release()
    key = ("causal_lm", tiny_lm, "float32")
    before = loading.LOADS[key]
    version = run(cfg, test_pipeline=BeamTestPipeline())
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["teacher_audit"]["n"] == 1 and manifest["saliency"]["deletion_test"]["sample"] == 2
    assert loading.LOADS[key] - before == 1
