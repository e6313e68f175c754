"""Log-probabilities of given tokens: the quantity every preference loss is built on."""
from __future__ import annotations

import torch


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token log-prob of `labels` under `logits` ([B,T,V], [B,T] -> [B,T]), in float32.

    Labels must already be aligned with the logits (the caller shifts). Negative labels (e.g. -100
    padding) are clamped to a valid index so they do not crash; the caller masks them out.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """Per-sequence sum (or mean over unmasked tokens) of token log-probs -> [B].

    `mask` marks the tokens that count (response tokens, not prompt or padding). A fully masked row
    gives 0 for both sum and mean, never NaN.
    """
    mask = mask.to(torch.float32)
    total = (token_logps(logits, labels) * mask).sum(-1)
    if not average:
        return total
    return total / mask.sum(-1).clamp(min=1.0)
