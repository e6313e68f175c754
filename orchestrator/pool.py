"""The agent actors of one run and the one way the orchestrator talks to them: a parallel stage.

`AgentPool.stage` fans one call out to many agents at once and gathers the answers with
`ray.wait` under a deadline, so a hung actor surfaces as an error naming it instead of a hang. Each
answer carries the seconds the actor itself spent, which is what the run's timing figures are made
of (stage wall time vs the slowest actor = orchestration overhead).

When an actor dies mid-stage, the pool starts a fresh one for that agent, restores its adapters
from the last state it saved (a round checkpoint or the pool's own snapshot), and redoes only that
agent's call; after `max_failures` restarts in a run it gives up with an error naming the agent.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from agents.actor import AgentActor
from orchestrator.calls import Call
from tasks.errors import BadInput

log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A stage could not complete; the message names the stage and the agent."""


class AgentStartError(StageError, BadInput):
    """An agent's actor could not even start (its model or spec is wrong): restarting cannot help."""


@dataclass
class StageResult:
    results: dict[str, Any]
    actor_s: dict[str, float]
    wall_s: float
    actor_cpu_s: dict[str, float]

    @property
    def overhead_s(self) -> float:
        return max(0.0, self.wall_s - max(self.actor_s.values(), default=0.0))


class AgentPool:
    """Creates, calls and (on failure) recreates the agent actors of one run."""

    def __init__(self, run_id: str, namespace: str, cache_dir: str | None, torch_threads: int,
                 stage_timeout_s: float, max_failures: int, progress: Callable[[str, int], Any] | None = None,
                 seed: int = 0, storage_options: dict | None = None, max_new_tokens: int = 0):
        self.run_id = run_id
        self.max_new_tokens = max_new_tokens  # the longest answer the run asks for (sizes a vLLM engine's context)
        self.storage_options = dict(storage_options or {})  # each actor writes its checkpoints with these
        self.seed = seed  # the run's seed, handed to every agent (LoRA init, batch order)
        self.namespace = namespace
        self.cache_dir = cache_dir
        self.torch_threads = torch_threads
        self.stage_timeout_s = stage_timeout_s
        self.max_failures = max_failures
        self.progress = progress
        self.handles: dict[str, Any] = {}
        self.specs: dict[str, tuple[Any, dict, Any]] = {}  # name -> (spec, resources, actor class)
        self.restore_dirs: dict[str, str] = {}  # agent -> directory its adapters are restored from
        self.failures: dict[str, int] = {}

    # ------------------------------------------------------------ actors
    def start(self, name: str, spec: Any, resources: dict, actor_class: Any = None) -> None:
        """Create the actor (non-blocking); the first stage call waits for its model to load.

        `actor_class` defaults to `AgentActor`; the run's reward model uses `RewardModelActor`."""
        actor_class = actor_class or AgentActor
        self.specs[name] = (spec, resources, actor_class)
        self.handles[name] = self._create(name, spec, resources, actor_class)

    def _create(self, name: str, spec: Any, resources: dict, actor_class: Any):
        options = dict(name=f"{self.run_id}:{name}", namespace=self.namespace, lifetime=None,
                       num_cpus=resources.get("num_cpus", 0.5), num_gpus=resources.get("num_gpus", 0.0),
                       max_restarts=0, max_concurrency=1)
        if resources.get("custom"):
            options["resources"] = dict(resources["custom"])
        if resources.get("scheduling_strategy") is not None:
            options["scheduling_strategy"] = resources["scheduling_strategy"]
        return actor_class.options(**options).remote(name, spec, self.cache_dir,
                                                      resources.get("torch_threads") or self.torch_threads, self.seed,
                                                      self.storage_options, resources.get("nice", 0),
                                                      resources.get("scheduler", "normal"), self.max_new_tokens)

    def names(self) -> list[str]:
        return list(self.handles)

    def kill(self, name: str) -> None:
        ray.kill(self.handles[name], no_restart=True)

    def shutdown(self) -> None:
        for handle in self.handles.values():
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.handles.clear()

    def _recover(self, name: str, stage: str, error: Exception) -> None:
        """Replace a dead (or hung) actor and restore its adapters. A replacement that dies while
        restoring (placed on a node that is itself going away, before Ray has declared it dead) is
        one more failure and is replaced again, each counted against `max_failures`."""
        while True:
            self.failures[name] = self.failures.get(name, 0) + 1
            if self.failures[name] > self.max_failures:
                raise StageError(f"stage {stage}: agent {name} failed {self.failures[name]} times "
                                 f"(ray.max_failures={self.max_failures}); last error: {str(error).splitlines()[0]}") from error
            log.warning("agent %s died in stage %s (%s); restarting it (failure %d of %d allowed)",
                        name, stage, type(error).__name__, self.failures[name], self.max_failures)
            try:
                ray.kill(self.handles[name], no_restart=True)
            except Exception:  # noqa: BLE001
                pass
            spec, resources, actor_class = self.specs[name]
            self.handles[name] = self._create(name, spec, resources, actor_class)
            if name not in self.restore_dirs:
                return
            try:
                ray.get(self.handles[name].load.remote(self.restore_dirs[name]), timeout=self.stage_timeout_s)
                return
            except (RayActorError, GetTimeoutError) as exc:
                if getattr(exc, "actor_init_failed", False):
                    raise AgentStartError(f"stage {stage}: agent {name} could not restart: {init_error_line(exc)}") from None
                error = exc

    # ------------------------------------------------------------ stages
    def stage(self, stage: str, calls: dict[str, Call], timeout_s: float | None = None) -> StageResult:
        """Run `calls` (agent -> Call) in parallel; return results, per-actor seconds, wall time.

        `timeout_s` (default `ray.stage_timeout_s`) bounds this stage alone: an actor that gives no
        answer within it is restarted and its call redone, as if it had died."""
        timeout_s = self.stage_timeout_s if timeout_s is None else timeout_s
        start = time.perf_counter()
        results: dict[str, Any] = {}
        actor_s: dict[str, float] = {}
        actor_cpu_s: dict[str, float] = {}
        pending: dict[Any, str] = {}

        def submit(agent: str) -> None:
            call = calls[agent]
            ref = self.handles[agent].call.remote(call.method, *call.args, _threads=call.threads, **(call.kwargs or {}))
            pending[ref] = agent

        for agent in calls:
            if agent not in self.handles:
                raise StageError(f"stage {stage}: unknown agent {agent!r}")
            submit(agent)
        deadline = start + timeout_s
        while pending:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:  # a hung actor is treated like a dead one: restart it, redo its call
                slow = sorted(set(pending.values()))
                pending.clear()
                for agent in slow:
                    self._recover(agent, stage, TimeoutError(f"no answer within {timeout_s:g}s"))
                    submit(agent)
                deadline = time.perf_counter() + timeout_s
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=remaining)
            for ref in ready:
                agent = pending.pop(ref)
                try:
                    value, seconds, cpu_seconds = ray.get(ref, timeout=60)
                except (RayActorError, GetTimeoutError) as exc:
                    if getattr(exc, "actor_init_failed", False):  # its constructor raised (a bad model path...): a restart would too
                        raise AgentStartError(f"stage {stage}: agent {agent} could not start: {init_error_line(exc)}") from None
                    self._recover(agent, stage, exc)
                    submit(agent)
                    continue
                results[agent] = value
                actor_s[agent] = seconds
                actor_cpu_s[agent] = cpu_seconds
                if self.progress:
                    self.progress(stage, len(results))
        return StageResult(results, actor_s, time.perf_counter() - start, actor_cpu_s)


def init_error_line(exc: RayActorError) -> str:
    """The exception an actor's constructor raised, as its one last line (`module.Type: message`)."""
    lines = [line for line in str(exc.error_msg).splitlines() if line.strip() and not line.startswith(" ")]
    return lines[-1] if lines else type(exc).__name__
