"""Saliency rationales: the words of a text that made the teacher choose a label (arXiv 2409.12586).

Target. Attributions are taken of log p(label | text), the teacher's probability for the label
normalised over the task's label set, exactly as the teacher scores it (`HFTeacher.score_labels`
then `normalise`): each label's log-probability is the SUM of its tokens' log-probs with teacher
forcing, and the target is their log-softmax at the explained label. So a word scores high when
it favours this label over the other labels, not when it merely makes any answer more likely.
Cost: one forward (plus the short label continuations when a label has several tokens) and one
backward per row and IG step.

Inputs. The prompt is the teacher's own (`HFTeacher.prompt`, same tokenizer, same truncation).
The shared prefix (system prompt, instruction, label list) is a constant key/value cache, so it
is neither recomputed nor attributed; attributions are w.r.t. the input embeddings of the row's
tokens. Only tokens whose character span (offsets mapping of the rendered prompt) overlaps the
text itself are ranked: the prompt suffix, the chat template and the label tokens are masked.

Methods, one score per token from its embedding-sized attribution vector:
  saliency              ||d f / d x||_2             unsigned: sensitivity, not direction
  input_x_gradient      sum_d x_d * d f / d x_d      signed: > 0 pushes towards the label
  integrated_gradients  sum_d (x_d - b_d) * mean over the path b -> x of d f / d x_d, with the
                        baseline b = zero embedding on the text tokens and b = x everywhere else
                        (prompt tokens stay fixed), so by completeness the text tokens' scores sum
                        to f(x) - f(b); captum's convergence delta is the error of that sum. IG's
                        steps are batched by captum (`internal_batch_size` rows x steps a pass).
Signed methods rank words by their signed score (evidence FOR the label), saliency by magnitude.

Words. Words are the whitespace-separated spans of the (already whitespace-normalised) text, so
punctuation stays attached ("film,"). A token's score goes to the word it overlaps most (a
leading space belongs to no word); a word's score is the SUM of its tokens' scores. The
rationale is the top-k words by score (ties: earlier word first), listed in text order.
"""
from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass

import numpy as np
import torch

from models.teacher import HFTeacher

METHODS = ("saliency", "input_x_gradient", "integrated_gradients")
_WORD = re.compile(r"\S+")


# --- plain helpers over offsets and words ----------------------------------------------------

def word_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _WORD.finditer(text)]


def tokens_in_span(offsets: list[tuple[int, int]], start: int, end: int) -> list[bool]:
    """Which tokens overlap the character range [start, end) (the text inside the prompt)."""
    return [a < end and b > start and b > a for a, b in offsets]


def merge_to_words(token_scores, token_offsets: list[tuple[int, int]],
                   spans: list[tuple[int, int]]) -> np.ndarray:
    """Sum token scores per word; offsets are relative to the text. Each token goes to the word
    it overlaps most; a token overlapping no word (whitespace) is dropped."""
    out = np.zeros(len(spans), dtype=np.float64)
    starts = np.array([s for s, _ in spans]) if spans else np.zeros(0)
    for score, (a, b) in zip(token_scores, token_offsets):
        best, best_overlap = -1, 0
        for w in range(max(0, int(np.searchsorted(starts, a, side="right")) - 1), len(spans)):
            s, e = spans[w]
            if s >= b:
                break
            overlap = min(b, e) - max(a, s)
            if overlap > best_overlap:
                best, best_overlap = w, overlap
        if best >= 0:
            out[best] += float(score)
    return out


def top_k(word_scores: np.ndarray, k: int) -> list[int]:
    """Indices of the k best words (ties: earlier first), in text order."""
    order = sorted(range(len(word_scores)), key=lambda i: (-word_scores[i], i))
    return sorted(order[:k])


@dataclass
class Explanation:
    words: list[str]
    word_scores: np.ndarray
    top: list[int]                 # indices of the rationale words, in text order
    delta: float | None = None     # IG convergence delta (sum of attributions - f(x) + f(b))

    @property
    def rationale(self) -> str:
        return " ".join(self.words[i] for i in self.top)

    @property
    def rationale_scores(self) -> list[float]:
        return [float(np.float32(self.word_scores[i])) for i in self.top]


@dataclass
class _Row:
    text: str
    ids: list[int]                                 # row tokens after the cached prefix
    text_offsets: list[tuple[int, int] | None]     # per row token: its span in the text, or None
    label: int                                     # index of the label to explain


# --- the explainer ---------------------------------------------------------------------------

class Explainer:
    """Attributions over an `HFTeacher`'s model; rows are batched, IG's steps batched by captum.

    Peak memory is one forward+backward over `batch_size` rows (saliency, input x gradient) or
    over `max(batch_size, internal_batch_size)` interpolated rows (IG), on top of the weights.
    """

    def __init__(self, teacher: HFTeacher, method: str = "saliency", *, top_k: int = 5,
                 ig_steps: int = 32, batch_size: int = 4, internal_batch_size: int = 32,
                 use_prefix_cache: bool = True):
        if method not in METHODS:
            raise ValueError(f"unknown attribution method {method!r}; use one of {METHODS}")
        self.teacher, self.method, self.k = teacher, method, top_k
        self.ig_steps, self.batch_size = ig_steps, batch_size
        self.internal_batch_size = max(internal_batch_size, batch_size)
        self.model = teacher.model.eval()
        self.model.requires_grad_(False)  # gradients w.r.t. the inputs only
        self.embed = self.model.get_input_embeddings()
        self.longest = max(len(ids) for ids in teacher.label_ids)
        self.prefix = teacher.prompt.prefix
        self.prefix_ids = teacher.prefix_ids if use_prefix_cache else []
        self._cache = None
        if self.prefix_ids:
            with torch.no_grad():  # not inference_mode: the cache takes part in autograd graphs
                self._cache = self.model(torch.tensor([self.prefix_ids]), use_cache=True).past_key_values

    def encode(self, text: str, label: str) -> tuple[_Row, bool]:
        """The row's tokens, which of them are text (with their span in the text), and whether
        the row starts with the cached prefix tokens."""
        t = self.teacher
        text = t.truncate(text)
        enc = t.tokenizer(t.prompt.render(text), add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        n = len(self.prefix_ids)
        shared = bool(n) and ids[:n] == self.prefix_ids
        if shared:
            ids, offsets = ids[n:], offsets[n:]
        start = len(self.prefix)
        inside = tokens_in_span(offsets, start, start + len(text))
        text_offsets = [(max(a, start) - start, min(b, start + len(text)) - start) if ok else None
                        for (a, b), ok in zip(offsets, inside)]
        return _Row(text, list(ids), text_offsets, t.labels.index(label)), shared

    def explain(self, texts: list[str], labels: list[str]) -> list[Explanation]:
        """One Explanation per text, for the given label of each (one of the teacher's labels)."""
        encoded = [self.encode(x, l) for x, l in zip(texts, labels)]
        out: list[Explanation | None] = [None] * len(texts)
        for shared in (True, False):
            rows = sorted((i for i, (_, s) in enumerate(encoded) if s == shared),
                          key=lambda i: len(encoded[i][0].ids))
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                for i, e in zip(chunk, self._explain_batch([encoded[i][0] for i in chunk], shared)):
                    out[i] = e
        return out

    def _forward(self, embeds, mask, positions, next_pos, label, *, cache):
        """log p(label | text) over the label set, per row: [n]. Same computation as
        `HFTeacher._score_batch`, with gradients and from embeddings."""
        past = None
        if cache is not None:
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(embeds.shape[0])
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                         past_key_values=past, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        scores = torch.stack([first[:, ids[0]] for ids in self.teacher.label_ids], dim=1)
        if self.longest > 1:
            scores = scores + self.teacher._continuations(out.past_key_values, mask, next_pos,
                                                          self.longest)
        return torch.log_softmax(scores, dim=1).gather(1, label.unsqueeze(1)).squeeze(1)

    def batch_tensors(self, rows: list[_Row], shared: bool):
        """Left-padded embeddings, the forward's other arguments, the text-token mask [b, width]."""
        b, prefix_len = len(rows), (len(self.prefix_ids) if shared else 0)
        width = max(len(r.ids) for r in rows)
        ids = torch.full((b, width), self.teacher.pad_id, dtype=torch.long)
        mask = torch.zeros((b, prefix_len + width), dtype=torch.long)
        mask[:, :prefix_len] = 1
        positions = torch.zeros((b, width), dtype=torch.long)
        is_text = torch.zeros((b, width), dtype=torch.bool)
        for r, row in enumerate(rows):
            pad = width - len(row.ids)
            ids[r, pad:] = torch.tensor(row.ids)
            mask[r, prefix_len + pad:] = 1
            positions[r, pad:] = prefix_len + torch.arange(len(row.ids))
            is_text[r, pad:] = torch.tensor([o is not None for o in row.text_offsets])
        next_pos = torch.tensor([prefix_len + len(r.ids) for r in rows])
        label = torch.tensor([r.label for r in rows])
        with torch.no_grad():
            embeds = self.embed(ids)
        return embeds.requires_grad_(), (mask, positions, next_pos, label), is_text

    def forward_fn(self, shared: bool):
        """f(embeds, *args) -> log p(label | text) [n], for a batch built by `batch_tensors`."""
        return functools.partial(self._forward, cache=self._cache if shared else None)

    def attribute(self, rows: list[_Row], shared: bool):
        """Per-token scores [b, width] (0 off the text), the text mask, IG's deltas (or None)."""
        from captum.attr import InputXGradient, IntegratedGradients, Saliency

        embeds, args, is_text = self.batch_tensors(rows, shared)
        forward = self.forward_fn(shared)
        delta = None
        if self.method == "saliency":
            scores = Saliency(forward).attribute(embeds, additional_forward_args=args,
                                                 abs=False).norm(dim=-1)
        elif self.method == "input_x_gradient":
            scores = InputXGradient(forward).attribute(embeds, additional_forward_args=args).sum(-1)
        else:
            baseline = (embeds * (~is_text).unsqueeze(-1)).detach()
            attr, delta = IntegratedGradients(forward).attribute(
                embeds, baselines=baseline, additional_forward_args=args, n_steps=self.ig_steps,
                internal_batch_size=self.internal_batch_size, return_convergence_delta=True)
            scores = attr.sum(-1)
        return scores.detach() * is_text, is_text, delta

    def _explain_batch(self, rows: list[_Row], shared: bool) -> list[Explanation]:
        scores, _, delta = self.attribute(rows, shared)
        width = scores.shape[1]
        out = []
        for r, row in enumerate(rows):
            pad = width - len(row.ids)
            keep = [j for j, o in enumerate(row.text_offsets) if o is not None]
            token_scores = scores[r, pad:][keep].double().numpy()
            spans = word_spans(row.text)
            word_scores = merge_to_words(token_scores, [row.text_offsets[j] for j in keep], spans)
            top = top_k(word_scores, self.k)  # saliency scores are >= 0: magnitude ranking
            out.append(Explanation([row.text[s:e] for s, e in spans], word_scores, top,
                                   None if delta is None else float(delta[r])))
        return out


def explained_labels(rows: list[dict], explain: str) -> list[str]:
    """The label to explain per scored row: the teacher's, or the gold one where a row has it."""
    if explain == "gold":
        return [r.get("gold_label") or r["teacher_label"] for r in rows]
    return [r["teacher_label"] for r in rows]
