"""The student as one ONNX graph: encoder, masked mean pooling and label head, softmax out.

`OUT/onnx/` holds `model.onnx` (inputs `input_ids`, `attention_mask`, int64 [batch, tokens];
output `probs` float32 [batch, labels]), the tokenizer files (truncating at `student.max_length`)
and `labels.json` (the label order of `probs`, the max length). It loads without potstill or
torch, for any encoder architecture (MPNet included, which has no transformers classifier
potstill can export to):

    import json, onnxruntime, numpy as np
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file("onnx/tokenizer.json")
    tok.enable_truncation(json.load(open("onnx/labels.json"))["max_length"]); tok.enable_padding()
    enc = tok.encode_batch(texts)
    probs = onnxruntime.InferenceSession("onnx/model.onnx").run(None, {
        "input_ids": np.array([e.ids for e in enc]),
        "attention_mask": np.array([e.attention_mask for e in enc])})[0]

After export the trainer runs the graph with onnxruntime on every test row and records the
largest difference from potstill's own probabilities (`metrics.export.onnx`); a graph that
disagrees is removed rather than shipped.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import torch

FOLDER = "onnx"
TOLERANCE = 1e-4  # largest |probability difference| from potstill's own predictions


class _Probabilities(torch.nn.Module):
    def __init__(self, student):
        super().__init__()
        self.student = student

    def forward(self, input_ids, attention_mask):
        return torch.softmax(self.student(input_ids, attention_mask), dim=-1)


def export(model, out_dir: str | Path, max_length: int) -> Path:
    """Write OUT/onnx/ (the graph, the tokenizer, labels.json); returns the folder."""
    out = Path(out_dir) / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    tok = copy.deepcopy(model.tokenizer)
    tok.model_max_length = max_length
    tok.save_pretrained(out)
    sample = tok(["a short text", "a somewhat longer text to pad the batch"], padding=True,
                 truncation=True, max_length=max_length, return_tensors="pt")
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            # the tracer's notes on shapes it records as constants (the attention mask's padding
            # and causal checks): the graph is checked on real rows of every length afterwards
            warnings.simplefilter("ignore")
            torch.onnx.export(_Probabilities(model), (sample["input_ids"], sample["attention_mask"]),
                              str(out / "model.onnx"), input_names=["input_ids", "attention_mask"],
                              output_names=["probs"], opset_version=17, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                            "attention_mask": {0: "batch", 1: "tokens"},
                                            "probs": {0: "batch"}})
    finally:
        model.train(was_training)
    (out / "labels.json").write_text(json.dumps({"labels": list(model.labels),
                                                 "max_length": max_length}, indent=2) + "\n")
    return out


def predict(folder: str | Path, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Probabilities from the exported folder alone: onnxruntime and the saved tokenizer."""
    import onnxruntime
    from transformers import AutoTokenizer

    folder = Path(folder)
    max_length = json.loads((folder / "labels.json").read_text())["max_length"]
    tok = AutoTokenizer.from_pretrained(str(folder))
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    out = []
    for lo in range(0, len(texts), batch_size):
        enc = tok(texts[lo:lo + batch_size], padding=True, truncation=True, max_length=max_length,
                  return_tensors="np")
        out.append(session.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                                      "attention_mask": enc["attention_mask"].astype(np.int64)})[0])
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def export_checked(model, out_dir: str | Path, max_length: int, texts: list[str],
                   reference: np.ndarray) -> dict:
    """Export, then compare onnxruntime's probabilities on `texts` with `reference` (potstill's
    own, same rows); a graph off by more than TOLERANCE is removed. Returns what was found."""
    import shutil

    folder = export(model, out_dir, max_length)
    diff = float(np.abs(predict(folder, texts) - reference).max()) if len(texts) else 0.0
    agree = bool(diff <= TOLERANCE)
    if not agree:
        shutil.rmtree(folder, ignore_errors=True)
    return {"folder": FOLDER if agree else None, "rows_checked": len(texts),
            "max_abs_diff": diff, "tolerance": TOLERANCE}
