"""The orchestrator: config, the Orchestrator actor that drives the rounds, the algorithms, the CLI.

Everything is imported on first use, so `import orchestrator` is cheap and no module of this
package is imported through the package itself (no import circles via `__init__`).
"""
from __future__ import annotations

import importlib

__all__ = ["ConfigError", "RunConfig", "load_config", "Orchestrator", "OrchestratorCore", "run", "connect"]
_HOMES = {"ConfigError": "orchestrator.config", "RunConfig": "orchestrator.config", "load_config": "orchestrator.config",
          "Orchestrator": "orchestrator.actor", "OrchestratorCore": "orchestrator.core",
          "run": "orchestrator.api", "connect": "orchestrator.api"}


def __getattr__(name):
    # Ray and the model stack load only when an entry point that needs them is used.
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(name)
