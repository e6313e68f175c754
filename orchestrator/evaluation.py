"""Evaluation of every agent on the test split, once per round, through the controller's stages.

The headline `reward` is the rule reward on the synthetic task (greedy answers); else the reward
model's mean score over greedy answers when one is configured; else preference accuracy (log-prob
of chosen above rejected). Every configured judge (`reward_model`: helpfulness, `safety_model`:
harmlessness) adds its mean score (`rm_score`, `safety_score`) and its win rate against the test
split's reference answers (`rm_win_rate`, `safety_win_rate`: the share of prompts where the agent's
answer scores above the dataset's chosen answer, ties counting half, as WSPO reports win rates), and
real data always gets `preference_accuracy` (a diagnostic: it never looks at a generated answer).
Labels beyond the agents (baselines living as extra adapters on an agent's actor) are evaluated the
same way.
"""
from __future__ import annotations

from typing import Any

from orchestrator import calls
from orchestrator.config import JUDGE_METRICS
from tasks import score_responses

REWARD_MODEL = "reward_model"  # the first judge's actor; judges are not agents: they never train


def eval_examples(ctl: Any) -> list:
    test = ctl.task.test
    return test[: ctl.config.eval_size] if ctl.config.eval_size else test


def evaluate(ctl: Any, jobs: dict[str, tuple[str, str]]) -> dict[str, dict]:
    """Score every label -> (agent, adapter) job on the test split; returns label -> metrics."""
    examples = eval_examples(ctl)
    prompts = [ex.prompt for ex in examples]
    rule = ctl.task.has_rule_reward
    judge = bool(ctl.config.judges())
    out: dict[str, dict] = {label: {} for label in jobs}
    answers: dict[str, list[str]] = {}
    for batch in one_call_per_actor(jobs):
        if rule or judge:
            result = ctl.stage("evaluate", {agent: calls.generate(prompts, ctl.config.eval_sampling, adapter=adapter)
                                            for agent, adapter in batch.values()})
            for label, (agent, _) in batch.items():
                answers[label] = result.results[agent]
                if rule:
                    out[label].update(score_responses(ctl.task.name, prompts, answers[label]))
        if not rule:
            responses = [ex.chosen for ex in examples] + [ex.rejected for ex in examples]
            result = ctl.stage("evaluate", {agent: calls.score("logprobs", prompts + prompts, responses, adapter=adapter)
                                            for agent, adapter in batch.values()})
            n = len(examples)
            for label, (agent, _) in batch.items():
                means = result.results[agent]["mean"]
                accuracy = sum(1 for i in range(n) if means[i] > means[n + i]) / max(n, 1)
                out[label].update(reward=accuracy, preference_accuracy=accuracy, n=n)
    references = [ex.chosen for ex in examples]
    for slot in ctl.config.judges():
        labels = list(answers)
        *scores, reference = ctl.score_answer_sets(slot, slot, "score", prompts, [answers[label] for label in labels] + [references])
        prefix = JUDGE_METRICS[slot]
        for label, values in zip(labels, scores):
            out[label][f"{prefix}_score"] = sum(values) / max(len(values), 1)
            out[label][f"{prefix}_win_rate"] = win_rate(values, reference)
            if slot == REWARD_MODEL and not rule:
                out[label]["reward"] = out[label]["rm_score"]
    return out


def win_rate(scores: list[float], reference: list[float]) -> float:
    """Share of prompts where the answer scores above the reference answer (ties count half)."""
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, reference))
    return wins / max(len(scores), 1)


def one_call_per_actor(jobs: dict[str, tuple[str, str]]) -> list[dict[str, tuple[str, str]]]:
    """Split label -> (agent, adapter) jobs into stages with at most one job per actor each
    (a stage sends one call per actor; baselines on the student's actor go in a later stage)."""
    stages: list[dict[str, tuple[str, str]]] = []
    for label, (agent, adapter) in jobs.items():
        for stage in stages:
            if agent not in {a for a, _ in stage.values()}:
                stage[label] = (agent, adapter)
                break
        else:
            stages.append({label: (agent, adapter)})
    return stages
