"""MACPO's per-agent objective (arXiv 2410.07672): DPO plus an NLL anchor on the positive."""
from __future__ import annotations

import torch

from losses.dpo import dpo_loss


def macpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
               ref_rejected: torch.Tensor, chosen_avg_logps: torch.Tensor, beta: float = 0.1, gamma: float = 0.2,
               loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dpo_loss + gamma * (-chosen_avg_logps) -> (loss, chosen_rewards, rejected_rewards), each [B].

    The NLL term (mean token NLL of the positive, as in the paper's code) keeps the likelihood of the
    positive from falling while the margin grows: without it DPO on weak data collapses.
    `label_smoothing` (conservative DPO, for labels assumed partly flipped) applies to the DPO term.
    """
    if gamma < 0:
        raise ValueError(f"gamma={gamma}: must be >= 0")
    loss, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta, loss_type=loss_type,
        label_smoothing=label_smoothing,
    )
    return loss + gamma * (-chosen_avg_logps), chosen_rewards, rejected_rewards
