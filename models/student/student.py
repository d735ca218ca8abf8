"""The student: a Hugging Face encoder, masked mean pooling, dropout and a linear label head.

Mean pooling is what all-MiniLM-L6-v2 was trained with (its 1_Pooling/ says so), so the
pretrained sentence embedding is the head's starting input, not the untrained [CLS] pooler.

A saved student is a folder:
  encoder/            the encoder and its tokenizer (`save_pretrained`, safetensors)
  head.safetensors    the label head (weight, bias)
  student.json        {"format", "labels", "dropout", "extra": {...}}
Only safetensors and JSON are read back: no pickle, no trust_remote_code.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer

FORMAT = "potstill-student/1"


class StudentClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, tokenizer, labels: list[str], dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer  # kept with the model so `save` writes a complete folder
        self.labels = list(labels)
        self.dropout_p = float(dropout)
        self.dropout = nn.Dropout(self.dropout_p)
        self.head = nn.Linear(encoder.config.hidden_size, len(self.labels))

    @classmethod
    def from_pretrained_encoder(cls, path: str | Path, labels: list[str],
                                dropout: float | None = None) -> "StudentClassifier":
        """A fresh head over a pretrained local encoder folder (weights must be safetensors)."""
        encoder = AutoModel.from_pretrained(str(path), use_safetensors=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
        if dropout is None:
            dropout = getattr(encoder.config, "hidden_dropout_prob", 0.1)
        return cls(encoder, tokenizer, labels, dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                **encoder_kwargs) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              **encoder_kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return self.head(self.dropout(pooled))

    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory / "encoder")
        self.tokenizer.save_pretrained(directory / "encoder")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()},
                  str(directory / "head.safetensors"))
        meta = {"format": FORMAT, "labels": self.labels, "dropout": self.dropout_p,
                "extra": extra or {}}
        (directory / "student.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return directory


def load_student(directory: str | Path) -> tuple[StudentClassifier, object]:
    """(model in eval mode, tokenizer) from a folder written by `StudentClassifier.save`.

    `student.json`'s "extra" is available as `model.extra`.
    """
    directory = Path(directory)
    meta_path = directory / "student.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory} is not a saved student (no student.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: unknown format {meta.get('format')!r}, expected {FORMAT!r}")
    model = StudentClassifier.from_pretrained_encoder(directory / "encoder", meta["labels"],
                                                      dropout=meta["dropout"])
    model.head.load_state_dict(load_file(str(directory / "head.safetensors")))
    model.extra = meta.get("extra", {})
    model.eval()
    return model, model.tokenizer


def predict_proba(model: StudentClassifier, tokenizer, texts: list[str], batch_size: int = 64,
                  max_length: int = 128, progress: str | None = None) -> np.ndarray:
    """Class probabilities (n, len(labels)) as float32, in the order of `texts`.

    Texts are batched by token length so little compute goes to padding; the model's
    train/eval mode is restored afterwards. `progress` names a rate-limited progress line
    (rows done/total, rate, ETA) on stderr.
    """
    from potstill.progress import Progress

    out = np.zeros((len(texts), len(model.labels)), dtype=np.float32)
    if not texts:
        return out
    was_training = model.training
    model.eval()
    shown = Progress(progress, len(texts)) if progress else None
    try:
        with torch.inference_mode():
            for idx, batch in length_batches(tokenizer, texts, batch_size, max_length):
                out[idx] = torch.softmax(model(**batch).float(), dim=-1).numpy()
                if shown:
                    shown.update(len(idx))
    finally:
        model.train(was_training)
    return out


def length_batches(tokenizer, texts, batch_size: int, max_length: int):
    """(row indices, padded tensors) for batches of `texts` sorted by token length, so little
    compute goes to padding; callers put results back with the indices."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield idx, tokenizer.pad({k: [encoded[k][i] for i in idx] for k in encoded}, return_tensors="pt")


def embeddings(model: StudentClassifier, texts: list[str], batch_size: int = 64,
               max_length: int = 128, normalise: bool = True) -> np.ndarray:
    """The encoder's mean-pooled embeddings (no head, no dropout), in text order; L2-normalised
    unless `normalise` is False (then exactly the head's input in `forward`)."""
    out = np.zeros((len(texts), model.encoder.config.hidden_size), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx, batch in length_batches(model.tokenizer, texts, batch_size, max_length):
                hidden = model.encoder(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = (torch.nn.functional.normalize(pooled, dim=-1) if normalise else pooled).numpy()
    finally:
        model.train(was_training)
    return out
