"""The student's ONNX export: onnxruntime and the saved tokenizer alone (no potstill, no torch)
reproduce `potstill evaluate`'s probabilities on every test row."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from potstill.models.student import onnx_export
from test_trainer import raw_config, write_version

SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np, onnxruntime
from tokenizers import Tokenizer
folder, rows_file = Path(sys.argv[1]), sys.argv[2]
texts = [json.loads(l)["text"] for l in Path(rows_file).read_text().splitlines()]
meta = json.loads((folder / "labels.json").read_text())
tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
tok.enable_truncation(meta["max_length"])
tok.enable_padding()
enc = tok.encode_batch(texts)
session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
probs = session.run(None, {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                           "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)})[0]
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("potstill", "torch", "transformers"))
print(json.dumps({"labels": meta["labels"], "probs": probs.tolist(), "leaked": leaked}))
"""


def train_and_evaluate(tmp_path, student: str, capsys, **settings):
    from potstill.beam_pipelines.cli import main

    dataset = write_version(tmp_path / "v1")
    raw = raw_config(tmp_path, student, n_test=40, **settings)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", "--dataset", str(dataset), "--config", str(tmp_path / "cfg.yaml"),
                 "--out", str(tmp_path / "student")]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    preds = tmp_path / "predictions.jsonl"
    assert main(["evaluate", str(tmp_path / "cfg.yaml"), "--model", str(tmp_path / "student"),
                 "--predictions", str(preds)]) == 0
    capsys.readouterr()
    return metrics, preds


def run_without_potstill(tmp_path, folder, preds) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    (tmp_path / "script.py").write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(folder), str(preds)],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_onnx_graph_reproduces_evaluate_without_potstill(tmp_path, tiny_bert, capsys):
    metrics, preds = train_and_evaluate(tmp_path, tiny_bert, capsys)
    check = metrics["export"]["onnx"]
    assert check["folder"] == "onnx" and check["rows_checked"] == 40
    assert check["max_abs_diff"] <= onnx_export.TOLERANCE
    rows = [json.loads(l) for l in preds.read_text().splitlines()]
    got = run_without_potstill(tmp_path, tmp_path / "student" / "onnx", preds)
    assert got["leaked"] == [] and got["labels"] == ["negative", "positive"]
    np.testing.assert_allclose(got["probs"], [r["probs"] for r in rows], atol=1e-4)
    assert all(list(r["probs_by_label"]) == got["labels"] and list(r["probs_by_label"].values())
               == r["probs"] for r in rows)  # the label names travel with the numbers
    assert [got["labels"][int(np.argmax(p))] for p in got["probs"]] == [r["predicted"] for r in rows]


def test_a_graph_that_disagrees_is_not_shipped(tmp_path, tiny_bert):
    from potstill.models.student.student import StudentClassifier

    model = StudentClassifier.from_pretrained_encoder(tiny_bert, ["a", "b"])
    texts = ["one text", "another text"]
    found = onnx_export.export_checked(model, tmp_path, 16, texts, np.full((2, 2), 0.5) + [[0.3, -0.3]] * 2)
    assert found["folder"] is None and found["max_abs_diff"] > onnx_export.TOLERANCE
    assert not (tmp_path / "onnx").exists()


@pytest.mark.slow
def test_the_packaged_mpnet_student_exports_to_onnx(tmp_path, capsys):
    """The strongest packaged encoder (all-mpnet-base-v2), frozen, exports and agrees on every row."""
    metrics, preds = train_and_evaluate(tmp_path, "all-mpnet-base-v2", capsys, encoder="frozen")
    assert metrics["export"]["onnx"]["folder"] == "onnx"
    assert not (tmp_path / "student" / "hf").exists()  # no BERT classifier for MPNet, no empty folder
    rows = [json.loads(l) for l in preds.read_text().splitlines()]
    got = run_without_potstill(tmp_path, tmp_path / "student" / "onnx", preds)
    np.testing.assert_allclose(got["probs"], [r["probs"] for r in rows], atol=1e-4)
