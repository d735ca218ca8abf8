"""Calibration of the teacher's label distribution.

Contextual calibration (Zhao et al., 2021): score a few content-free inputs ("N/A", ...), take
the mean label distribution `p_cf` there as the prompt's own bias, and divide it out:
`p_cal ∝ p / p_cf`. Temperature scaling: one scalar `T` fitted on the gold seed rows to
minimise the negative log-likelihood of their gold labels, `p_cal ∝ exp(log p / T)`. Both
together apply the prior first, then `T`. Accuracy changes only through the prior; `T` only
changes confidence.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax


@dataclass(frozen=True)
class Calibration:
    log_prior: tuple[float, ...] | None = None
    temperature: float = 1.0

    def apply(self, logprobs):
        """Calibrated log-probabilities (normalised over the labels), [n, L]: a numpy array in,
        a numpy array out; a torch tensor in, a torch tensor out (differentiable: attribution
        explains exactly this)."""
        import torch

        as_numpy = not isinstance(logprobs, torch.Tensor)
        if as_numpy:
            logprobs = torch.from_numpy(np.ascontiguousarray(logprobs, dtype=np.float64))
        z = torch.log_softmax(logprobs, dim=1)
        if self.log_prior is not None:
            z = z - torch.tensor(self.log_prior, dtype=z.dtype)
        out = torch.log_softmax(z / self.temperature, dim=1)
        return out.numpy() if as_numpy else out

    def to_json(self) -> dict:
        return asdict(self)


def contextual_prior(content_free_logprobs: np.ndarray) -> tuple[float, ...]:
    """log of the mean label distribution over the content-free inputs."""
    p = np.exp(log_softmax(content_free_logprobs, axis=1)).mean(axis=0)
    return tuple(float(x) for x in np.log(np.clip(p, 1e-12, None)))


def fit_temperature(logprobs: np.ndarray, gold: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the gold labels' NLL under softmax(logprobs / T)."""
    if len(gold) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        z = log_softmax(logprobs / np.exp(log_t), axis=1)
        return float(-z[np.arange(len(gold)), gold].mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))
