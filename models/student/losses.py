"""The student's per-row loss, shared by fine-tuning (models/student/trainer.py) and the frozen-encoder
head (models/student/head.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def row_losses(logits: torch.Tensor, targets: torch.Tensor, label_idx: torch.Tensor,
               is_seed: torch.Tensor, temperature: float, seed_weight: float) -> torch.Tensor:
    """l_i per row (the trainer's loss, models/student/trainer.py module docstring):
        seed rows:  seed_weight * CE(z_i, gold label)
        other rows: T^2 * KL(p_T || softmax(z_i / T))"""
    t = temperature
    kd = t * t * (torch.xlogy(targets, targets) - targets * F.log_softmax(logits / t, dim=-1)).sum(-1)
    ce = seed_weight * F.cross_entropy(logits, label_idx, reduction="none")
    return torch.where(is_seed, ce, kd)
