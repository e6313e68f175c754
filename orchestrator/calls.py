"""Typed calls to agent actors: the only way the controller says what an agent should do.

Each builder returns a `Call` carrying the Agent method and its arguments; config dataclasses travel
as themselves (Ray pickles them) and the Agent accepts them as they are, so a parameter can be
followed from the YAML file to the loss without a dict in between. No Ray here: a Call is data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from agents.config import SamplingConfig, TrainConfig


@dataclass
class Call:
    """One method call on one actor: `method(*args, **kwargs)`, run with `threads` torch threads
    (None: the actor's own count; the controller sets it for an agent computing alone)."""

    method: str
    args: tuple = ()
    kwargs: dict | None = None
    threads: int | None = None


def info() -> Call:
    """Wait for the actor's model to load; returns its pid, model path, adapters."""
    return Call("info")


def generate(prompts: Sequence[str], sampling: SamplingConfig, adapter: str | None = None) -> Call:
    return Call("generate", (list(prompts), sampling), {"adapter": adapter})


def train(examples: Sequence[dict], objective: str, config: TrainConfig, adapter: str = "default",
          init_from: str | None = None) -> Call:
    """Train `adapter` on `examples` with `objective` (sft | dpo | macpo | wspo); `init_from` first
    makes the adapter a copy of another one (how a negative agent or a baseline starts)."""
    return Call("train", (list(examples), objective, config), {"adapter": adapter, "init_from": init_from})


def score(method: str, prompts: Sequence[str], responses: Sequence[str], adapter: str | None = "default") -> Call:
    """`perplexity`, `logprobs` or `token_logprobs` of responses; a reward model's `score`."""
    if method == "score":  # the reward model takes no adapter
        return Call("score", (list(prompts), list(responses)))
    return Call(method, (list(prompts), list(responses)), {"adapter": adapter})


def token_ids(texts: Sequence[str]) -> Call:
    return Call("token_ids", (list(texts),))


def save(directory: str) -> Call:
    return Call("save", (directory,))


def load(directory: str) -> Call:
    return Call("load", (directory,))
