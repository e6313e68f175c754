"""The data every algorithm consumes: preference examples and a task's three splits."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class PreferenceExample:
    prompt: str
    chosen: str
    rejected: str
    meta: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass
class TaskData:
    """D_w (labelled pairs), Q_w2s (unlabelled prompts), test (pairs; chosen = reference answer)."""

    name: str
    d_w: list[PreferenceExample]
    q_w2s: list[str]
    test: list[PreferenceExample]
    has_rule_reward: bool
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TaskData":
        return cls(
            name=data["name"],
            d_w=[PreferenceExample(**ex) for ex in data["d_w"]],
            q_w2s=list(data["q_w2s"]),
            test=[PreferenceExample(**ex) for ex in data["test"]],
            has_rule_reward=data["has_rule_reward"],
            stats=data.get("stats", {}),
        )
