"""Agents: one model with its LoRA adapters (the agent and its negative agent) and its Ray actor."""
from agents.agent import Agent, AgentError
from agents.config import LoraConfig, ModelSpec, SamplingConfig, TrainConfig

__all__ = ["Agent", "AgentError", "LoraConfig", "ModelSpec", "SamplingConfig", "TrainConfig", "AgentActor"]


def __getattr__(name):
    # Ray is imported only when the actor class is asked for, so plain Agent use stays light.
    if name == "AgentActor":
        from agents.actor import AgentActor

        return AgentActor
    raise AttributeError(name)
