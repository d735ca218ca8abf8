"""LLKD selection inside the training loop (arXiv 2411.08028), batch by batch, as the student learns.

`student.selection: llkd` keeps, in every batch, the pool rows the teacher is sure of AND the
CURRENT student still needs, with thresholds that adapt per class as training goes. For a batch,
with target distribution p_i (the teacher's, after the recipe), its class c_i = argmax p_i,
teacher confidence conf_i = max p_i, and the student's normalised entropy on the same forward
pass, need_i = H(softmax(z_i)) / ln L (no extra forward: the logits the loss uses):
    for each class c present among the batch's pool rows (seed rows never enter the averages):
        mu_conf[c] <- m * mu_conf[c] + (1 - m) * mean(conf_i : c_i = c)    (first time: the mean)
        mu_need[c] <- m * mu_need[c] + (1 - m) * mean(need_i : c_i = c)
    keep_i = seed_i  or  (conf_i >= a * mu_conf[c_i]  and  need_i >= b * mu_need[c_i])
with m = student.llkd_momentum, a = llkd_confidence_scale, b = llkd_need_scale (0 = no need
test). The averages are updated with the batch before it is thresholded, so the first batch is
judged against its own means. Dropped rows get weight 0 in that step's loss; a batch with no
row kept takes no optimiser step. The first `llkd_warmup_share` of the steps train on every row
while the averages settle (they are updated there too). The SQL pre-selection (sql/select.sql)
is unchanged: it chooses what is published; this chooses what each step learns from.
"""
from __future__ import annotations

import numpy as np


class LLKDSelector:
    def __init__(self, n_labels: int, momentum: float = 0.9, confidence_scale: float = 1.0,
                 need_scale: float = 1.0):
        self.n_labels, self.m = n_labels, momentum
        self.a, self.b = confidence_scale, need_scale
        self.mu_conf = np.full(n_labels, np.nan)
        self.mu_need = np.full(n_labels, np.nan)
        self.seen = np.zeros(n_labels, dtype=int)
        self.kept = np.zeros(n_labels, dtype=int)

    def _update(self, mu: np.ndarray, values: np.ndarray, cls: np.ndarray) -> None:
        for c in np.unique(cls):
            mean = float(values[cls == c].mean())
            mu[c] = mean if np.isnan(mu[c]) else self.m * mu[c] + (1 - self.m) * mean

    def select(self, conf: np.ndarray, cls: np.ndarray, need: np.ndarray, is_seed: np.ndarray,
               apply: bool = True) -> np.ndarray:
        """Keep mask for one batch (module docstring); `apply=False` (warm-up) only updates."""
        pool = ~is_seed
        if pool.any():
            self._update(self.mu_conf, conf[pool], cls[pool])
            self._update(self.mu_need, need[pool], cls[pool])
        if not apply:
            return np.ones(len(conf), dtype=bool)
        keep = (conf >= self.a * self.mu_conf[cls]) & (need >= self.b * self.mu_need[cls])
        keep = keep | is_seed
        np.add.at(self.seen, cls[pool], 1)
        np.add.at(self.kept, cls[pool & keep], 1)
        return keep

    def summary(self, labels: list[str]) -> dict:
        return {"method": "llkd", "per_class": {
            l: {"seen": int(self.seen[i]), "kept": int(self.kept[i]),
                "confidence_threshold_avg": None if np.isnan(self.mu_conf[i]) else round(float(self.mu_conf[i]), 4),
                "need_threshold_avg": None if np.isnan(self.mu_need[i]) else round(float(self.mu_need[i]), 4)}
            for i, l in enumerate(labels)},
            "pool_rows_seen": int(self.seen.sum()), "pool_rows_kept": int(self.kept.sum()),
            "note": "counts over post-warm-up steps; seed rows are always kept"}
