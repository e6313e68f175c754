"""Tasks: the synthetic helpful/harmless testbed and real preference datasets, split for W2S.

Imports only the standard library here; `datasets` is imported inside the real loaders, so the
synthetic testbed (and anything that only needs the types) works without it.
"""
from __future__ import annotations

from typing import Sequence

from tasks.config import TaskConfig, TaskConfigError, TaskDataError
from tasks.synthetic import REFUSAL
from tasks.types import PreferenceExample, TaskData

__all__ = ["REFUSAL", "PreferenceExample", "TaskConfig", "TaskConfigError", "TaskData", "TaskDataError",
           "gold_responses", "load_task", "sample_rewards", "score_responses"]


def load_task(cfg: TaskConfig, seed: int) -> TaskData:
    """Validate `cfg` and build the task's D_w / Q_w2s / test splits (deterministic for `seed`).

    Raises TaskConfigError for a bad setting and TaskDataError for bad data, each one line naming
    the key or the file and line."""
    cfg.validate()
    if cfg.name == "synthetic":
        from tasks.synthetic import make_task

        return make_task(cfg, seed)
    from tasks.real import load_real_task

    return load_real_task(cfg, seed)


def score_responses(task_name: str, prompts: Sequence[str], responses: Sequence[str]) -> dict | None:
    """Rule metrics for the synthetic task; None for real tasks (they have no rule reward)."""
    if task_name != "synthetic":
        return None
    from tasks.synthetic import evaluate_responses

    return evaluate_responses(prompts, responses)


def sample_rewards(task_name: str, prompts: Sequence[str], responses: Sequence[str]) -> list[float] | None:
    """The rule reward of each answer (synthetic task); None for real tasks."""
    if task_name != "synthetic":
        return None
    from tasks.synthetic import score

    return [score(p, r).reward for p, r in zip(prompts, responses)]


def harmful_flags(task_name: str, prompts: Sequence[str]) -> list[bool] | None:
    """Which prompts are harmful, where a rule knows (synthetic task); None for real tasks."""
    if task_name != "synthetic":
        return None
    from tasks.synthetic import is_harmful

    return [is_harmful(p) for p in prompts]


def gold_responses(task_name: str, prompts: Sequence[str]) -> list[str]:
    """Reference answers, where a rule gives them (the strong-ceiling baseline trains on these)."""
    if task_name != "synthetic":
        raise ValueError(f"task {task_name} has no rule for gold answers")
    from tasks.synthetic import gold_response

    return [gold_response(p) for p in prompts]
