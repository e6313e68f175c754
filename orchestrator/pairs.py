"""MACPO preference pairs, built from texts and scores only (no tensors, no Ray).

Student:   y+ = the teacher response with the lowest perplexity under the student (mutual positive
           augmentation), y- = the student's hard negative (its negative agent's output).
Teacher k: y+ = the student's response, y- = teacher k's hard negative.
Ablations (docs/architecture.md): `mutual_positives=False` takes y+ from the agent itself, `hard_negatives=False`
takes y- from the agent's own positive sample. Pairs whose two sides are equal, or whose positive is
empty, carry no signal and are dropped - and counted, so nothing disappears silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class PairSet:
    """Training pairs for one agent plus what was dropped and why."""

    pairs: list[dict] = field(default_factory=list)
    dropped_equal: int = 0
    dropped_empty: int = 0

    def stats(self) -> dict[str, int]:
        return {"pairs": len(self.pairs), "dropped_equal": self.dropped_equal, "dropped_empty": self.dropped_empty}


def _make(prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str]) -> PairSet:
    out = PairSet()
    for prompt, pos, neg in zip(prompts, chosen, rejected, strict=True):
        if not pos.strip():
            out.dropped_empty += 1
        elif pos.strip() == neg.strip():
            out.dropped_equal += 1
        else:
            out.pairs.append({"prompt": prompt, "chosen": pos, "rejected": neg})
    return out


def lowest_perplexity(candidates: Sequence[Sequence[str]], perplexities: Sequence[Sequence[float]]) -> tuple[list[str], list[int]]:
    """For each prompt, the candidate with the lowest perplexity and the index of its source.

    candidates[k][i] is source k's response to prompt i; perplexities has the same shape. Empty
    candidates never win while a non-empty one exists; ties go to the lower index.
    """
    if not candidates:
        raise ValueError("no candidate sources to select from")
    n = len(candidates[0])
    chosen, sources = [], []
    for i in range(n):
        best = min(
            range(len(candidates)),
            key=lambda k: (not candidates[k][i].strip(), perplexities[k][i]),
        )
        chosen.append(candidates[best][i])
        sources.append(best)
    return chosen, sources


def student_pairs(prompts: Sequence[str], own: Sequence[str], hard_negatives: Sequence[str],
                  best_teacher: Sequence[str] | None, mutual_positives: bool = True, use_hard_negatives: bool = True) -> PairSet:
    """The student's pairs; `best_teacher` (the selected teacher answers) is used only with mutual positives."""
    if mutual_positives and best_teacher is None:
        raise ValueError("mutual positives need the selected teacher answers")
    chosen = best_teacher if mutual_positives else own
    rejected = hard_negatives if use_hard_negatives else own
    return _make(prompts, chosen, rejected)


def teacher_pairs(prompts: Sequence[str], own: Sequence[str], hard_negatives: Sequence[str],
                  student_responses: Sequence[str], mutual_positives: bool = True, use_hard_negatives: bool = True) -> PairSet:
    chosen = student_responses if mutual_positives else own
    rejected = hard_negatives if use_hard_negatives else own
    return _make(prompts, chosen, rejected)


def pair_quality(chosen_rewards: Sequence[float], rejected_rewards: Sequence[float], own_rewards: Sequence[float],
                 harmful: Sequence[bool]) -> dict[str, dict[str, float]]:
    """What a learner is trained on, judged by a rule reward (where the task has one): per prompt
    group (all / benign / harmful) the mean reward of chosen, rejected and the learner's own answer,
    and the share of prompts where chosen beats rejected and where chosen beats the learner's own
    answer (a positive no better than what the agent already says teaches it nothing)."""
    groups = {"all": [True] * len(harmful), "benign": [not h for h in harmful], "harmful": list(harmful)}
    out = {}
    for name, member in groups.items():
        idx = [i for i, keep in enumerate(member) if keep]
        if not idx:
            continue
        n = len(idx)
        out[name] = {"n": n,
                     "chosen_reward": sum(chosen_rewards[i] for i in idx) / n,
                     "rejected_reward": sum(rejected_rewards[i] for i in idx) / n,
                     "own_reward": sum(own_rewards[i] for i in idx) / n,
                     "chosen_beats_rejected": sum(chosen_rewards[i] > rejected_rewards[i] for i in idx) / n,
                     "chosen_beats_own": sum(chosen_rewards[i] > own_rewards[i] for i in idx) / n,
                     "chosen_below_own": sum(chosen_rewards[i] < own_rewards[i] for i in idx) / n}
    return out
