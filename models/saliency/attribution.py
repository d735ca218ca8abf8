"""Saliency rationales: the words of a text that made the teacher choose a label (arXiv 2409.12586).

Target. Attributions are taken of log p(label | text): the teacher's probability for the label
over the task's label set, computed exactly as the teacher computes `label_probs` (same prompt
with its demonstrations, verbalizer surface forms summed, multiple-choice letters past the row's
options masked, then the fitted calibration). A label's log-probability is the SUM of its tokens'
log-probs with teacher forcing (multi-token labels are exact, not first-token). So a word scores
high when it favours this label over the other labels, not when it merely makes any answer
likelier. Cost: one forward (plus the short label continuations when an answer has several
tokens) and one backward per row and IG step.

Inputs. The shared prompt part (system prompt, instruction, label list; the template head when
there are demonstrations) is a constant key/value cache, so it is neither recomputed nor
attributed; attributions are w.r.t. the input embeddings of the row's tokens (demonstrations,
text, prompt suffix). Only tokens whose character span in the rendered prompt (offsets mapping)
overlaps the text are ranked: template, instruction, demonstrations and suffix are masked. The
text is the model input: on multiple-choice rows the question followed by its lettered options.

Methods, one score per token from its embedding-sized attribution vector:
  saliency              ||d f / d x||_2             unsigned: sensitivity, not direction
  input_x_gradient      sum_d x_d * d f / d x_d      signed: > 0 pushes towards the label
  integrated_gradients  sum_d (x_d - b_d) * mean over the path b -> x of d f / d x_d, with the
                        baseline b = zero embedding on the text tokens and b = x everywhere else
                        (prompt tokens stay fixed), so by completeness the text tokens' scores sum
                        to f(x) - f(b); captum's convergence delta is the error of that sum. IG's
                        steps are batched by captum (`internal_batch_size` rows x steps a pass).
Signed methods rank words by their signed score (evidence FOR the label), saliency by magnitude.
IG converges slowly on a real LM: the zero-embedding end of the path is steep (the blocks'
RMSNorm rescales tiny inputs), so with SmolLM2 at 32 steps the median |delta| is ~0.6 of
|f(x) - f(b)| (benchmarks/saliency_cost.py reports it). Raise `ig_steps` (cost is linear in it)
where completeness matters; the rationale uses only the ranking.

Words. Words are the whitespace-separated spans of the (already whitespace-normalised) text, so
punctuation stays attached ("film,"). A token's score goes to the word it overlaps most (a
leading space belongs to no word); a word's score is the SUM of its tokens' scores. The
rationale is the top-k words by score (ties: earlier word first), listed in text order. Texts
are cut to `teacher.max_input_tokens` exactly as the teacher cut them: words past the cut are
never ranked.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import torch

from potstill.models.teacher.prompts import Demo
from potstill.models.teacher.hf import Batch
from potstill.models.teacher.teacher_setup import LabelledTeacher

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
    ids: list[int]                                 # row tokens after the cached shared part
    text_offsets: list[tuple[int, int] | None]     # per row token: its span in the text, or None
    label: int                                     # index of the label to explain
    n_options: int                                 # labels this row may take (multiple choice)
    shared: str | None                             # which shared part is cached: prefix, head, none


# --- the explainer ---------------------------------------------------------------------------

class Explainer:
    """Attributions over a `LabelledTeacher`'s model; rows batched, IG's steps batched by captum.

    Peak memory is one forward+backward over `batch_size` rows (saliency, input x gradient) or
    over `max(batch_size, internal_batch_size)` interpolated rows (IG), on top of the weights.
    """

    def __init__(self, lt: LabelledTeacher, method: str = "saliency", *, top_k: int = 5,
                 ig_steps: int = 32, batch_size: int = 4, internal_batch_size: int = 32,
                 use_prefix_cache: bool = True):
        if method not in METHODS:
            raise ValueError(f"unknown attribution method {method!r}; use one of {METHODS}")
        self.lt, self.teacher = lt, lt.teacher
        self.method, self.k, self.ig_steps, self.batch_size = method, top_k, ig_steps, batch_size
        self.internal_batch_size = max(internal_batch_size, batch_size)
        self.model = self.teacher.model
        self.model.requires_grad_(False)  # gradients w.r.t. the inputs only
        self.embed = self.model.get_input_embeddings()
        self.use_prefix_cache = use_prefix_cache

    @classmethod
    def configured(cls, lt: LabelledTeacher, s) -> "Explainer":
        """An Explainer with the `saliency.*` settings (potstill.config.core.Saliency)."""
        return cls(lt, s.method, top_k=s.top_k, ig_steps=s.ig_steps, batch_size=s.batch_size,
                   internal_batch_size=s.internal_batch_size)

    def encode(self, text: str, label: str, demos=(), n_options: int | None = None) -> _Row:
        """The row's tokens after the cached shared part, and which of them are text (with
        their span in the text). `text` is the model input; `demos` as the teacher got them."""
        t = self.teacher
        text = t.truncate(text)
        demos = [Demo(t.truncate(d.text, t.demo_max_tokens), d.answer) for d in demos]
        rendered = t.prompt.render(text, demos)
        enc = t.tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        kind = "head" if demos else "prefix"
        head = t._shared_ids[kind] if self.use_prefix_cache else []
        shared = kind if head and ids[:len(head)] == head else None
        if shared:
            ids, offsets = ids[len(head):], offsets[len(head):]
        start = len(rendered) - len(t.prompt.suffix) - len(text)
        inside = tokens_in_span(offsets, start, start + len(text))
        text_offsets = [(max(a, start) - start, min(b, start + len(text)) - start) if ok else None
                        for (a, b), ok in zip(offsets, inside)]
        return _Row(text, list(ids), text_offsets, t.labels.index(label),
                    n_options or len(t.labels), shared)

    def explain(self, texts: list[str], labels: list[str],
                n_options: list[int] | None = None) -> list[Explanation]:
        """One Explanation per model input, for the given label of each (a task label)."""
        demos = self.lt.selector.select(texts) if self.lt.selector else [()] * len(texts)
        n_options = n_options or [None] * len(texts)
        rows = [self.encode(*a) for a in zip(texts, labels, demos, n_options)]
        out: list[Explanation | None] = [None] * len(texts)
        for kind in ("prefix", "head", None):
            group = sorted((i for i, r in enumerate(rows) if r.shared == kind),
                           key=lambda i: len(rows[i].ids))
            for start in range(0, len(group), self.batch_size):
                chunk = group[start:start + self.batch_size]
                for i, e in zip(chunk, self._explain_batch([rows[i] for i in chunk], kind)):
                    out[i] = e
        return out

    def _forward(self, embeds, mask, positions, next_pos, n_options, label, *, kind):
        """log p(label | text) per row [n]: the teacher's own forward and calibration
        (`HFTeacher.candidate_logprobs`, `LabelledTeacher.calibrate`), from embeddings. The
        arguments are tensors so that captum can repeat them for IG's steps."""
        batch = Batch(None, mask, positions, next_pos, kind)
        cand = self.teacher.candidate_logprobs(batch, inputs_embeds=embeds)
        _, z = self.lt.calibrate(self.teacher.label_scores(cand), n_options)
        return z.gather(1, label.unsqueeze(1)).squeeze(1)

    def batch_tensors(self, rows: list[_Row], kind: str | None):
        """Left-padded embeddings, the forward's other arguments, the text-token mask [b, width]."""
        batch = self.teacher.pad([r.ids for r in rows], kind)
        is_text = torch.zeros(batch.ids.shape, dtype=torch.bool)
        for r, row in enumerate(rows):
            is_text[r, is_text.shape[1] - len(row.ids):] = torch.tensor(
                [o is not None for o in row.text_offsets])
        n_options = torch.tensor([r.n_options for r in rows])
        label = torch.tensor([r.label for r in rows])
        with torch.no_grad():
            embeds = self.embed(batch.ids)
        args = (batch.mask, batch.positions, batch.next_pos, n_options, label)
        return embeds.requires_grad_(), args, is_text

    def forward_fn(self, kind: str | None):
        """f(embeds, *args) -> log p(label | text) [n], for a batch built by `batch_tensors`."""
        return functools.partial(self._forward, kind=kind)

    def attribute(self, rows: list[_Row], kind: str | None):
        """Per-token scores [b, width] (0 off the text), the text mask, IG's deltas (or None)."""
        from captum.attr import InputXGradient, IntegratedGradients, Saliency

        embeds, args, is_text = self.batch_tensors(rows, kind)
        forward = self.forward_fn(kind)
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
        return scores.detach().float() * is_text, is_text, delta

    def _explain_batch(self, rows: list[_Row], kind: str | None) -> list[Explanation]:
        scores, _, delta = self.attribute(rows, kind)
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
