"""`AgentActor`: the Agent inside a Ray actor, so teachers and the student train in parallel.

The wrapper adds nothing but process isolation and placement: every method forwards to the plain
`Agent`, and only texts, token ids and floats cross the boundary (adapters are written to the run
directory, local or a storage URI, by the agent itself). `torch.set_num_threads` keeps fractional-CPU actors from
oversubscribing the machine's cores.
"""
from __future__ import annotations

import contextlib
import os
import resource
import time
from typing import Any

import ray

from agents import storage
from agents.config import SCHEDULERS
from agents.prefork import forked_from_zygote


def lower_priority(nice: int, scheduler: str) -> None:
    """Lower this process's CPU priority on a shared node (never raise it: that needs root).

    `nice` is added to the niceness Ray gives its workers. `scheduler: idle` (Linux SCHED_IDLE) runs
    the actor only on cycles nobody else at normal priority wants: a node's critical-path agent keeps
    a whole core while idle-scheduled agents share the rest, which niceness alone cannot do once Ray
    has niced every worker. Applies to the thread that runs the agent's calls and the torch threads
    it starts. Off Linux, `idle` falls back to the lowest niceness."""
    if nice:
        os.nice(nice)
    if scheduler == "normal":
        return
    policy = getattr(os, f"SCHED_{scheduler.upper()}", None)
    if policy is None or not hasattr(os, "sched_setscheduler"):
        if scheduler == "idle":
            os.nice(19 - os.nice(0))
        return
    os.sched_setscheduler(0, policy, os.sched_param(0))


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run the block with `count` torch intra-op threads, then restore the actor's own count."""
    if not count:
        yield
        return
    import torch

    own = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(own)


def scheduler_name() -> str:
    """This thread's scheduling policy, by the names of SCHEDULERS (`other` where none matches)."""
    if not hasattr(os, "sched_getscheduler"):
        return "normal"
    policy = os.sched_getscheduler(0)
    return next((name for name in SCHEDULERS if getattr(os, f"SCHED_{name.upper()}", None) == policy
                 or (name == "normal" and policy == getattr(os, "SCHED_OTHER", None))), "other")


FLUSH_S = 1.0  # an agent sends its buffered step records at most this often (and when its call ends)


class StepSender:
    """The agent's side: buffers step records and sends them in batches, never waiting for an answer."""

    def __init__(self, step_log: Any, agent: str):
        self.step_log, self.agent, self.clock = step_log, agent, time.monotonic
        self.buffer: list[dict[str, Any]] = []
        self.sent_at = self.clock()

    def __call__(self, record: dict[str, Any]) -> None:
        self.buffer.append(record)
        if self.clock() - self.sent_at >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.step_log.extend.remote(self.agent, self.buffer)
            self.buffer = []
        self.sent_at = self.clock()


class _Host:
    """Holds one model object (`self.target`); `call` runs a method and reports how long it took."""

    HOST_METHODS = ("info", "ping", "peak_rss_mib")
    name: str
    target: Any

    def call(self, method: str, *args: Any, _threads: int | None = None, **kwargs: Any) -> tuple[Any, float, float]:
        """Run a method; return (result, wall seconds, CPU seconds of this process).

        Both are reported because actors sharing cores wait for them: wall time then overstates
        the compute an actor did, CPU time does not. `_threads` runs this one call with that many
        torch threads (an agent computing alone may use the cores the others leave idle)."""
        start, cpu_start = time.perf_counter(), time.process_time()
        target = self if method in self.HOST_METHODS else self.target
        with torch_threads(_threads):
            result = getattr(target, method)(*args, **kwargs)
        return result, time.perf_counter() - start, time.process_time() - cpu_start

    def ping(self) -> str:
        return self.name

    @staticmethod
    def peak_rss_mib() -> float:
        """This actor process's peak resident memory (Linux reports ru_maxrss in KiB)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _AgentHost(_Host):
    """Holds one Agent (a teacher or the student)."""

    def __init__(self, name: str, spec: dict, cache_dir: str | None = None, num_threads: int = 1, seed: int = 0,
                 storage_options: dict | None = None, nice: int = 0, scheduler: str = "normal", max_new_tokens: int = 0,
                 step_log: Any = None, load_weights: bool = True):
        self.name = name
        lower_priority(nice, scheduler)  # on a shared node the critical-path agent keeps its core
        storage.configure(storage_options)  # this actor writes its own checkpoints to the run's storage
        from agents.agent import Agent  # here, not at import: the orchestrator's process never loads torch

        self.agent = self.target = Agent(name, spec, cache_dir=cache_dir, num_threads=num_threads, seed=seed,
                                         max_new_tokens=max_new_tokens, load_weights=load_weights)
        self.step_sender = None
        if step_log is not None:  # each optimizer step's metrics, sent in batches without waiting (orchestrator.step_log)
            self.step_sender = self.agent.step_sink = StepSender(step_log, name)
        self.rank = 0
        self.join_error: str | None = None

    # a sharded agent's ranks (agents.sharding): rank 0 reports where to meet, every rank joins there
    @staticmethod
    def rendezvous() -> tuple[str, int]:
        from agents.sharding import rendezvous_address

        return rendezvous_address()

    def join_group(self, rank: int, world_size: int, address: tuple[str, int], reserved_adapters: tuple[str, ...],
                   timeout_s: float) -> None:
        """Join the agent's process group and shard the model (the pool sends this right after
        creating the ranks; their first call runs after it)."""
        from agents.sharding import RankInfo

        self.rank = rank
        try:
            self.agent.join_group(RankInfo(rank, world_size, address[0], address[1], timeout_s=timeout_s),
                                  reserved_adapters)
        except Exception as exc:  # noqa: BLE001 - kept: every later call reports it
            self.join_error = f"{self.name} rank {rank} of {world_size} could not join its group at {address[0]}:{address[1]}: {exc}"
            raise

    def call(self, method: str, *args: Any, _threads: int | None = None, **kwargs: Any) -> tuple[Any, float, float]:
        if self.join_error:
            raise RuntimeError(self.join_error)
        try:
            return super().call(method, *args, _threads=_threads, **kwargs)
        finally:
            if self.step_sender is not None:
                self.step_sender.flush()  # the call's last steps reach the log before its answer does

    def info(self) -> dict:
        import torch

        return {"name": self.name, "rank": self.rank, "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "nice": os.nice(0), "scheduler": scheduler_name(), "torch_threads": torch.get_num_threads(),
                "forked": forked_from_zygote(),
                "model_path": self.agent.model_path, "adapters": self.agent.adapters, "device": str(self.agent.device), "stats": dict(self.agent.stats)}

    # direct forwards for interactive use from a driver or Ray client
    def generate(self, *args, **kwargs):
        return self.agent.generate(*args, **kwargs)

    def logprobs(self, *args, **kwargs):
        return self.agent.logprobs(*args, **kwargs)

    def perplexity(self, *args, **kwargs):
        return self.agent.perplexity(*args, **kwargs)

    def train(self, *args, **kwargs):
        return self.agent.train(*args, **kwargs)

    def save(self, directory: str) -> None:
        self.agent.save(directory)

    def load(self, directory: str) -> None:
        self.agent.load(directory)


AgentActor = ray.remote(_AgentHost)


class _RewardModelHost(_Host):
    """Holds the run's reward model; evaluation sends it every agent's test answers at once."""

    def __init__(self, name: str, spec: dict, cache_dir: str | None = None, num_threads: int = 1, seed: int = 0,
                 storage_options: dict | None = None, nice: int = 0, scheduler: str = "normal", max_new_tokens: int = 0,
                 step_log: Any = None, load_weights: bool = True):  # (the pool passes every actor its rank's flag)
        self.name = name
        lower_priority(nice, scheduler)
        from agents.reward_model import RewardModel

        self.reward_model = self.target = RewardModel(spec, num_threads=num_threads)

    def info(self) -> dict:
        return {"name": self.name, "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "model_path": self.reward_model.spec.name_or_path,
                "device": str(self.reward_model.device)}

    def score(self, prompts, responses) -> list[float]:
        return self.reward_model.score(prompts, responses)


RewardModelActor = ray.remote(_RewardModelHost)
