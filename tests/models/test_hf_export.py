"""The student's standard export: transformers alone loads it and reproduces its labels."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from potstill.models.student import hf_export
from potstill.models.student.student import load_student
from test_trainer import LABELS, raw_config, toy_rows, write_version

SCRIPT = r"""
import json, sys
from pathlib import Path
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
import torch
torch.set_num_threads(1)
folder, rows_file = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in Path(rows_file).read_text().splitlines()]
texts = [r["text"] for r in rows]
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
with torch.inference_mode():  # batched, padded: the attention mask must do the pooling's work
    batch = tok(texts, truncation=True, padding=True, return_tensors="pt")
    logits = model(**batch).logits
batched = [model.config.id2label[int(i)] for i in logits.argmax(-1)]
clf = pipeline("text-classification", model=folder, tokenizer=folder, device="cpu")
piped = [r["label"] for r in clf(texts, truncation=True)]
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("potstill", "models", "transforms",
                                                              "beam_pipelines"))
print(json.dumps({"batched": batched, "pipeline": piped, "probs": torch.softmax(logits, -1).tolist(),
                  "leaked": leaked}))
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POTSTILL_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def trained(tmp_path, tiny_bert, capsys):
    from potstill.beam_pipelines.cli import main

    dataset = write_version(tmp_path / "v1")
    raw = raw_config(tmp_path, tiny_bert, n_test=40)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", "--dataset", str(dataset), "--config", str(tmp_path / "cfg.yaml"),
                 "--out", str(tmp_path / "student")]) == 0
    capsys.readouterr()
    return tmp_path


def test_standard_model_reproduces_evaluate_without_potstill(trained, capsys):
    from potstill.beam_pipelines.cli import main

    tmp = trained
    preds = tmp / "predictions.jsonl"
    assert main(["evaluate", str(tmp / "cfg.yaml"), "--model", str(tmp / "student"),
                 "--predictions", str(preds)]) == 0
    capsys.readouterr()
    rows = [json.loads(l) for l in preds.read_text().splitlines()]
    assert len(rows) == 40

    hf = tmp / "student" / hf_export.FOLDER
    files = sorted(p.name for p in hf.iterdir())
    assert "model.safetensors" in files and "README.md" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".py"))]
    config = json.loads((hf / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and "auto_map" not in config
    assert config["id2label"] == {"0": "negative", "1": "positive"}

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    (tmp / "script.py").write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(tmp / "script.py"), str(hf), str(preds)],
                         capture_output=True, text=True, cwd=tmp, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["leaked"] == []
    expected = [r["predicted"] for r in rows]
    assert got["batched"] == expected and got["pipeline"] == expected
    np.testing.assert_allclose(got["probs"], [r["probs"] for r in rows], atol=1e-3)
    card = (hf / "README.md").read_text()
    assert "v1" in card and "| this student |" in card and "pipeline_tag" in card


def test_export_equals_the_student_forward_and_the_cls_pooler_does_not(trained):
    model, tok = load_student(trained / "student")
    texts = [t for t, _ in toy_rows(60, start=300)] + ["good " * 30, "a", "the plot was not bad"]
    batch = tok(texts, truncation=True, max_length=16, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ours = model(**batch)
        exported = hf_export.to_bert_classifier(model)(**batch).logits
        naive = hf_export.naive_cls_export(model)(**batch).logits
    assert torch.equal(ours.argmax(-1), exported.argmax(-1))
    assert torch.allclose(exported, ours, rtol=1e-3, atol=1e-4), (exported - ours).abs().max()
    # The measurement behind the design: [CLS] through the pooler is a different function.
    assert not torch.allclose(naive, ours, atol=1e-2)


def test_the_model_folder_is_self_contained_and_names_no_machine_path(trained):
    hf = trained / "student" / hf_export.FOLDER
    card = (hf / "README.md").read_text()
    # every link points at a file inside the folder (the Hub serves nothing outside it)
    links = re.findall(r"\]\(([^)]+)\)", card)
    assert links and "../" not in card
    for link in links:
        assert not os.path.isabs(link) and (hf / link).is_file(), link
    # a short summary, the full config as a file beside it (not dumped into the card)
    for needle in ("| labels | negative, positive |", "| dataset | toy v1 |", "| teacher |",
                   "| student encoder |", "| recipe |", "| test accuracy |"):
        assert needle in card, needle
    assert len(card.splitlines()) < 80 and "output_root" not in card
    config = yaml.safe_load((hf / "potstill-config.yaml").read_text())
    assert config["task"]["labels"] == ["negative", "positive"]
    assert config["corpus"]["test"]["path"] == "test.jsonl"
    # no absolute path of the machine anywhere in the folder: card, metrics, config copy
    roots = {str(trained), os.path.realpath(trained)}
    for f in hf.iterdir():
        if f.suffix in (".md", ".json", ".yaml", ".txt"):
            text = f.read_text()
            assert not any(r in text for r in roots), f.name
    metrics = json.loads((hf / "metrics.json").read_text())
    assert metrics["dataset_version"] == "v1" and "per_class_recall" in metrics
    # the comparison rows the text speaks of are the ones in the table, and only those
    compared = metrics["compared"]
    for name in compared:
        assert f"| {name} |" in card and f"**{name}**" in card
    if "gold-only" not in compared:
        assert "gold-only" not in card.lower()


def test_the_card_claims_only_the_comparisons_it_shows():
    metrics = {"accuracy": 0.9, "macro_f1": 0.89, "n": 50, "train_on": "all", "train_rows": 120,
               "dataset": "/home/someone/secret-project/potstill-datasets/toy/v3",
               "dataset_version": "v3", "recipe": {"recipe": "kd", "why": "x"}}
    config = {"dataset": "toy", "task": {"labels": ["a", "b"]},
              "corpus": {"test": {"path": "/home/someone/secret-project/data/test.csv"}},
              "teacher": {"model": "qwen2.5-0.5b-instruct"},
              "student": {"model": "/home/someone/models/minilm", "encoder": "frozen",
                          "recipe": "trust", "temperature": 2.0}}
    comparisons = {"teacher": {"accuracy": 0.8, "macro_f1": 0.7, "n": 50},
                   "gold-only": {"path": "gold-only", "skipped": "no seed rows"}}
    card = hf_export.model_card(["a", "b"], metrics, comparisons, config, 64)
    text = card.text
    assert "| teacher | 0.8000 | 0.7000 | 50 |" in text and "**teacher**" in text
    assert "gold-only" not in text.lower()   # skipped: no row, so no word about it
    assert "| recipe | kd, temperature 2.0 |" in text and "| student encoder | minilm (frozen" in text
    assert "/home/someone" not in "".join(card.files.values())
    assert yaml.safe_load(card.files["potstill-config.yaml"])["corpus"]["test"]["path"] == "test.csv"
    assert json.loads(card.files["metrics.json"])["compared"] == {
        "teacher": {"accuracy": 0.8, "macro_f1": 0.7, "n": 50}}
    # a gold-only student says so, and claims no teacher
    seed = hf_export.model_card(["a", "b"], {**metrics, "train_on": "seed"}, {}, config, 64).text
    assert "gold seed rows alone" in seed and "| teacher | none (gold labels only) |" in seed
    assert "No other model was scored beside this one." in seed
