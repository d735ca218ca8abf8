"""Sentence embeddings with an encoder (the packaged MiniLM by default): masked mean pooling."""
from __future__ import annotations

import numpy as np
import torch


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors the mask keeps (what all-MiniLM-L6-v2 was trained with)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class Embedder:
    def __init__(self, path: str, batch_size: int = 64, max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, use_safetensors=True).eval()
        self.batch_size, self.max_length = batch_size, max_length

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text, so a dot product is the cosine."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start: start + self.batch_size], padding=True,
                                 truncation=True, max_length=self.max_length, return_tensors="pt")
            pooled = mean_pool(self.model(**enc).last_hidden_state, enc["attention_mask"])
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size))
