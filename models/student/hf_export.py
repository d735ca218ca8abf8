"""The student as a standard `BertForSequenceClassification`: loads with `transformers` alone
(`AutoModelForSequenceClassification`, `pipeline("text-classification")`), no custom code, no
potstill, safetensors only.

Why not simply put our head on BERT's classifier: `BertForSequenceClassification` classifies
`tanh(W_p h_[CLS] + b_p)`, the [CLS] token through the pooler, while the student classifies the
MASKED MEAN of every token's last hidden state (what MiniLM was trained to produce). Exporting
the encoder with its pretrained pooler and our head as `classifier` therefore computes a
different function (measured in tests/models/test_hf_export.py: `naive_cls_export` disagrees
with the student's labels; no standard HF BERT-family class mean-pools with the attention mask).

The faithful export appends ONE encoder layer that computes the mean pooling and the head,
with standard BERT weights and nothing else changed:
  attention   W_q = 0, b_q = 0: every score is 0, so softmax is uniform over the unmasked
              tokens (padding gets -inf): each head's context is the masked mean of its value
              slice; W_v = I, b_v = 0, so the concatenated context is the pooled vector m.
  attn output W_o m + b_o = LAMBDA * (E (W_h m + b_h) + c): the student's logits z placed at
              coordinates (2k, 2k+1) as (+z_k, -z_k), and a constant c = (+C, -C) in the last
              two coordinates; everything sums to 0. The layer adds the [CLS] residual h and
              applies LayerNorm (gamma 1, beta 0): LN(LAMBDA (E z + c) + h) = s (E z + c) up
              to h / LAMBDA, with one positive per-row scale s = 1 / std ~ sqrt(d/2) / C
              (C >> |z| keeps s nearly constant).
  FFN         all zeros, so the output LayerNorm leaves that vector unchanged.
  pooler      row k: ALPHA * (x[2k] - x[2k+1]) / 2 = ALPHA s z_k, through tanh (monotonic, and
              nearly linear: ALPHA s0 = BETA makes its argument ~1e-3 z).
  classifier  (1 / BETA) I: logits ~ z * s / s0.
Each step is monotonic and the same for every label, so the arg-max label equals the student's
exactly (up to float rounding at ties); the logits agree to ~1e-4 relative (tests measure it).
The only cost is one extra layer's FLOPs (~1/6 more for MiniLM-L6).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

LAMBDA, C, BETA = 1.0e6, 1.0e3, 1.0e-3
FOLDER = "hf"  # inside a saved student's folder


class ExportError(ValueError):
    """The student's encoder has no faithful standard export (phrased for the user)."""


def _check(model) -> None:
    cfg = model.encoder.config
    if getattr(cfg, "model_type", None) != "bert":
        raise ExportError(f"standard export needs a BERT-type encoder, got {cfg.model_type!r}")
    if 2 * len(model.labels) + 2 > cfg.hidden_size:
        raise ExportError(f"{len(model.labels)} labels do not fit the pooling layer "
                          f"(hidden size {cfg.hidden_size})")


@torch.no_grad()
def to_bert_classifier(model, max_length: int | None = None):
    """A `BertForSequenceClassification` computing the student's forward (see the docstring)."""
    from transformers import BertConfig, BertForSequenceClassification

    _check(model)
    enc = model.encoder
    config = BertConfig.from_dict(copy.deepcopy(enc.config.to_dict()))
    n_old, d, k = enc.config.num_hidden_layers, enc.config.hidden_size, len(model.labels)
    config.num_hidden_layers = n_old + 1
    config.architectures = ["BertForSequenceClassification"]
    config.id2label = {i: label for i, label in enumerate(model.labels)}
    config.label2id = {label: i for i, label in enumerate(model.labels)}
    config.problem_type = "single_label_classification"
    out = BertForSequenceClassification(config).eval()
    missing, unexpected = out.bert.load_state_dict(enc.state_dict(), strict=False)
    if unexpected or any(not (m.startswith(f"encoder.layer.{n_old}.") or m.startswith("pooler."))
                         for m in missing):
        raise ExportError(f"encoder weights do not fit BertModel: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")

    layer = out.bert.encoder.layer[n_old]
    for p in layer.parameters():
        p.zero_()
    att = layer.attention
    att.self.value.weight.copy_(torch.eye(d))
    w_h, b_h = model.head.weight.float(), model.head.bias.float()
    w_o, b_o = torch.zeros(d, d), torch.zeros(d)
    w_o[0:2 * k:2], w_o[1:2 * k:2] = LAMBDA * w_h, -LAMBDA * w_h
    b_o[0:2 * k:2], b_o[1:2 * k:2] = LAMBDA * b_h, -LAMBDA * b_h
    b_o[d - 2], b_o[d - 1] = LAMBDA * C, -LAMBDA * C
    att.output.dense.weight.copy_(w_o)
    att.output.dense.bias.copy_(b_o)
    for norm in (att.output.LayerNorm, layer.output.LayerNorm):
        norm.weight.fill_(1.0)
        norm.bias.zero_()

    s0 = (d / 2) ** 0.5 / C  # the LayerNorm's scale when |z| << C
    alpha = BETA / s0
    pool = out.bert.pooler.dense
    pool.weight.zero_()
    pool.bias.zero_()
    idx = torch.arange(k)
    pool.weight[idx, 2 * idx], pool.weight[idx, 2 * idx + 1] = alpha / 2, -alpha / 2
    out.classifier.weight.zero_()
    out.classifier.bias.zero_()
    out.classifier.weight[idx, idx] = 1.0 / BETA
    return out


@torch.no_grad()
def naive_cls_export(model):
    """The unfaithful alternative, kept to measure it: the encoder with its own pooler and our
    head as `classifier`, i.e. the head applied to tanh(pooler([CLS])) instead of the mean."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig.from_dict(copy.deepcopy(model.encoder.config.to_dict()))
    config.num_labels = len(model.labels)
    out = BertForSequenceClassification(config).eval()
    out.bert.load_state_dict(model.encoder.state_dict(), strict=False)
    out.classifier.load_state_dict(model.head.state_dict())
    return out


def model_card(labels: list[str], metrics: dict | None, comparisons: dict[str, dict],
               config: dict | None, max_length: int) -> str:
    """README.md of the exported model: data version, test metrics beside the baselines, config."""
    metrics = metrics or {}
    rows = {"this student": metrics, **comparisons}
    lines = ["| model | accuracy | macro-F1 | n |", "|---|---|---|---|"]
    for name, m in rows.items():
        if m:
            lines.append(f"| {name} | {_f(m.get('accuracy'))} | {_f(m.get('macro_f1'))} | "
                         f"{m.get('n', '–')} |")
    front = {"library_name": "transformers", "pipeline_tag": "text-classification",
             "tags": ["potstill", "knowledge-distillation"], "license": "unknown"}
    return "\n".join([
        "---", *[f"{k}: {json.dumps(v)}" for k, v in front.items()], "---", "",
        f"# Student classifier ({', '.join(labels)})", "",
        "A MiniLM-style encoder distilled by potstill from a teacher LM's label distributions. "
        "It is a standard `BertForSequenceClassification` (one extra final layer computes the "
        "student's mean pooling and label head exactly): no custom code.", "",
        "```python", "from transformers import pipeline",
        'clf = pipeline("text-classification", model="THIS_FOLDER")',
        f'clf(["some text"], truncation=True)   # the student read at most {max_length} tokens',
        "```", "",
        f"Trained on dataset version `{metrics.get('dataset_version')}` ({metrics.get('dataset')}), "
        f"train_on={metrics.get('train_on')}, {metrics.get('train_rows')} rows, "
        f"{metrics.get('epochs')} epochs.", "",
        "## Test split", "", *lines, "",
        "Per-class recall and ECE are in `../metrics.json`. Gold-only is the same student "
        "trained on the gold seed rows only; the teacher is the LM that labelled the data.", "",
        "## Config", "", "```json", json.dumps(config or {}, indent=2), "```", ""])


def _f(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "–"


def save_standard(model, out_dir: str | Path, max_length: int, card: str) -> Path:
    """Write the standard model, its tokenizer (truncating at `max_length`) and card."""
    out = Path(out_dir)
    standard = to_bert_classifier(model)  # raises ExportError before anything is written
    out.mkdir(parents=True, exist_ok=True)
    standard.save_pretrained(out)  # safetensors only (transformers 5)
    tok = copy.deepcopy(model.tokenizer)
    tok.model_max_length = max_length
    tok.save_pretrained(out)
    (out / "README.md").write_text(card, encoding="utf-8")
    return out
