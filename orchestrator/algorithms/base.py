"""The contract between the controller and an algorithm, and the registry of algorithms.

An algorithm (MACPO, WSPO, ...) decides *what* happens in initialisation and in each round; the
controller (`orchestrator.core.OrchestratorCore`) decides *how*: it runs parallel stages on the
agent actors, times and logs them, snapshots agents, evaluates, checkpoints and resumes. The
algorithm sees only the narrow `Controller` interface below and owns its own state (returned by
`state_dict`, restored by `load_state_dict`, stored in every checkpoint), so adding an algorithm
means one new module with one registered class, and nothing in the controller changes.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from agents.config import ModelSpec
    from orchestrator.calls import Call
    from tasks import TaskData

STUDENT = "student"


class Controller(Protocol):
    """What an algorithm may use of the run: its config, data and agents, and three verbs."""

    config: Any  # the run's RunConfig (typed loosely: config imports this package for its names)
    task: "TaskData"

    @property
    def teachers(self) -> list[str]: ...

    @property
    def agents(self) -> list[str]: ...

    def teacher_spec(self, name: str) -> "ModelSpec": ...

    def stage(self, name: str, work: dict[str, "Call"], mutating: bool = False) -> Any:
        """Run one call per agent in parallel; `.results[agent]` holds each answer."""

    def stage_async(self, name: str, work: dict[str, "Call"], mutating: bool = False) -> Any:
        """Start a stage beside the caller's next ones; returns a Future (`.result()` waits)."""

    def in_background(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)`, a sequence of stages, beside the caller's next ones; returns a Future."""

    def evaluate_baselines(self, jobs: dict[str, tuple[str, str]]) -> None:
        """Evaluate label -> (agent, adapter) now, as soon as that adapter is final, and keep the
        results as the run's baselines (instead of at round 0's evaluation, via `eval_extra`)."""

    def score_answer_sets(self, stage: str, agent: str, method: str, prompts: list[str],
                          answer_sets: list[list[str]]) -> list[list[float]]:
        """Score K answer sets to the same prompts in one call to `agent`."""

    def log_event(self, event: str, **fields: Any) -> None:
        """Append one event to the run's metrics.jsonl."""

    def read_cache(self, name: str) -> Any | None:
        """A JSON value the algorithm cached in the run directory under `name` (None: none)."""

    def write_cache(self, name: str, data: Any) -> None:
        """Cache a JSON value in the run directory (kept with the run, also on a storage URI)."""


class Algorithm(ABC):
    """One weak-to-strong method; a subclass registers itself under `name` with `@register`."""

    name: ClassVar[str]
    can_add_teachers: ClassVar[bool] = True  # may `add_teacher` bring a new teacher in between rounds?
    # adapters besides `default` this method makes on its agents: a sharded agent creates them
    # before FSDP shards its model (parameters cannot be added to a sharded model afterwards)
    adapters: ClassVar[tuple[str, ...]] = ()

    def __init__(self, controller: Controller):
        self.ctl = controller
        self.config = controller.config

    @abstractmethod
    def total_rounds(self) -> int:
        """Rounds after initialisation (round 0 is the state after `initialise`)."""

    @abstractmethod
    def initialise(self) -> None:
        """Everything before round 1 (SFT, negative agents, weak labels, ...)."""

    @abstractmethod
    def round(self, index: int) -> None:
        """Round `index` (1-based); evaluation and the checkpoint follow in the controller."""

    def initialise_teacher(self, name: str) -> None:
        """Bring a teacher added at run time to where the first ones are."""
        raise RuntimeError(f"{self.name} does not support adding teachers at run time")

    def eval_extra(self, index: int) -> dict[str, tuple[str, str]]:
        """Extra (label -> (agent, adapter)) to evaluate after round `index`, e.g. baselines."""
        return {}

    def summary_extra(self, rounds: list[dict], baselines: dict[str, dict]) -> dict:
        """Keys to add to summary.json, computed from the round records and baselines (a key
        `baselines` is merged into the summary's baselines)."""
        return {}

    def state_dict(self) -> dict:
        """Everything the algorithm needs to continue after a resume (JSON-serialisable)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""


REGISTRY: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: make `cls` available as `algorithm: <cls.name>` in configs."""
    REGISTRY[cls.name] = cls
    return cls
