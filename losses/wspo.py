"""WSPO's objective (arXiv 2410.18640): match the strong model's shift to the weak model's shift."""
from __future__ import annotations

import torch


def wspo_loss(policy_logps: torch.Tensor, strong_ref_logps: torch.Tensor, weak_aligned_logps: torch.Tensor,
              weak_ref_logps: torch.Tensor, mask: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """Per-example masked mean of (gamma*(policy - strong_ref) - (weak_aligned - weak_ref))**2 -> [B].

    All inputs are per-token log-probs [B, T] of the same response tokens (weak and strong must
    share a tokenizer); `mask` marks response tokens. An all-masked row gives 0, not NaN.
    """
    shapes = {t.shape for t in (policy_logps, strong_ref_logps, weak_aligned_logps, weak_ref_logps, mask)}
    if len(shapes) != 1:
        raise ValueError(f"wspo_loss: shapes differ: {sorted(tuple(s) for s in shapes)}")
    mask = mask.to(policy_logps.dtype)
    diff = gamma * (policy_logps - strong_ref_logps) - (weak_aligned_logps - weak_ref_logps)
    return (diff**2 * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
