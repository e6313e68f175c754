"""The agent actors of one run and the one way the orchestrator talks to them: a parallel stage.

`AgentPool.stage` fans one call out to many agents at once and gathers the answers with
`ray.wait` under a deadline, so a hung actor surfaces as an error naming it instead of a hang. Each
answer carries the seconds the actor itself spent, which is what the run's timing figures are made
of (stage wall time vs the slowest actor = orchestration overhead).

When an actor dies mid-stage, the pool starts a fresh one for that agent, restores its adapters
from the last state it saved (a round checkpoint or the pool's own snapshot), and redoes only that
agent's call; after `max_failures` restarts in a run it gives up with an error naming the agent.

A sharded agent (`ranks` > 1, agents.sharding) is N rank actors that get every call together; its
answer is rank 0's. They start together (rank 0 reports an address, all join its process group),
and when one rank dies, hangs or loses its peers, the whole group is replaced and restored, and
the call redone, counted as one failure of that agent.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from agents.actor import AgentActor
from agents.prefork import command as prefork_command
from orchestrator.calls import Call
from tasks.errors import BadInput

log = logging.getLogger(__name__)
STEP_DRAIN_S = 2.0  # how often a waiting stage hands on the agents' step records


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
                 seed: int = 0, storage_options: dict | None = None, max_new_tokens: int = 0, prefork: bool = False):
        self.run_id = run_id
        self.prefork = prefork  # CPU agent actors fork from a warm per-node process (agents.prefork)
        self.max_new_tokens = max_new_tokens  # the longest answer the run asks for (sizes a vLLM engine's context)
        self.storage_options = dict(storage_options or {})  # each actor writes its checkpoints with these
        self.seed = seed  # the run's seed, handed to every agent (LoRA init, batch order)
        self.namespace = namespace
        self.cache_dir = cache_dir
        self.torch_threads = torch_threads
        self.stage_timeout_s = stage_timeout_s
        self.max_failures = max_failures
        self.progress = progress
        self.handles: dict[str, Any] = {}  # agent -> its actor (rank 0 of a sharded agent)
        self.ranks: dict[str, list[Any]] = {}  # agent -> all its actors, rank 0 first (one if unsharded)
        self.specs: dict[str, tuple[Any, Any, Any]] = {}  # name -> (spec, resources (a list per rank if sharded), actor class)
        self.reserved_adapters: tuple[str, ...] = ()  # adapters a sharded agent creates before sharding (the algorithm's)
        self.on_steps: Callable[[list[dict], int], Any] | None = None  # per-step training records, as they come
        self.step_log: Any = None  # orchestrator.step_log.StepLog, made with the first actor
        self.restore_dirs: dict[str, str] = {}  # agent -> directory its adapters are restored from
        self.failures: dict[str, int] = {}

    # ------------------------------------------------------------ actors
    def start(self, name: str, spec: Any, resources: dict, actor_class: Any = None) -> None:
        """Create the actor (non-blocking); the first stage call waits for its model to load.

        `actor_class` defaults to `AgentActor`; the run's reward model uses `RewardModelActor`."""
        actor_class = actor_class or AgentActor
        self.specs[name] = (spec, resources, actor_class)
        self._create_agent(name)

    def _create_agent(self, name: str) -> None:
        """Its actor, or a sharded agent's rank actors joined into one process group (non-blocking:
        the join runs in the actors before their first call)."""
        spec, resources, actor_class = self.specs[name]
        if not isinstance(resources, list):
            self.handles[name] = self._create(name, spec, resources, actor_class)
            self.ranks[name] = [self.handles[name]]
            return
        actors = [self._create(name, spec, res, actor_class, rank) for rank, res in enumerate(resources)]
        address = actors[0].rendezvous.remote()  # resolved by Ray before the joins run
        for rank, actor in enumerate(actors):
            actor.join_group.remote(rank, len(actors), address, self.reserved_adapters, self.stage_timeout_s)
        self.handles[name], self.ranks[name] = actors[0], actors

    def _create(self, name: str, spec: Any, resources: dict, actor_class: Any, rank: int = 0):
        """One actor; `resources` are its own (a rank's share for a sharded agent: orchestrator.placement)."""
        options = dict(name=f"{self.run_id}:{name}" + (f":rank{rank}" if rank else ""), namespace=self.namespace, lifetime=None,
                       num_cpus=resources.get("num_cpus", 0.5), num_gpus=resources.get("num_gpus", 0.0),
                       max_restarts=0, max_concurrency=1)
        if resources.get("custom"):
            options["resources"] = dict(resources["custom"])
        if resources.get("scheduling_strategy") is not None:
            options["scheduling_strategy"] = resources["scheduling_strategy"]
        if self.prefork and forks(options["num_gpus"], ray.get_runtime_context().runtime_env or {}):
            options["runtime_env"] = {"py_executable": prefork_command()}
        if self.step_log is None and self.on_steps is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            from orchestrator.step_log import StepLog

            # on the orchestrator's own node: a worker node that goes away must not take the log with it
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
            self.step_log = StepLog.options(namespace=self.namespace, scheduling_strategy=here).remote()
        return actor_class.options(**options).remote(name, spec, self.cache_dir,
                                                      resources.get("torch_threads") or self.torch_threads, self.seed,
                                                      self.storage_options, resources.get("nice", 0),
                                                      resources.get("scheduler", "normal"), self.max_new_tokens,
                                                      self.step_log, rank == 0)  # ranks 1.. get weights from rank 0

    def drain_steps(self) -> None:
        """Hand the step records that arrived to `on_steps` (never fails a stage: they are metrics)."""
        if self.step_log is None or self.on_steps is None:
            return
        try:
            records, dropped = ray.get(self.step_log.drain.remote(), timeout=30)
        except Exception as exc:  # noqa: BLE001
            log.warning("step metrics not drained (%s)", type(exc).__name__)
            return
        if records or dropped:
            self.on_steps(records, dropped)

    def names(self) -> list[str]:
        return list(self.handles)

    def kill(self, name: str, rank: int = 0) -> None:
        ray.kill(self.ranks[name][rank], no_restart=True)

    def _kill_all(self, name: str) -> None:
        for handle in self.ranks[name]:
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def shutdown(self) -> None:
        for name in list(self.handles):
            self._kill_all(name)
        self.handles.clear()
        self.ranks.clear()
        if self.step_log is not None:
            try:
                ray.kill(self.step_log, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
            self.step_log = None

    def _recover(self, name: str, stage: str, error: Exception, rank: int | None = None) -> None:
        """Replace a dead (or hung) actor and restore its adapters. A replacement that dies while
        restoring (placed on a node that is itself going away, before Ray has declared it dead) is
        one more failure and is replaced again, each counted against `max_failures`."""
        rank_note = f" (rank {rank} of {len(self.ranks[name])})" if rank is not None and len(self.ranks.get(name, ())) > 1 else ""
        while True:
            self.failures[name] = self.failures.get(name, 0) + 1
            if self.failures[name] > self.max_failures:
                raise StageError(f"stage {stage}: agent {name}{rank_note} failed {self.failures[name]} times "
                                 f"(ray.max_failures={self.max_failures}); last error: {str(error).splitlines()[0]}") from error
            log.warning("agent %s%s died in stage %s (%s); restarting it (failure %d of %d allowed)",
                        name, rank_note, stage, type(error).__name__, self.failures[name], self.max_failures)
            self._kill_all(name)  # a sharded agent restarts as a whole group: its ranks share one process group
            self._create_agent(name)
            if name not in self.restore_dirs:
                return
            try:
                ray.get([actor.load.remote(self.restore_dirs[name]) for actor in self.ranks[name]], timeout=self.stage_timeout_s)
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
        pending: dict[Any, tuple[str, int]] = {}  # call ref -> (agent, rank)
        answers: dict[str, dict[int, tuple[Any, float, float]]] = {}  # a sharded agent's ranks that answered

        def submit(agent: str) -> None:
            call = calls[agent]
            answers[agent] = {}
            for rank, actor in enumerate(self.ranks[agent]):
                ref = actor.call.remote(call.method, *call.args, _threads=call.threads, **(call.kwargs or {}))
                pending[ref] = (agent, rank)

        def redo(agent: str, error: Exception, rank: int) -> None:
            for ref in [r for r, (a, _) in pending.items() if a == agent]:  # its other ranks' calls die with it
                del pending[ref]
            self._recover(agent, stage, error, rank)
            submit(agent)

        for agent in calls:
            if agent not in self.handles:
                raise StageError(f"stage {stage}: unknown agent {agent!r}")
            submit(agent)
        deadline = start + timeout_s
        while pending:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:  # a hung actor is treated like a dead one: restart it, redo its call
                slow = sorted({agent: rank for agent, rank in pending.values()}.items())
                for agent, rank in slow:
                    redo(agent, TimeoutError(f"no answer within {timeout_s:g}s"), rank)
                deadline = time.perf_counter() + timeout_s
                continue
            # short waits: step records are drained as they come (per-step metrics, progress, ETA)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=min(remaining, STEP_DRAIN_S))
            if not ready:
                self.drain_steps()
            for ref in ready:
                if ref not in pending:  # dropped by a group restart while waiting
                    continue
                agent, rank = pending.pop(ref)
                try:
                    answers[agent][rank] = ray.get(ref, timeout=60)
                except (RayActorError, GetTimeoutError) as exc:
                    if getattr(exc, "actor_init_failed", False):  # its constructor raised (a bad model path...): a restart would too
                        raise AgentStartError(f"stage {stage}: agent {agent} could not start: {init_error_line(exc)}") from None
                    redo(agent, exc, rank)
                    continue
                except RayTaskError as exc:
                    if len(self.ranks[agent]) > 1 and lost_peer(exc):  # a peer rank died under a collective
                        redo(agent, exc, rank)
                        continue
                    raise
                if len(answers[agent]) < len(self.ranks[agent]):
                    continue
                ranked = answers.pop(agent)
                results[agent] = ranked[0][0]  # every rank computed it; rank 0 speaks for the agent
                if calls[agent].method == "info" and len(ranked) > 1:  # where each rank runs (placement log)
                    results[agent] = dict(ranked[0][0], rank_nodes=[ranked[r][0]["node_id"] for r in sorted(ranked)])
                actor_s[agent] = max(seconds for _, seconds, _ in ranked.values())
                actor_cpu_s[agent] = sum(cpu for _, _, cpu in ranked.values())
                if self.progress:
                    self.progress(stage, len(results))
        self.drain_steps()  # the stage's last steps, before its own record
        return StageResult(results, actor_s, time.perf_counter() - start, actor_cpu_s)


# a job whose runtime env picks its own interpreter or packages: its workers must start that way
OWN_INTERPRETER = ("py_executable", "pip", "uv", "conda", "container", "image_uri")


def forks(num_gpus: float, job_env: dict, platform: str = sys.platform) -> bool:
    """Whether an actor may be forked from a zygote of the driver's interpreter (agents.prefork):
    on Linux only (abstract unix sockets, pidfds), not when it holds a GPU (CUDA does not survive a
    fork of a process that touched it), nor when the job's runtime env picks another interpreter or
    environment for its workers."""
    return (platform.startswith("linux") and not num_gpus
            and not any(job_env.get(key) for key in OWN_INTERPRETER))


def init_error_line(exc: RayActorError) -> str:
    """The exception an actor's constructor raised, as its one last line (`module.Type: message`)."""
    lines = [line for line in str(exc.error_msg).splitlines() if line.strip() and not line.startswith(" ")]
    return lines[-1] if lines else type(exc).__name__


DIST_ERRORS = ("DistError", "DistBackendError", "DistNetworkError", "DistStoreError")


def lost_peer(exc: RayTaskError) -> bool:
    """Whether a rank's call failed because the process group broke (a peer rank died or hung):
    torch.distributed's own error types, or gloo's transport errors, which arrive as RuntimeError."""
    cause = getattr(exc, "cause", None)
    if cause is not None and any(c.__name__ in DIST_ERRORS for c in type(cause).__mro__):
        return True
    text = str(cause if cause is not None else exc)
    return "gloo" in text.lower() or "Connection closed by peer" in text or "NCCL" in text
