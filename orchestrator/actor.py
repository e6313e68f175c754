"""`Orchestrator`: the run's single controller as a named Ray actor.

Named `<namespace>/orchestrator:<run dir name>` so a Ray client can attach to a running run with
`ray.get_actor(...)` and read `progress()` or `summary()`. Methods are those of OrchestratorCore.
"""
from __future__ import annotations

import logging

import ray

from orchestrator.core import OrchestratorCore


class _OrchestratorActor(OrchestratorCore):
    def __init__(self, config, resume_dir=None, log_level: int = logging.INFO):
        logging.basicConfig(level=log_level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
        super().__init__(config, resume_dir)

    def ready(self) -> str:
        return str(self.run_dir.root)


Orchestrator = ray.remote(_OrchestratorActor)
