"""Few-shot demonstrations for the teacher, chosen from the gold seed rows.

`similar`: for each text, the seed rows nearest to it by embedding cosine, balanced over labels
(round-robin over the labels, each label's rows taken nearest first), ordered so the most
similar demonstration comes last, right before the text. `fixed`: one balanced set for every
row (seeded), which keeps the whole prompt head shared and cached.

A text never gets itself as a demonstration (same normalised text is skipped), so scoring
the seed rows with their own pool is leave-one-out: the audit stays honest.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

import numpy as np

from potstill.models.teacher.prompts import Demo


class DemoSelector:
    def __init__(self, texts: Sequence[str], labels: Sequence[str], answers: dict[str, str], k: int,
                 mode: str = "similar", embed: Callable[[list[str]], np.ndarray] | None = None,
                 seed: int = 0):
        if mode not in ("similar", "fixed"):
            raise ValueError(f"unknown demonstration selection {mode!r}")
        if mode == "similar" and embed is None:
            raise ValueError("similar demonstrations need an embedder")
        self.texts, self.labels = list(texts), list(labels)
        self.answers, self.k, self.mode, self.embed = answers, k, mode, embed
        self.by_label: dict[str, list[int]] = {}
        for i, label in enumerate(self.labels):
            self.by_label.setdefault(label, []).append(i)
        self.vectors = embed(self.texts) if mode == "similar" and self.texts else None
        rng = random.Random(seed)
        self.fixed_order = {l: rng.sample(ix, len(ix)) for l, ix in sorted(self.by_label.items())}

    def _balanced(self, ranked: dict[str, list[int]], exclude: str) -> list[int]:
        """Round-robin over labels, each label's candidates in rank order, until k are taken."""
        queues = {l: [i for i in ix if self.texts[i] != exclude] for l, ix in ranked.items()}
        picked: list[int] = []
        while len(picked) < self.k and any(queues.values()):
            for label in sorted(queues):
                if queues[label] and len(picked) < self.k:
                    picked.append(queues[label].pop(0))
        return picked

    def select(self, texts: Sequence[str]) -> list[list[Demo]]:
        if self.k == 0 or not self.texts:
            return [[] for _ in texts]
        if self.mode == "fixed":
            return [self._demos(self._balanced(self.fixed_order, t), None) for t in texts]
        sims = self.embed(list(texts)) @ self.vectors.T
        out = []
        for row, text in enumerate(texts):
            ranked = {l: sorted(ix, key=lambda i: -sims[row, i]) for l, ix in self.by_label.items()}
            out.append(self._demos(self._balanced(ranked, text), sims[row]))
        return out

    def _demos(self, picked: list[int], sims: np.ndarray | None) -> list[Demo]:
        if sims is not None:  # most similar last, nearest the text being labelled
            picked = sorted(picked, key=lambda i: sims[i])
        return [Demo(self.texts[i], self.answers[self.labels[i]]) for i in picked]
