"""The student with a frozen encoder (`student.encoder: frozen`): only the label head is trained.

The encoder runs once over the training rows; its mean-pooled outputs x_i (exactly what the
head sees in `StudentClassifier.forward`, dropout off) are the features. The head (W, b) is then
fitted in closed form by full-batch L-BFGS on the trainer's own per-row loss l_i (models/
trainer.py: seed_weight * CE on gold rows, T^2 * KL(p_T || softmax(z_i / T)) on the others,
z_i = W x_i + b) with an L2 penalty, the form of a logistic regression:
    J_C(W, b) = sum_i w_i l_i + ||W||^2 / (2 C)
C (inverse penalty strength) is picked from `student.head_c` by `student.head_folds`-fold
cross-validation: for each C, the weighted held-out loss sum_{i in fold} w_i l_i of the head
fitted on the other folds, summed over folds (folds stratified by each row's target class);
the smallest total wins, the head is refitted on every row with it.

Why: a large sentence encoder (all-mpnet-base-v2) is ~8x slower to fine-tune than MiniLM on a
CPU, but one forward pass over the rows is cheap, and its frozen embeddings already separate
many tasks with a few hundred rows (README "Student training" has the measurements). Training
is deterministic: the head starts at zero and L-BFGS takes no random steps; the seed only deals
the folds.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from potstill.models import embed_cache
from potstill.models.student.losses import row_losses
from potstill.models.student.student import StudentClassifier, embeddings
from potstill.models.quality.trust import folds_of


def fit_linear(x: torch.Tensor, targets: torch.Tensor, label_idx: torch.Tensor,
               is_seed: torch.Tensor, weight: torch.Tensor, c: float, temperature: float,
               seed_weight: float, max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [L, d], b [L]) minimising J_C (module docstring), from zero, in float64."""
    n_labels = targets.shape[1]
    w = torch.zeros(n_labels, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_labels, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7,
                            tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        losses = row_losses(x @ w.T + b, targets, label_idx, is_seed, temperature, seed_weight)
        loss = (weight * losses).sum() + (w * w).sum() / (2 * c)
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach(), b.detach()


def choose_c(x, targets, label_idx, is_seed, weight, grid: list[float], folds: int, seed: int,
             temperature: float, seed_weight: float) -> tuple[float, dict]:
    """The C of `grid` with the smallest cross-validated held-out loss, and every C's loss."""
    k = min(folds, len(x))
    if k < 2 or len(grid) == 1:
        return grid[0], {}
    assign = torch.as_tensor(folds_of(targets.argmax(1).numpy(), k, seed))
    scores = {}
    for c in grid:
        total = 0.0
        for f in range(k):
            held = assign == f
            if not held.any() or held.all():
                continue
            w, b = fit_linear(x[~held], targets[~held], label_idx[~held], is_seed[~held],
                              weight[~held], c, temperature, seed_weight)
            losses = row_losses(x[held] @ w.T + b, targets[held], label_idx[held], is_seed[held],
                                temperature, seed_weight)
            total += float((weight[held] * losses).sum())
        scores[c] = total
    return min(scores, key=scores.get), {str(c): round(v, 4) for c, v in scores.items()}


def pretrained_features(model: StudentClassifier, spec, texts: list[str], s
                        ) -> tuple[np.ndarray, dict | None]:
    """x_i: the encoder's mean-pooled outputs of `texts` (the head's input in `forward`, not
    normalised), read from and kept in the embedding cache (models/embed_cache.py) when
    `student.embedding_cache` is on, with the record of what was read and embedded (else None).
    The encoder must still be the pretrained one `spec` (ResolvedModel) names: call it before
    fine-tuning, or for a frozen encoder."""
    def compute(rows: list[str]) -> np.ndarray:
        return embeddings(model, rows, batch_size=max(s.batch_size, 64), max_length=s.max_length,
                          normalise=False)
    if not s.embedding_cache:
        return compute(texts), None
    key = embed_cache.encoder_key(spec.sha256, spec.path, s.max_length)
    return embed_cache.cached(texts, key, model.encoder.config.hidden_size, compute)


def train_head(model: StudentClassifier, features: np.ndarray, targets: np.ndarray,
               label_idx: np.ndarray, is_seed: np.ndarray, weight: np.ndarray, s) -> dict:
    """Fit `model.head` in place on frozen `features` (module docstring); returns what was done.

    `targets` are the KD targets already re-tempered (p_T); `s` is the Student config."""
    t0 = time.perf_counter()
    args = (torch.as_tensor(features, dtype=torch.float64),
            torch.as_tensor(targets, dtype=torch.float64), torch.as_tensor(label_idx),
            torch.as_tensor(is_seed), torch.as_tensor(weight, dtype=torch.float64))
    c, cv = choose_c(*args, list(s.head_c), s.head_folds, s.seed, s.temperature, s.seed_weight)
    w, b = fit_linear(*args, c, s.temperature, s.seed_weight)
    with torch.no_grad():
        model.head.weight.copy_(w.to(model.head.weight.dtype))
        model.head.bias.copy_(b.to(model.head.bias.dtype))
        losses = row_losses(args[0] @ w.T + b, *args[1:4], s.temperature, s.seed_weight)
        train_loss = float((args[4] * losses).sum() / args[4].sum())
    return {"encoder": "frozen", "c": c, "cv_loss": cv, "train_loss": round(train_loss, 6),
            "seconds": round(time.perf_counter() - t0, 3)}
