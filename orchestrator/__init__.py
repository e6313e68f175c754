"""The orchestrator: config, the Orchestrator actor that drives the rounds, MACPO and WSPO, the CLI."""
from orchestrator.config import ConfigError, RunConfig, load_config

__all__ = ["ConfigError", "RunConfig", "load_config", "Orchestrator", "OrchestratorCore", "run", "connect"]


def __getattr__(name):
    # Ray and the model stack load only when an entry point that needs them is used.
    if name == "Orchestrator":
        from orchestrator.actor import Orchestrator

        return Orchestrator
    if name == "OrchestratorCore":
        from orchestrator.core import OrchestratorCore

        return OrchestratorCore
    if name in ("run", "connect"):
        from orchestrator import api

        return getattr(api, name)
    raise AttributeError(name)
