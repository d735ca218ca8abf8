"""`teacher.dtype: int8`: the decoder's linear layers run as int8 x int8 -> int32 matrix products.

Each operand is split into two int8 terms, a value and its rounding residual, so that the
products keep ~15 bits of each operand while running on int8 units (`torch._int_mm`: oneDNN,
VNNI where the CPU has it):

    weights, per output channel o:  W[o] ~ s[o] (P1[o] + P2[o] / R)
    activations, per token t:       x[t] ~ a[t] (Q1[t] + Q2[t] / R)
    with s = max|W[o]| / 127, a = max|x[t]| / 127, P1 = round(W / s), P2 = round((W / s - P1) R),
    Q1, Q2 likewise, and R = 254 (a residual lies in [-1/2, 1/2], so round(residual x 254) fits
    in int8), and the product, its Q2 x P2 / R^2 term dropped:

    x W^T ~ a s (Q1 P1^T + [Q1 Q2] [P2 P1]^T / R)

That is two int8 products, the second over twice the inner dimension ([Q1 Q2] is Q1 and Q2
side by side), so three times the int8 work of one term per operand: 1.9x float32 here
(one thread, 500 reviews: 6.00 vs 3.22 rows/s) where one term per operand ran 4-5x.
One int8 term per operand (the scheme before) agreed with float32 on 98.0% of 500 Rotten
Tomatoes labels with Qwen2.5-0.5B; neither SmoothQuant-style smoothing (97.2%), the first and
last layers in float32 (96.0%), nor two terms for one operand only (weights 95.6%,
activations 98.6%) reached 99%; this scheme agrees on 100% (README "Performance"). The LM head
stays float32: with `logits_to_keep=1` it is a small share of the work, and it decides the
label log-probs.

Forward only: the int8 layers have no gradients, so the config refuses saliency with int8.
"""
from __future__ import annotations

import torch

RESIDUAL = 254   # R: the second term's scale, relative to the first's
SCHEME = "int8x2"  # store.answer_source's tag: answers of an earlier int8 scheme are not reused


def _split(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scale, first term, second term) of each row: values ~ scale (first + second / R),
    scale = max|row| / 127, both terms int8."""
    scale = values.abs().amax(dim=1, keepdim=True).clamp_(min=1e-8).div_(127)  # = the inf-norm, ~10x cheaper
    unit = values / scale
    first = unit.round()
    second = unit.sub_(first).mul_(RESIDUAL).round_()
    return scale, first.to(torch.int8), second.to(torch.int8)


class Int8Linear(torch.nn.Module):
    """A `torch.nn.Linear` as two-term int8 weights (per output channel) times two-term int8
    inputs (per token): the module docstring's product."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        scale, first, second = _split(linear.weight.detach().float())
        self.register_buffer("weight_t", first.t().contiguous())  # P1^T, [in, out]: _int_mm's layout
        self.register_buffer("residual_t", torch.cat([second, first], 1).t().contiguous())  # [P2 P1]^T
        self.register_buffer("weight_scale", scale.squeeze(1))
        self.bias = None if linear.bias is None else torch.nn.Parameter(
            linear.bias.detach().float(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, first, second = _split(x.reshape(-1, self.in_features).float())
        main = torch._int_mm(first, self.weight_t)
        residual = torch._int_mm(torch.cat([first, second], 1), self.residual_t)
        out = residual.float().div_(RESIDUAL).add_(main).mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out += self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


def quantize_linear(module: torch.nn.Module) -> torch.nn.Module:
    """Every `torch.nn.Linear` under `module` replaced by an `Int8Linear`, in place."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            quantize_linear(child)
    return module
