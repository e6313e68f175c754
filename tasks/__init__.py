"""Tasks: the synthetic helpful/harmless testbed and real preference datasets, split for W2S."""
from __future__ import annotations

from tasks.config import TaskConfig, TaskConfigError, TaskDataError
from tasks.synthetic import REFUSAL
from tasks.types import PreferenceExample, TaskData

__all__ = ["REFUSAL", "PreferenceExample", "TaskConfig", "TaskConfigError", "TaskData", "TaskDataError",
           "gold_responses", "load_task", "score_responses"]


def load_task(cfg: TaskConfig, seed: int) -> TaskData:
    """Validate `cfg` and build the task's D_w / Q_w2s / test splits."""
    cfg.validate()
    if cfg.name == "synthetic":
        from tasks.synthetic import make_task

        return make_task(cfg, seed)
    from tasks.real import load_real_task

    return load_real_task(cfg, seed)


def score_responses(task_name: str, prompts: list[str], responses: list[str]) -> dict | None:
    """Rule metrics for the synthetic task; None for real tasks (they have no rule reward)."""
    if task_name != "synthetic":
        return None
    from tasks.synthetic import evaluate_responses

    return evaluate_responses(prompts, responses)


def gold_responses(task_name: str, prompts: list[str]) -> list[str]:
    """Reference answers, where a rule gives them (the strong-ceiling baseline trains on these)."""
    if task_name != "synthetic":
        raise ValueError(f"task {task_name} has no rule for gold answers")
    from tasks.synthetic import gold_response

    return [gold_response(p) for p in prompts]
