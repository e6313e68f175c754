"""The DPO family of pairwise preference losses (per example; callers take the mean)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from losses.names import LOSS_TYPES


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preference loss on sequence log-probs -> (loss, chosen_rewards, rejected_rewards), each [B].

    logits = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected).
    - sigmoid (Rafailov et al. 2023): -logsigmoid(beta*logits), with conservative label smoothing
      (1-ls)*that + ls*(-logsigmoid(-beta*logits)).
    - ipo (Azar et al. 2023): (logits - 1/(2*beta))**2; pass length-averaged log-probs.
    - hinge (SLiC): relu(1 - beta*logits).
    Rewards are beta * (policy - ref), detached: they are for logging, not for gradients.
    """
    if beta <= 0:
        raise ValueError(f"beta={beta}: must be > 0")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}: choose one of {LOSS_TYPES}")
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing={label_smoothing}: must be in [0, 0.5]")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies to loss_type='sigmoid' only, not {loss_type!r}")
    logits = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if loss_type == "sigmoid":
        loss = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    elif loss_type == "ipo":
        loss = (logits - 1 / (2 * beta)) ** 2
    else:
        loss = torch.relu(1 - beta * logits)
    chosen_rewards = (beta * (policy_chosen - ref_chosen)).detach()
    rejected_rewards = (beta * (policy_rejected - ref_rejected)).detach()
    return loss, chosen_rewards, rejected_rewards
