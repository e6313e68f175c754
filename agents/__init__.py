"""Agents: one model with its LoRA adapters (the agent and its negative agent) and its Ray actor.

Names are resolved on first use (PEP 562): configuration and storage helpers import without torch,
so the CLI driver and the orchestrator process, which never run a model, skip torch's import."""
from agents.config import LoraConfig, ModelSpec, SamplingConfig, TrainConfig
from agents.errors import AgentError

__all__ = ["Agent", "AgentError", "LoraConfig", "ModelSpec", "SamplingConfig", "TrainConfig", "AgentActor"]


def __getattr__(name):
    if name == "Agent":
        from agents.agent import Agent

        return Agent
    if name == "AgentActor":  # Ray is imported only when the actor class is asked for
        from agents.actor import AgentActor

        return AgentActor
    raise AttributeError(name)
