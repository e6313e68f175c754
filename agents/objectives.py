"""How each training objective is fed: one class per objective, tokenizing, referencing, losing.

`Agent.train` is the same loop for every objective (batches, optimizer, schedule, non-finite
recovery); what differs lives here: which fields an example needs and how it is tokenized
(`encode`), which reference log-probs are computed once before any update (`add_reference`, run by
the agent under `no_grad` with the reference adapter active), and how a batch becomes a loss from
`losses` (`loss`). The agent lends three things: `_encode(prompt, response)`, `_response_logits`
and its device.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import torch

from agents.config import TrainConfig
from agents.errors import AgentError
from losses import dpo_loss, macpo_loss, sequence_logps, token_logps, wspo_loss


class Trainee(Protocol):
    """What an objective needs of the agent it trains (the Agent provides it)."""

    name: str

    def _encode(self, prompt: str, response: str) -> tuple[list[int], list[int]]: ...

    def _response_logits(self, encoded: Sequence[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


class Objective:
    """Base: SFT-shaped examples ({prompt, response}) and no reference."""

    name = "base"
    needs_reference = False
    fields: tuple[str, ...] = ("prompt", "response")

    def encode(self, agent: "Trainee", example: dict) -> dict:
        return {"seq": agent._encode(example["prompt"], example["response"])}

    def add_reference(self, agent: "Trainee", batch: list[dict]) -> None:
        """Attach the reference log-probs this objective needs to every item of `batch`."""

    def loss(self, agent: "Trainee", batch: list[dict], cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float], int]:
        raise NotImplementedError


class SFT(Objective):
    """Mean token NLL of the response."""

    name = "sft"

    def loss(self, agent, batch, cfg):
        pred, labels, mask = agent._response_logits([it["seq"] for it in batch])
        nll = -sequence_logps(pred, labels, mask, average=True)
        return nll.mean(), {"loss": float(nll.detach().mean())}, int(mask.sum())


class WSPO(Objective):
    """WSPO: match gamma * (policy - strong reference) to the weak model's (aligned - reference)
    shift, token by token; the weak per-token log-probs arrive with each example."""

    name = "wspo"
    needs_reference = True
    fields = ("prompt", "response", "weak_aligned_logps", "weak_ref_logps")

    def encode(self, agent, example):
        item = super().encode(agent, example)
        n = len(item["seq"][1])
        item["weak_aligned"] = list(example["weak_aligned_logps"])[:n]
        item["weak_ref"] = list(example["weak_ref_logps"])[:n]
        if len(item["weak_aligned"]) != n or len(item["weak_ref"]) != n:
            raise AgentError(f"{agent.name}: weak log-probs cover {len(item['weak_aligned'])} tokens but the "
                             f"response has {n}; weak and strong tokenizers must match")
        return item

    def add_reference(self, agent, batch):
        pred, labels, mask = agent._response_logits([it["seq"] for it in batch])
        ref = token_logps(pred, labels) * mask
        for row, it in enumerate(batch):
            it["strong_ref"] = ref[row].cpu()

    def loss(self, agent, batch, cfg):
        pred, labels, mask = agent._response_logits([it["seq"] for it in batch])
        logps = token_logps(pred, labels) * mask
        width = logps.size(1)

        def stack(key: str) -> torch.Tensor:
            out = torch.zeros_like(logps)
            for row, it in enumerate(batch):
                values = torch.as_tensor(it[key], dtype=logps.dtype)
                out[row, : len(values)] = values.to(logps.device)[:width]
            return out

        strong_ref = torch.stack([torch.nn.functional.pad(it["strong_ref"], (0, width - it["strong_ref"].numel()))
                                  for it in batch]).to(logps.device)
        loss = wspo_loss(logps, strong_ref, stack("weak_aligned"), stack("weak_ref"), mask, gamma=cfg.shift_scale)
        return loss.mean(), {"loss": float(loss.detach().mean())}, int(mask.sum())


class DPO(Objective):
    """DPO family (sigmoid, IPO on length-averaged log-probs, hinge) on {prompt, chosen, rejected}."""

    name = "dpo"
    needs_reference = True
    fields = ("prompt", "chosen", "rejected")

    def encode(self, agent, example):
        return {"chosen": agent._encode(example["prompt"], example["chosen"]),
                "rejected": agent._encode(example["prompt"], example["rejected"])}

    @staticmethod
    def _sums_and_means(agent, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sum and mean log-prob of chosen (first half) and rejected (second half) responses."""
        pred, labels, mask = agent._response_logits([it["chosen"] for it in batch] + [it["rejected"] for it in batch])
        sums = sequence_logps(pred, labels, mask)
        return sums, sums / mask.sum(-1).clamp(min=1), mask

    def add_reference(self, agent, batch):
        sums, means, _ = self._sums_and_means(agent, batch)
        n = len(batch)
        for row, it in enumerate(batch):
            it["ref_chosen"] = (float(sums[row]), float(means[row]))
            it["ref_rejected"] = (float(sums[n + row]), float(means[n + row]))

    def preference_loss(self, policy_c, policy_r, ref_c, ref_r, chosen_means, cfg):
        return dpo_loss(policy_c, policy_r, ref_c, ref_r, beta=cfg.beta, loss_type=cfg.loss_type,
                        label_smoothing=cfg.label_smoothing)

    def loss(self, agent, batch, cfg):
        n = len(batch)
        sums, means, mask = self._sums_and_means(agent, batch)
        use_mean = cfg.loss_type == "ipo"  # IPO works on length-averaged log-probs
        policy = means if use_mean else sums
        pick = 1 if use_mean else 0
        ref_c = torch.tensor([it["ref_chosen"][pick] for it in batch], device=policy.device)
        ref_r = torch.tensor([it["ref_rejected"][pick] for it in batch], device=policy.device)
        loss, rc, rr = self.preference_loss(policy[:n], policy[n:], ref_c, ref_r, means[:n], cfg)
        margin = rc - rr
        return loss.mean(), {
            "loss": float(loss.detach().mean()),
            "reward_margin": float(margin.mean()),
            "accuracy": float((margin > 0).float().mean()),
            "chosen_nll": float(-means[:n].detach().mean()),
        }, int(mask.sum())


class MACPO(DPO):
    """MACPO: the DPO term plus `nll_weight` x the positive's mean token NLL (the paper's gamma)."""

    name = "macpo"

    def preference_loss(self, policy_c, policy_r, ref_c, ref_r, chosen_means, cfg):
        return macpo_loss(policy_c, policy_r, ref_c, ref_r, chosen_means, beta=cfg.beta, gamma=cfg.nll_weight,
                          loss_type=cfg.loss_type, label_smoothing=cfg.label_smoothing)


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (SFT(), DPO(), MACPO(), WSPO())}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise AgentError(f"unknown objective {name!r}; choose one of {tuple(OBJECTIVES)}")
    return OBJECTIVES[name]
