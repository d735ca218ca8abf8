"""Classification metrics for the student's test split, in plain numpy (no sklearn).

Labels are integer indices into `labels`. Definitions, so numbers can be checked by hand:

- accuracy: share of rows with y_pred == y_true.
- per-class F1 = 2*TP / (2*TP + FP + FN). A label that is neither present in y_true nor ever
  predicted has 0/0 here; we define its F1 as 0 (sklearn's `zero_division=0`). macro_f1 is the
  unweighted mean over ALL `labels`, so a label the test split lacks pulls macro_f1 down: the
  split is the thing to fix, not the number.
- per_class_recall: TP / (TP + FN) per label; None for a label absent from y_true.
- ece (expected calibration error): confidence = max(probs) per row, correct = argmax(probs) ==
  y_true. Rows go into `n_bins` equal-width bins over [0, 1] (bin b holds confidences in
  (b/n, (b+1)/n], bin 0 also holds 0). ECE = sum over bins of |B|/N * |acc(B) - conf(B)|.
  Only computed when `probs` is given; None otherwise.
- paired bootstrap of a macro-F1 difference: both predictors are scored on the same resamples
  (rows drawn with replacement, n of n), so what they share (which rows are hard) cancels and
  the spread is that of their difference alone (Efron & Tibshirani 1993, ch. 16; Koehn 2004 for
  its use in comparing two systems on one test set).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 2000  # the share of resamples won varies by ~0.01 (sd) across seeds at this size

def _check_indices(name: str, y: np.ndarray, n_labels: int) -> None:
    if y.size and (y.min() < 0 or y.max() >= n_labels):
        raise ValueError(f"{name} holds label indices outside [0, {n_labels}): "
                         f"min {y.min()}, max {y.max()}")


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 10) -> float:
    """ECE of the max probability with equal-width bins (see the module docstring)."""
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    # ceil(conf * n) - 1 puts conf in (b/n, (b+1)/n] into bin b; conf == 0 goes to bin 0.
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: list[str],
                           probs: np.ndarray | None = None, n_bins: int = 10) -> dict:
    """accuracy, macro_f1, per_class_recall {label: float | None}, ece (None without probs), n."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    k = len(labels)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and equally long, got {y_true.shape} "
                         f"and {y_pred.shape}")
    if y_true.size == 0:
        raise ValueError("no examples to score")
    _check_indices("y_true", y_true, k)
    _check_indices("y_pred", y_pred, k)

    f1s, recall = [], {}
    for i, label in enumerate(labels):
        tp = int(np.sum((y_pred == i) & (y_true == i)))
        fp = int(np.sum((y_pred == i) & (y_true != i)))
        fn = int(np.sum((y_pred != i) & (y_true == i)))
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
        recall[label] = tp / (tp + fn) if tp + fn else None

    ece = None
    if probs is not None:
        probs = np.asarray(probs)
        if probs.shape != (y_true.size, k):
            raise ValueError(f"probs must have shape ({y_true.size}, {k}), got {probs.shape}")
        ece = expected_calibration_error(probs, y_true, n_bins)

    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(np.mean(f1s)),
        "per_class_recall": recall,
        "ece": ece,
        "n": int(y_true.size),
    }


def _macro_f1_weighted(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray,
                       n_labels: int) -> np.ndarray:
    """macro-F1 (as classification_metrics defines it) under each row of `weights` [b, n]: how
    many times each row is counted."""
    f1 = np.zeros((weights.shape[0], n_labels))
    for i in range(n_labels):
        tp = weights @ ((y_pred == i) & (y_true == i))
        wrong = weights @ ((y_pred == i) & (y_true != i)) + weights @ ((y_pred != i) & (y_true == i))
        denom = 2 * tp + wrong
        f1[:, i] = np.divide(2 * tp, denom, out=np.zeros_like(denom, dtype=np.float64),
                             where=denom > 0)
    return f1.mean(axis=1)


def paired_bootstrap_macro_f1(y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int],
                              n_labels: int, resamples: int = BOOTSTRAP_RESAMPLES,
                              seed: int = 0) -> np.ndarray:
    """macro-F1(b) - macro-F1(a) on `resamples` paired bootstrap resamples of the rows (see the
    module docstring): share of it > 0 is how often b beats a on rows like these."""
    y_true, a, b = (np.asarray(v, dtype=np.int64) for v in (y_true, pred_a, pred_b))
    if not (y_true.shape == a.shape == b.shape) or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"y_true, pred_a and pred_b must be 1-D, equally long and not empty, got "
                         f"{y_true.shape}, {a.shape} and {b.shape}")
    for name, y in (("y_true", y_true), ("pred_a", a), ("pred_b", b)):
        _check_indices(name, y, n_labels)
    n = y_true.size
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    counts = counts.astype(np.float64)
    return _macro_f1_weighted(y_true, b, counts, n_labels) - \
        _macro_f1_weighted(y_true, a, counts, n_labels)
