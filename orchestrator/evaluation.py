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

Every evaluation also keeps its samples: `eval/round_<N>/<label>.jsonl` (baselines trained outside
the rounds: `eval/baselines/`), one row per test prompt with the answer, the test split's reference
answer and each score the answer got (rule reward, each judge's score), so any later judge
(AlpacaEval, Arena-Hard, MT-Bench) can be run on the answers and a person can read what changed.
Sampled test decoding (`eval_sampling.temperature > 0`, the MACPO authors' test script) is seeded
per round from the run's seed, so a run still reproduces.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from orchestrator import calls
from orchestrator.config import JUDGE_METRICS
from tasks import sample_rewards, score_responses

REWARD_MODEL = "reward_model"  # the first judge's actor; judges are not agents: they never train


def eval_examples(ctl: Any) -> list:
    test = ctl.task.test
    return test[: ctl.config.eval_size] if ctl.config.eval_size else test


BASELINES_DIR = "eval/baselines"
EVAL_SEED_SALT = 7_000_000  # apart from the algorithms' sampling salts (MACPO: 1..1000 + round)


def eval_dir(round_index: int | None) -> str:
    """Where one evaluation's samples go in the run directory."""
    return BASELINES_DIR if round_index is None else f"eval/round_{round_index}"


def eval_sampling(ctl: Any, round_index: int | None):
    """The test decoding: greedy as configured, or sampled with a seed of its own per round."""
    sampling = ctl.config.eval_sampling
    if sampling.temperature > 0 and sampling.seed is None:
        salt = EVAL_SEED_SALT + (round_index if round_index is not None else 999_999)
        sampling = dataclasses.replace(sampling, seed=ctl.config.seed * 100003 + salt)
    return sampling


def evaluate(ctl: Any, jobs: dict[str, tuple[str, str]], round_index: int | None = None) -> dict[str, dict]:
    """Score every label -> (agent, adapter) job on the test split; returns label -> metrics and
    writes each label's samples to `eval_dir(round_index)`."""
    examples = eval_examples(ctl)
    prompts = [ex.prompt for ex in examples]
    rule = ctl.task.has_rule_reward
    judge = bool(ctl.config.judges())
    out: dict[str, dict] = {label: {} for label in jobs}
    answers: dict[str, list[str]] = {}
    samples: dict[str, dict[str, list]] = {label: {} for label in jobs}  # label -> column -> per-prompt values
    sampling = eval_sampling(ctl, round_index)
    for batch in one_call_per_actor(jobs):
        if rule or judge:
            result = ctl.stage("evaluate", {agent: calls.generate(prompts, sampling, adapter=adapter)
                                            for agent, adapter in batch.values()})
            for label, (agent, _) in batch.items():
                answers[label] = result.results[agent]
                samples[label]["answer"] = answers[label]
                if rule:
                    out[label].update(score_responses(ctl.task.name, prompts, answers[label]))
                    samples[label]["rule_reward"] = sample_rewards(ctl.task.name, prompts, answers[label])
        if not rule:
            responses = [ex.chosen for ex in examples] + [ex.rejected for ex in examples]
            result = ctl.stage("evaluate", {agent: calls.score("logprobs", prompts + prompts, responses, adapter=adapter)
                                            for agent, adapter in batch.values()})
            n = len(examples)
            for label, (agent, _) in batch.items():
                means = result.results[agent]["mean"]
                accuracy = sum(1 for i in range(n) if means[i] > means[n + i]) / max(n, 1)
                out[label].update(reward=accuracy, preference_accuracy=accuracy, n=n)
                samples[label].update(chosen_mean_logp=means[:n], rejected_mean_logp=means[n:])
    references = [ex.chosen for ex in examples]
    for slot in ctl.config.judges():
        labels = list(answers)
        *scores, reference = ctl.score_answer_sets(slot, slot, "score", prompts, [answers[label] for label in labels] + [references])
        prefix = JUDGE_METRICS[slot]
        for label, values in zip(labels, scores):
            out[label][f"{prefix}_score"] = sum(values) / max(len(values), 1)
            out[label][f"{prefix}_win_rate"] = win_rate(values, reference)
            samples[label][f"{prefix}_score"] = values
            samples[label][f"reference_{prefix}_score"] = reference
            if slot == REWARD_MODEL and not rule:
                out[label]["reward"] = out[label]["rm_score"]
    write_samples(ctl, eval_dir(round_index), examples, samples)
    return out


def write_samples(ctl: Any, directory: str, examples: list, samples: dict[str, dict[str, list]]) -> None:
    """One JSON line per test prompt and label: prompt, reference answer, and every column."""
    for label, columns in samples.items():
        rows = [{"prompt": ex.prompt, "reference": ex.chosen, **{key: values[i] for key, values in columns.items()}}
                for i, ex in enumerate(examples)]
        ctl.run_dir.write_jsonl(f"{directory}/{label}.jsonl", rows)


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
