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


# threaded (4 calls at once), so progress() and summary() answer while run_round() runs, however the
# actor was created (the CLI, the API or a user's `Orchestrator.options(...).remote(...)`)
Orchestrator = ray.remote(max_concurrency=4)(_OrchestratorActor)
