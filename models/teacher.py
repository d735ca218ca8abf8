"""The teacher: a causal LM that scores every label of the task for each text.

`score_labels` returns, per text, the log-probability of each label's full token sequence as the
answer. Multi-token labels are scored exactly (chain rule over their tokens), not by their first
token. `label_stats` turns those into the contract's columns: the distribution normalised over
the label set, confidence, entropy, margin and the arg-max label.

Cost per batch: one forward over the per-row tokens on top of a cached shared prefix, plus, only
when some label has more than one token, one forward over the label continuations that reuses
the rows' cache. Rows are sorted by length inside each batch to keep padding small.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from models.prompts import LabelPrompt, label_prompt

log = logging.getLogger(__name__)


@dataclass
class _Encoded:
    ids: list[int]       # tokens after the shared prefix (or the whole prompt if not shared)
    shared: bool         # whether the row starts with the shared prefix tokens


def normalise(logprobs: np.ndarray) -> np.ndarray:
    """P(label | one of the labels): softmax of the label log-probabilities over the label set."""
    probs = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def label_stats(logprobs: np.ndarray, labels: list[str]) -> list[dict]:
    """Contract columns from per-label log-probabilities [n, L]."""
    probs = normalise(logprobs)
    top2 = np.sort(probs, axis=1)[:, ::-1][:, :2]
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1)
    best = probs.argmax(axis=1)
    return [{"label_probs": probs[i].astype(np.float32).tolist(),
             "teacher_label": labels[best[i]],
             "teacher_confidence": float(top2[i, 0]),
             "teacher_entropy": float(entropy[i]),
             "teacher_margin": float(top2[i, 0] - top2[i, 1])} for i in range(len(probs))]


class HFTeacher:
    """Transformers backend. Loaded once per worker; `score_labels` is thread-compatible but
    not meant to be called concurrently (torch already uses every thread it is given)."""

    def __init__(self, model_path: str, labels: list[str], instruction: str | None = None, *,
                 batch_size: int = 16, max_input_tokens: int = 512, dtype: str = "float32",
                 threads: int | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.labels = list(labels)
        self.batch_size = batch_size
        self.max_input_tokens = max_input_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=getattr(torch, dtype)).eval()
        self.prompt: LabelPrompt = label_prompt(self.tokenizer, instruction, self.labels)
        self.label_ids = [self._ids(self.prompt.answer_prefix + l) for l in self.labels]
        if any(not ids for ids in self.label_ids):
            raise ValueError("a label tokenises to nothing; check task.labels")
        self.prefix_ids = self._ids(self.prompt.prefix)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        with torch.inference_mode():
            out = self.model(torch.tensor([self.prefix_ids]), use_cache=True)
        self._prefix_cache = out.past_key_values

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def truncate(self, text: str) -> str:
        ids = self._ids(text)
        if len(ids) <= self.max_input_tokens:
            return text
        return self.tokenizer.decode(ids[: self.max_input_tokens])

    def encode(self, text: str) -> _Encoded:
        ids = self._ids(self.prompt.render(self.truncate(text)))
        n = len(self.prefix_ids)
        if n and ids[:n] == self.prefix_ids:
            return _Encoded(ids[n:], True)
        return _Encoded(ids, False)  # the text merged with the prefix's last token: no sharing

    @torch.inference_mode()
    def score_labels(self, texts: list[str]) -> np.ndarray:
        """Log P(label | prompt(text)) for every text and label, shape [len(texts), L]."""
        encoded = [self.encode(t) for t in texts]
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        for shared in (True, False):
            rows = sorted((i for i, e in enumerate(encoded) if e.shared == shared),
                          key=lambda i: len(encoded[i].ids))
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start: start + self.batch_size]
                out[chunk] = self._score_batch([encoded[i].ids for i in chunk], shared)
        return out

    def _score_batch(self, seqs: list[list[int]], shared: bool) -> np.ndarray:
        # Rows are left-padded after the shared prefix, so every row's answer position is the
        # last one and the LM head (a large share of a small model's compute: the vocabulary
        # projection) runs there only (`logits_to_keep=1`).
        b = len(seqs)
        prefix_len = len(self.prefix_ids) if shared else 0
        width = max(len(s) for s in seqs)
        ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((b, prefix_len + width), dtype=torch.long)
        mask[:, :prefix_len] = 1
        positions = torch.zeros((b, width), dtype=torch.long)
        for r, s in enumerate(seqs):
            pad = width - len(s)
            ids[r, pad:] = torch.tensor(s)
            mask[r, prefix_len + pad:] = 1
            positions[r, pad:] = prefix_len + torch.arange(len(s))
        cache = None
        if shared:
            cache = copy.deepcopy(self._prefix_cache)
            cache.batch_repeat_interleave(b)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        scores = torch.stack([first[:, ids_[0]] for ids_ in self.label_ids], dim=1)

        longest = max(len(x) for x in self.label_ids)
        if longest > 1:
            next_pos = torch.tensor([prefix_len + len(s) for s in seqs])
            scores += self._continuations(out.past_key_values, mask, next_pos, longest)
        return scores.double().numpy()

    def _continuations(self, cache, mask, next_pos, longest) -> torch.Tensor:
        """Log-prob of label tokens 2..k given token 1, for every (row, label) pair at once."""
        b, n_labels, k = mask.shape[0], len(self.labels), longest - 1
        cont = torch.full((n_labels, k), self.pad_id, dtype=torch.long)
        cont_mask = torch.zeros((n_labels, k), dtype=torch.long)
        for l, ids_ in enumerate(self.label_ids):
            cont[l, : len(ids_) - 1] = torch.tensor(ids_[:-1])
            cont_mask[l, : len(ids_) - 1] = 1
        cache.batch_repeat_interleave(n_labels)
        ids = cont.repeat(b, 1)
        full_mask = torch.cat([mask.repeat_interleave(n_labels, 0), cont_mask.repeat(b, 1)], dim=1)
        positions = next_pos.repeat_interleave(n_labels)[:, None] + torch.arange(k)[None, :]
        logits = self.model(input_ids=ids, attention_mask=full_mask, position_ids=positions,
                            past_key_values=cache, use_cache=False).logits.float()
        logp = torch.log_softmax(logits, dim=-1).view(b, n_labels, k, -1)
        total = torch.zeros((b, n_labels))
        for l, ids_ in enumerate(self.label_ids):
            for j, tok in enumerate(ids_[1:]):
                total[:, l] += logp[:, l, j, tok]
        return total
