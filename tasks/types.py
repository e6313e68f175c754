"""The data every algorithm consumes: preference examples and a task's three splits.

Only plain strings, bools, numbers, lists and dicts live here, so a run can write its splits to
`splits.json` and a resumed run (or a Ray actor on another node) rebuilds exactly the same data.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Union

from tasks.config import TaskDataError

# A prompt: a string, or a conversation of {"role": ..., "content": ...} messages (TRL's
# conversational rows), kept as messages so a model's own chat template can render it.
Prompt = Union[str, list]


def prompt_key(prompt: Prompt) -> str:
    """A hashable identity of a prompt (sets, dedup): the string, or the conversation as JSON."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def prompt_chars(prompt: Prompt) -> int:
    """A prompt's length in characters (a conversation: its messages' contents)."""
    return len(prompt) if isinstance(prompt, str) else sum(len(m["content"]) for m in prompt)


@dataclass(frozen=True)
class PreferenceExample:
    """One prompt with a preferred and a dispreferred response (TRL's prompt/chosen/rejected).

    `meta` carries what a loader knows beyond the pair (synthetic: op, harmful, trigger; PKU: the
    safety flags). It takes part in equality but not in the hash, since a dict cannot be hashed.
    """

    prompt: Prompt = field(hash=False)  # a conversation (list) cannot be hashed: equality only
    chosen: str
    rejected: str
    meta: dict = field(default_factory=dict, hash=False)


@dataclass
class TaskData:
    """D_w (labelled pairs), Q_w2s (unlabelled prompts), test (pairs; chosen = reference answer).

    `stats` records how the splits were made (seed, rows read, rows skipped and why) so that nothing
    a loader dropped goes unreported in the run's metrics.
    """

    name: str
    d_w: list[PreferenceExample]
    q_w2s: list[Prompt]
    test: list[PreferenceExample]
    has_rule_reward: bool
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (`json.dumps` works on it as long as meta and stats hold plain values)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskData":
        """Inverse of `to_dict`; a saved split with missing keys raises TaskDataError naming the key."""
        try:
            return cls(
                name=data["name"],
                d_w=[_example(ex) for ex in data["d_w"]],
                q_w2s=[p if isinstance(p, list) else str(p) for p in data["q_w2s"]],
                test=[_example(ex) for ex in data["test"]],
                has_rule_reward=bool(data["has_rule_reward"]),
                stats=dict(data.get("stats") or {}),
            )
        except KeyError as exc:
            raise TaskDataError(f"saved task splits: missing key {exc.args[0]!r}") from None


def _example(data: dict[str, Any]) -> PreferenceExample:
    return PreferenceExample(data["prompt"], data["chosen"], data["rejected"], dict(data.get("meta") or {}))
