"""Experiment trackers: the run's metrics in TensorBoard, Weights & Biases and MLflow, beside the
run directory's own `metrics.jsonl` (always written).

Names are namespaced as verl's: `eval/<agent>/<metric>` and `baseline/<name>/<metric>` at the round,
`pgr/<key>` at the round, `train/<agent>/<metric>` at the agent's global optimizer step, and
`timing_s/<stage>` at the round; the run's config is logged as hyper-parameters, and each round's
answers to the first test prompts as a table `samples/round_<N>` (a W&B table, an MLflow table
artifact, TensorBoard text). Each backend's
package is optional and imported only when asked for; `check_installed` turns a missing one into
one line at start naming the extra to install.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

BACKENDS = {"jsonl": None, "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # name -> module


@dataclass
class LoggingConfig:
    """Where a run's metrics go besides metrics.jsonl."""

    backends: list[str] = field(default_factory=lambda: ["jsonl"])  # jsonl | tensorboard | wandb | mlflow
    project: str = "w2s-ray"  # W&B project / MLflow experiment
    run_name: str | None = None  # None: the run directory's name
    mlflow_tracking_uri: str | None = None  # e.g. http://mlflow:5000, sqlite:///mlflow.db; None: $MLFLOW_TRACKING_URI, else a file store in <run_dir>/mlruns
    wandb_mode: str | None = None  # online | offline | disabled (None: W&B's own default / $WANDB_MODE)
    # runs that belong together (a sweep sets its name): W&B's group, an MLflow tag
    group: str | None = None
    tags: list[str] = field(default_factory=list)  # W&B tags and MLflow tags (a sweep adds setting:<name>, seed:<n>)
    wandb_entity: str | None = None  # W&B team or user (None: the logged-in default)


def validate(cfg: LoggingConfig) -> str | None:
    """The first problem with the settings, as '<key>=<value>: why', or None."""
    unknown = [b for b in cfg.backends if b not in BACKENDS]
    if unknown:
        return f"logging.backends={cfg.backends!r}: unknown {unknown}; choose from {list(BACKENDS)}"
    if cfg.wandb_mode not in (None, "online", "offline", "disabled"):
        return f"logging.wandb_mode={cfg.wandb_mode!r}: choose online, offline or disabled"
    return None


def check_installed(cfg: LoggingConfig) -> str | None:
    """One line naming a backend whose package is missing and the extra that brings it, or None."""
    for name in cfg.backends:
        module = BACKENDS.get(name)
        if module and importlib.util.find_spec(module) is None:
            return f"logging.backends includes {name!r} but {module} is not installed; pip install '.[trackers]'"
    return None


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {'a/b/c': value} (lists and None as JSON text), for hyper-parameters."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}/{key}" if prefix else str(key)))
        return out
    return {prefix: data if isinstance(data, (int, float, str, bool)) else json.dumps(data)}


class Tracker(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int, axis: str) -> None: ...

    def log_table(self, name: str, rows: list[dict], step: int) -> None: ...

    def close(self) -> None: ...


def markdown_table(rows: list[dict]) -> str:
    columns = list(rows[0]) if rows else []
    cells = [[str(row[c]).replace("|", "\\|").replace("\n", " ") for c in columns] for row in rows]
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
                     + ["| " + " | ".join(line) + " |" for line in cells])


class TensorBoardTracker:
    """Event files under <run_dir>/tensorboard (read them with `tensorboard --logdir`)."""

    def __init__(self, run_dir: Path, cfg: LoggingConfig):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log_params(self, params):
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(params.items())), 0)

    def log_metrics(self, metrics, step, axis):
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def log_table(self, name, rows, step):
        self.writer.add_text(name, markdown_table(rows), step)
        self.writer.flush()

    def close(self):
        self.writer.close()


class WandbTracker:
    """One W&B run; every metric family has its own x axis (`round`, or the agent's train step),
    since W&B accepts only increasing steps on its default axis."""

    def __init__(self, run_dir: Path, cfg: LoggingConfig):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=cfg.project, name=cfg.run_name or run_dir.name, dir=str(run_dir),
                              mode=cfg.wandb_mode, reinit="create_new", group=cfg.group, tags=list(cfg.tags) or None,
                              entity=cfg.wandb_entity)
        self.axes: set[str] = set()

    def log_params(self, params):
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics, step, axis):
        for name in metrics:
            family = name.rsplit("/", 1)[0]
            if family not in self.axes:
                self.axes.add(family)
                self.run.define_metric(axis)
                self.run.define_metric(f"{family}/*", step_metric=axis)
        self.run.log({axis: step, **metrics})

    def log_table(self, name, rows, step):
        columns = list(rows[0]) if rows else []
        self.run.log({name: self.wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])})

    def close(self):
        self.run.finish()


class MlflowTracker:
    """One MLflow run in `logging.project` as experiment, through the client with an explicit run id
    (the orchestrator actor is threaded, and mlflow's fluent "active run" is per thread)."""

    def __init__(self, run_dir: Path, cfg: LoggingConfig):
        import os

        from mlflow.tracking import MlflowClient

        uri = cfg.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri is None:  # a file store beside the run: nothing to set up (MLflow would rather have a database)
            uri = (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(cfg.project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(cfg.project)
        tags = {**({"group": cfg.group} if cfg.group else {}), **{tag: "true" for tag in cfg.tags}}
        self.run_id = self.client.create_run(experiment_id, run_name=cfg.run_name or run_dir.name, tags=tags).info.run_id

    def log_params(self, params):
        from mlflow.entities import Param

        items = [Param(k, str(v)[:500]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics, step, axis):
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_table(self, name, rows, step):
        columns = list(rows[0]) if rows else []
        self.client.log_table(self.run_id, data={c: [row[c] for row in rows] for c in columns}, artifact_file=f"{name}.json")

    def close(self):
        self.client.set_terminated(self.run_id)


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


class Trackers:
    """Every configured tracker behind one call per kind of event."""

    def __init__(self, cfg: LoggingConfig, run_dir: Path, params: dict[str, Any]):
        self.trackers: list[Tracker] = [TRACKERS[name](run_dir, cfg) for name in cfg.backends if name in TRACKERS]
        flat = flatten(params)
        for tracker in self.trackers:
            tracker.log_params(flat)

    def _log(self, metrics: dict[str, float], step: int, axis: str) -> None:
        if metrics:
            for tracker in self.trackers:
                tracker.log_metrics(metrics, step, axis)

    def log_round(self, record: dict, summary: dict) -> None:
        """Eval, baselines and PGR at the round's index."""
        index = record["round"]
        metrics = {f"eval/{agent}/{name}": float(value) for agent, values in record["eval"].items()
                   for name, value in values.items() if _number(value)}
        metrics.update({f"baseline/{label}/{name}": float(value) for label, values in summary.get("baselines", {}).items()
                        if isinstance(values, dict) for name, value in values.items() if _number(value)})
        metrics.update({f"pgr/{key}": float(value) for key, value in (summary.get("pgr") or {}).items() if _number(value)})
        self._log(metrics, index, "round")

    def log_samples(self, round_index: int, rows: list[dict]) -> None:
        """A round's answers to the first test prompts (agent, prompt, answer, reference, score)."""
        if rows:
            for tracker in self.trackers:
                tracker.log_table(f"samples/round_{round_index}", rows, round_index)

    def log_stage(self, stage: str, round_index: int, wall_s: float, train: dict[str, dict]) -> None:
        """The stage's wall time at the round (its agents' steps arrived one by one: `log_steps`)."""
        self._log({f"timing_s/{stage}": wall_s}, round_index, "round")

    def log_steps(self, rows: list[dict]) -> None:
        """Each optimizer step's metrics (loss, lr, grad norm, tokens/s, margins...) at the agent's
        run-wide step."""
        skip = {"step", "total_steps", "global_step", "round"}
        for row in rows:
            agent = row["agent"]
            metrics = {f"train/{agent}/{name}": float(value) for name, value in row.items()
                       if _number(value) and name not in skip}
            self._log(metrics, row["global_step"], f"train_step/{agent}")

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
