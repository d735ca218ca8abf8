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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

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


CARD, METRICS_FILE, CONFIG_FILE = "README.md", "metrics.json", "potstill-config.yaml"
# Rows a comparison may carry in the card, said in words (any other --compare name is listed as is).
_KNOWN_ROWS = {
    "gold-only": "the same student trained on the gold seed rows only (no teacher labels): the "
                 "baseline distillation has to beat",
    "teacher": "the teacher LM itself, scored on the same test split",
}
# An absolute POSIX path inside a string: a slash that starts a token, at least two components.
_ABS_PATH = re.compile(r"(?<![\w:/.~-])/[^\s'\"`,;()\[\]{}<>]+/[^\s'\"`,;()\[\]{}<>]+")


@dataclass(frozen=True)
class ModelCard:
    """The model card and the files it links to, by name inside the model folder."""
    files: dict[str, str]

    @property
    def text(self) -> str:
        return self.files[CARD]


def _short_path(match: re.Match) -> str:
    path = Path(match.group(0).rstrip("."))
    tail = match.group(0)[len(match.group(0).rstrip(".")):]
    cwd = Path.cwd()
    if cwd != Path(cwd.anchor) and path.is_relative_to(cwd):
        return str(path.relative_to(cwd)) + tail
    return path.name + tail


def portable(value: Any) -> Any:
    """`value` (JSON-like) with every absolute path in its strings shortened: relative to the
    working folder when under it, else the file name. A published model folder names nothing
    of the machine it was trained on (a home folder, a user name, a scratch disk)."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if isinstance(value, str):
        return _ABS_PATH.sub(_short_path, value)
    return value


def _dataset_manifest(metrics: dict) -> dict:
    """The trained-on version's manifest (teacher, labelled_by), or {} when it cannot be read."""
    try:
        return json.loads((Path(str(metrics.get("dataset"))) / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def _teacher(config: dict, manifest: dict) -> str:
    by = manifest.get("labelled_by") or {}
    if by.get("teacher") == "gold_classifier":
        return (f"the gold rows' own classifier (logistic regression on {by.get('encoder')} "
                f"embeddings), not the LLM: {by.get('why')}")
    name = ((manifest.get("models") or {}).get("teacher") or {}).get("name")
    return str(name or (config.get("teacher") or {}).get("model") or "–")


def _summary(labels: list[str], metrics: dict, config: dict, manifest: dict,
             max_length: int) -> dict[str, Any]:
    s = config.get("student") or {}
    seed_only = metrics.get("train_on") == "seed"
    recipe = (metrics.get("recipe") or {}).get("recipe") or s.get("recipe")
    rows = {
        "labels": ", ".join(labels),
        "dataset": f"{config.get('dataset') or manifest.get('dataset') or '–'} "
                   f"{metrics.get('dataset_version') or '(gold seed rows of the config)'}",
        "trained on": f"{metrics.get('train_rows')} rows "
                      f"({'gold seed rows only' if seed_only else 'seed and teacher-labelled rows'})",
        "teacher": "none (gold labels only)" if seed_only else _teacher(config, manifest),
        "student encoder": f"{portable(str(s.get('model')))} ({s.get('encoder')}, "
                           f"at most {max_length} tokens)",
        "recipe": "–" if seed_only else f"{recipe}, temperature {s.get('temperature')}",
        "epochs": metrics.get("epochs"),
        "test rows": metrics.get("n"),
        "test accuracy": metrics.get("accuracy"),
        "test macro-F1": metrics.get("macro_f1"),
        "test ECE": metrics.get("ece"),
    }
    return rows


def _compared(comparisons: dict[str, dict]) -> dict[str, dict]:
    """The comparison rows that have numbers to show (a skipped baseline has none)."""
    return {name: m for name, m in comparisons.items()
            if isinstance(m, dict) and m.get("accuracy") is not None}


def model_card(labels: list[str], metrics: dict | None, comparisons: dict[str, dict],
               config: dict | None, max_length: int) -> ModelCard:
    """README.md of the exported model (a short summary, the test metrics beside exactly the
    comparisons given), with the two files it links to inside the same folder: metrics.json
    and the full resolved config as potstill-config.yaml, paths shortened by `portable`."""
    metrics, config = metrics or {}, config or {}
    manifest = _dataset_manifest(metrics)
    compared = _compared(comparisons)
    seed_only = metrics.get("train_on") == "seed"
    table = ["| model | accuracy | macro-F1 | n |", "|---|---|---|---|"]
    for name, m in {"this student": metrics, **compared}.items():
        table.append(f"| {name} | {_f(m.get('accuracy'))} | {_f(m.get('macro_f1'))} | "
                     f"{m.get('n', '–')} |")
    said = [f"- **{name}**: {_KNOWN_ROWS.get(name, 'metrics given at training (--compare)')}."
            for name in compared]
    front = {"library_name": "transformers", "pipeline_tag": "text-classification",
             "tags": ["potstill", "knowledge-distillation"], "license": "unknown"}
    how = ("trained by potstill on the gold seed rows alone" if seed_only else
           "distilled by potstill from a teacher's label distributions")
    text = "\n".join([
        "---", *[f"{k}: {json.dumps(v)}" for k, v in front.items()], "---", "",
        f"# Student classifier ({', '.join(labels)})", "",
        f"A text classifier {how}. It is a standard `BertForSequenceClassification` (one extra "
        "final layer computes the student's mean pooling and label head exactly): no custom code.",
        "", "```python", "from transformers import pipeline",
        'clf = pipeline("text-classification", model="THIS_FOLDER")',
        f'clf(["some text"], truncation=True)   # the student read at most {max_length} tokens',
        "```", "", "## Summary", "", _kv(_summary(labels, metrics, config, manifest, max_length)),
        "", "## Test split", "", *table, "",
        *(said + [""] if said else ["No other model was scored beside this one.", ""]),
        f"Per-class recall, ECE and the training record are in [{METRICS_FILE}]({METRICS_FILE}); "
        f"the full resolved config is in [{CONFIG_FILE}]({CONFIG_FILE}).", ""])
    record = {**portable(metrics), "compared": {name: {k: m.get(k) for k in ("accuracy", "macro_f1", "n")}
                                                for name, m in compared.items()}}
    return ModelCard({
        CARD: text,
        METRICS_FILE: json.dumps(record, indent=2) + "\n",
        CONFIG_FILE: yaml.safe_dump(portable(config), sort_keys=False, allow_unicode=True)})


def _kv(rows: dict) -> str:
    return "\n".join(["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |"
                                               for k, v in rows.items()])


def _cell(v) -> str:
    return _f(v) if isinstance(v, float) else "–" if v is None else str(v)


def _f(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "–"


def save_standard(model, out_dir: str | Path, max_length: int, card: ModelCard) -> Path:
    """Write the standard model, its tokenizer (truncating at `max_length`), the card and the
    files it links to."""
    out = Path(out_dir)
    standard = to_bert_classifier(model)  # raises ExportError before anything is written
    out.mkdir(parents=True, exist_ok=True)
    standard.save_pretrained(out)  # safetensors only (transformers 5)
    tok = copy.deepcopy(model.tokenizer)
    tok.model_max_length = max_length
    tok.save_pretrained(out)
    for name, text in card.files.items():
        (out / name).write_text(text, encoding="utf-8")
    return out
