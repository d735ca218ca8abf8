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
import functools
import logging
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from potstill.models.teacher.prompts import Demo, LabelPrompt, label_prompt

log = logging.getLogger(__name__)
PREFIX_BYTES = 4  # the most a pre-tokenizer adds before a text's first word: a space, a "\u2581" mark


@dataclass
class _Encoded:
    ids: list[int]       # tokens after the shared part named by `shared` (or the whole prompt)
    shared: str | None   # "prefix", "head", or None when the row does not start with either


def normalise(logprobs: np.ndarray) -> np.ndarray:
    """P(label | one of the labels): softmax of the label log-probabilities over the label set."""
    probs = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def label_stats(logprobs: np.ndarray, labels: list[str]) -> list[dict]:
    """Contract columns from per-label log-probabilities [n, L]."""
    probs = normalise(logprobs)
    top2 = np.sort(probs, axis=1)[:, ::-1][:, :2]
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1)
    columns = zip(probs.astype(np.float32).tolist(), probs.argmax(axis=1).tolist(), top2[:, 0].tolist(),
                  entropy.tolist(), (top2[:, 0] - top2[:, 1]).tolist())  # whole arrays to Python at once
    return [{"label_probs": p, "teacher_label": labels[best], "teacher_confidence": confidence,
             "teacher_entropy": h, "teacher_margin": margin}
            for p, best, confidence, h, margin in columns]


class TeacherBase:
    """What every backend shares, so that they all score exactly the same tokens: the
    tokenizer, the prompt and its shared parts, the candidate answers' token ids, and how
    candidate scores become label scores. A backend implements `score_candidates`."""

    def __init__(self, model_path: str, labels: list[str], instruction: str | None = None, *,
                 style: str = "labels", verbalizers: Mapping[str, Sequence[str]] | None = None,
                 max_input_tokens: int = 512, demo_max_tokens: int = 128):
        from transformers import AutoTokenizer

        self.labels = list(labels)
        self.instruction = instruction
        self.max_input_tokens = max_input_tokens
        self.demo_max_tokens = demo_max_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self._demo_texts: dict[tuple[str, int], str] = {}  # `_demo_text`'s, per (text, limit)
        self._set_prompt(style, verbalizers)

    def variant(self, style: str = "labels",
                verbalizers: Mapping[str, Sequence[str]] | None = None) -> "TeacherBase":
        """The same loaded model behind another prompt style or verbalizer (the setup search
        tries several without loading the weights again)."""
        other = copy.copy(self)
        other._set_prompt(style, verbalizers)
        return other

    def _set_prompt(self, style: str, verbalizers: Mapping[str, Sequence[str]] | None) -> None:
        self.style = style
        self.prompt: LabelPrompt = label_prompt(self.tokenizer, self.instruction, self.labels,
                                                style, verbalizers)
        self._caches = {}  # key/value caches of the shared prompt parts (HF backend)
        verb = self.prompt.verbalizer
        # Every surface form the model may answer, and the label each one stands for.
        self.cand_label = np.array([i for i, _ in verb.candidates])
        self.cand_ids = [self._ids(self.prompt.answer_prefix + s) for _, s in verb.candidates]
        if any(not ids for ids in self.cand_ids):
            raise ValueError("a label or verbalizer tokenises to nothing; check task.labels")
        # The candidates' token trie: for each answer prefix, the next tokens to score after it
        # and (candidate, token) pairs to add them to (backends that ask a server for the next
        # token's log-probs send one request per node).
        self.trie: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        for c, ids in enumerate(self.cand_ids):
            for j, tok in enumerate(ids):
                self.trie.setdefault(tuple(ids[:j]), []).append((c, tok))
        # The canonical answer per label (what attribution explains).
        self.label_ids = [self._ids(self.prompt.answer_prefix + a) for a in verb.answers]
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self._shared_ids = {"prefix": self._ids(self.prompt.prefix),
                            "head": self._ids(self.prompt.head)}

    @property
    def prefix_ids(self) -> list[int]:
        return self._shared_ids["prefix"]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def truncate(self, text: str, max_tokens: int | None = None) -> str:
        limit = max_tokens or self.max_input_tokens
        ids = self._ids(text)
        if len(ids) <= limit:
            return text
        return self.tokenizer.decode(ids[:limit])

    def _demo_text(self, text: str) -> str:
        """A demonstration's text cut to `demo_max_tokens`, tokenised once: the same few gold
        rows recur in every row's prompt."""
        key = (text, self.demo_max_tokens)
        if key not in self._demo_texts:
            self._demo_texts[key] = self.truncate(text, self.demo_max_tokens)
        return self._demo_texts[key]

    def encode(self, text: str, demos: Sequence[Demo] = ()) -> _Encoded:
        return self.encode_many([text], [demos])[0]

    def encode_many(self, texts: Sequence[str],
                    demos: Sequence[Sequence[Demo]] | None = None) -> list[_Encoded]:
        """`encode` for many rows: the prompts tokenised in one call (the same ids as one at a
        time, for a fraction of the tokenizer's per-call cost), each text cut first where it may
        be longer than `max_input_tokens` (`_fits`)."""
        if not texts:
            return []
        demos = demos or [()] * len(texts)
        limit, cut = self.max_input_tokens, list(texts)
        longer = [i for i, text in enumerate(texts) if not self._fits(text, limit)]
        for i, ids in zip(longer, self._ids_many([texts[i] for i in longer])):
            if len(ids) > limit:  # `truncate`, for each
                cut[i] = self.tokenizer.decode(ids[:limit])
        prompts = [self.prompt.render(text, [Demo(self._demo_text(d.text), d.answer) for d in row])
                   for text, row in zip(cut, demos)]
        return [self._encoded(ids, bool(row)) for ids, row in zip(self._ids_many(prompts), demos)]

    def _fits(self, text: str, limit: int) -> bool:
        """Whether `text` surely tokenises to at most `limit` tokens, without tokenising it
        (`_most_tokens`). False (tokenise it to know) for a tokenizer that `_bounded` found
        breaking that bound."""
        return self._bounded and self._most_tokens(text) <= limit

    def _most_tokens(self, text: str) -> int:
        """The most tokens `text` can give: every token covers at least one byte of the
        normalised text, and a pre-tokenizer adds at most a prefix (a space, a "▁" mark) of
        `PREFIX_BYTES`."""
        normalizer = self.tokenizer.backend_tokenizer.normalizer
        normalised = normalizer.normalize_str(text) if normalizer is not None else text
        return len(normalised.encode("utf-8")) + PREFIX_BYTES

    @functools.cached_property
    def _bounded(self) -> bool:
        """Whether this is a fast tokenizer whose token counts stay within `_most_tokens` on
        probes of spaces, line breaks, digits, punctuation and multi-byte text."""
        if getattr(self.tokenizer, "backend_tokenizer", None) is None:
            return False
        probes = [" a" * 40, "\n\n x" * 20, "1 2 3 4 5 6 7 8 9 0 " * 4, "!?.,;:-()[]{}'\"" * 3,
                  "été über фильм 映画 😀 ﬁ ㍿", "x"]
        return all(len(ids) <= self._most_tokens(t) for t, ids in zip(probes, self._ids_many(probes)))

    def _ids_many(self, texts: Sequence[str]) -> list[list[int]]:
        """The token ids of each text, as `tokenizer(texts, add_special_tokens=False)` gives
        them; straight from the Rust tokenizer without offsets when it is set as that call sets
        it (no truncation, no padding, special tokens as configured)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if (backend is not None and backend.truncation is None and backend.padding is None
                and backend.encode_special_tokens == bool(getattr(self.tokenizer, "split_special_tokens", False))
                and hasattr(backend, "encode_batch_fast")):
            return [e.ids for e in backend.encode_batch_fast(list(texts), add_special_tokens=False)]
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def _encoded(self, ids: list[int], has_demos: bool) -> _Encoded:
        kind = "head" if has_demos else "prefix"
        shared = self._shared_ids[kind]
        if shared and ids[: len(shared)] == shared:
            return _Encoded(ids[len(shared):], kind)
        return _Encoded(ids, None)  # the row merged with the shared part's last token

    def prompt_ids(self, encoded: _Encoded) -> list[int]:
        """The whole prompt's token ids: the shared part, if any, then the row's own."""
        return (self._shared_ids[encoded.shared] if encoded.shared else []) + encoded.ids

    def score_candidates(self, texts: Sequence[str],
                         demos: Sequence[Sequence[Demo]] | None = None) -> np.ndarray:
        """Log P(answer | prompt(text)) for every text and surface form: [len(texts), C]."""
        demos = demos or [()] * len(texts)
        return self.score_encoded([self.encode(t, d) for t, d in zip(texts, demos)])

    def score_encoded(self, encoded: Sequence[_Encoded]) -> np.ndarray:
        """`score_candidates` for prompts already encoded: what a backend implements."""
        raise NotImplementedError

    def score_labels(self, texts: Sequence[str],
                     demos: Sequence[Sequence[Demo]] | None = None) -> np.ndarray:
        """Log P(label | prompt(text)) for every text and label, [len(texts), L]."""
        cand = torch.from_numpy(self.score_candidates(texts, demos))
        return self.label_scores(cand).numpy()

    def label_scores(self, cand: torch.Tensor) -> torch.Tensor:
        """[n, C] candidate log-probs -> [n, L] label log-probs: the probabilities of a label's
        surface forms are summed (log-sum-exp). Differentiable (attribution uses it)."""
        owner = torch.as_tensor(self.cand_label)
        return torch.stack([torch.logsumexp(cand[:, owner == label], dim=1)
                            for label in range(len(self.labels))], dim=1)

    def close(self) -> None:
        """Release what the backend holds outside this object (engines, processes)."""


@dataclass
class Batch:
    """Rows left-padded after a shared prompt part, so every row's answer position is the last."""
    ids: torch.Tensor | None   # [b, width] (None when the caller passes embeddings)
    mask: torch.Tensor         # [b, prefix + width]
    positions: torch.Tensor    # [b, width]
    next_pos: torch.Tensor     # [b]: where each row's answer starts
    shared: str | None


class HFTeacher(TeacherBase):
    """Transformers backend. The weights are shared by every stage of the process
    (models/loading.py). `candidate_logprobs` is the one forward that label scoring,
    attribution (from embeddings, with gradients) and the faithfulness test all run."""

    def __init__(self, model_path: str, labels: list[str], instruction: str | None = None, *,
                 style: str = "labels", verbalizers: Mapping[str, Sequence[str]] | None = None,
                 batch_size: int = 8, max_input_tokens: int = 512, demo_max_tokens: int = 128,
                 dtype: str = "float32", threads: int | None = None):
        from potstill.models.loading import causal_lm

        torch.set_num_threads(threads or os.cpu_count() or 1)
        super().__init__(model_path, labels, instruction, style=style, verbalizers=verbalizers,
                         max_input_tokens=max_input_tokens, demo_max_tokens=demo_max_tokens)
        self.batch_size = batch_size
        self.model = causal_lm(model_path, dtype)
        self._caches = {}

    def shared_cache(self, kind: str):
        """The key/value cache of a shared prompt part, computed on first use. Computed under
        no_grad, not inference_mode, so that attribution's autograd graphs may read it."""
        if kind not in self._caches:
            with torch.inference_mode(False), torch.no_grad():
                out = self.model(torch.tensor([self._shared_ids[kind]]), use_cache=True)
            self._caches[kind] = out.past_key_values
        return self._caches[kind]

    @torch.inference_mode()
    def score_encoded(self, encoded: Sequence[_Encoded]) -> np.ndarray:
        """Log P(answer | prompt) for every encoded prompt and surface form: [n, C]. Rows are
        sorted by length and cut into `batch_size` forwards, so the answer for a given list of
        prompts does not depend on its order."""
        out = np.zeros((len(encoded), len(self.cand_ids)), dtype=np.float64)
        for kind in ("prefix", "head", None):
            rows = sorted((i for i, e in enumerate(encoded) if e.shared == kind),
                          key=lambda i: (len(encoded[i].ids), encoded[i].ids))
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start: start + self.batch_size]
                batch = self.pad([encoded[i].ids for i in chunk], kind)
                out[chunk] = self.candidate_logprobs(batch).double().numpy()
        return out

    def pad(self, seqs: list[list[int]], shared: str | None) -> Batch:
        b = len(seqs)
        prefix_len = len(self._shared_ids[shared]) if shared else 0
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
        next_pos = torch.tensor([prefix_len + len(s) for s in seqs])
        return Batch(ids, mask, positions, next_pos, shared)

    def candidate_logprobs(self, batch: Batch, inputs_embeds: torch.Tensor | None = None
                           ) -> torch.Tensor:
        """Log P(answer | prompt) [b, C] for a padded batch, from its token ids or, for
        attribution, from `inputs_embeds` (then differentiable w.r.t. them). The LM head (a
        large share of a small model's compute: the vocabulary projection) runs at the answer
        position only (`logits_to_keep=1`)."""
        b = batch.mask.shape[0]
        cache = None
        if batch.shared:
            cache = copy.deepcopy(self.shared_cache(batch.shared))
            cache.batch_repeat_interleave(b)
        tokens = dict(inputs_embeds=inputs_embeds) if inputs_embeds is not None else dict(input_ids=batch.ids)
        out = self.model(**tokens, attention_mask=batch.mask, position_ids=batch.positions,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        scores = torch.stack([first[:, ids_[0]] for ids_ in self.cand_ids], dim=1)
        longest = max(len(x) for x in self.cand_ids)
        if longest > 1:
            scores = scores + self._continuations(out.past_key_values, batch.mask, batch.next_pos, longest)
        return scores
    def _continuations(self, cache, mask, next_pos, longest) -> torch.Tensor:
        """Log-prob of answer tokens 2..k given token 1, for every (row, answer) pair at once."""
        b, n_labels, k = mask.shape[0], len(self.cand_ids), longest - 1
        cont = torch.full((n_labels, k), self.pad_id, dtype=torch.long)
        cont_mask = torch.zeros((n_labels, k), dtype=torch.long)
        for l, ids_ in enumerate(self.cand_ids):
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
        for l, ids_ in enumerate(self.cand_ids):
            for j, tok in enumerate(ids_[1:]):
                total[:, l] += logp[:, l, j, tok]
        return total
