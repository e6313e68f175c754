"""The run directory: resolved config, event log, summary, atomic checkpoints and plots.

Layout (a contract users rely on): config.yaml, metrics.jsonl, summary.json, splits.json,
checkpoints/round_<N>/ (and checkpoints/.live/ snapshots), cache/, plots/rewards.png. This class is the
one owner of those paths. The root is a local path or a storage URI (s3://bucket/run, ...):

- local: everything that may be read back on resume is JSON or safetensors, written to a temporary
  name first and renamed; a checkpoint is filled in a temporary folder renamed into place.
- URI: the orchestrator's own files are written to a node-local staging copy and uploaded as they
  change (one whole object each: an object store's PUT is atomic); agents write their checkpoint
  files straight to the store from their nodes, and a round is committed by a marker object written
  after all of them. Resume trusts only committed rounds, so a crash mid-save is never mistaken
  for a checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from agents import storage

CHECKPOINT_PREFIX = "round_"
STATE_FILE = "orchestrator_state.json"
SPLITS_FILE = "splits.json"  # the run's data splits, read back on resume
COMMIT_MARKER = "COMMITTED"  # on object stores: written last, after every file of the checkpoint


STORAGE_ENV = "W2S_STORAGE"  # where runs go when a job's config names no absolute output_dir
DEFAULT_STORAGE = "~/w2s-runs"
log = logging.getLogger("orchestrator")


def run_stamp() -> str:
    """A default run name: the start time and a random suffix, so two runs started in the same
    second never share a directory."""
    import uuid

    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def default_output_dir() -> str:
    return os.path.join("runs", run_stamp())


def check_fresh_output_dir(config) -> None:
    """A fresh run never writes into an earlier run's directory: a non-empty `output_dir` (local or
    a storage URI) is refused in one line unless `overwrite_output_dir` is set, which first removes
    what is there (only that directory's own files). `--resume` continues a run instead."""
    from orchestrator.typed_yaml import ConfigError

    target = config.output_dir
    if storage.is_local(target):
        path = storage.local_path(target)
        used = os.path.isdir(path) and any(os.scandir(path)) or (os.path.lexists(path) and not os.path.isdir(path))
    else:
        used = bool(storage.listdir(target))
    if not used:
        return
    if not config.overwrite_output_dir:
        raise ConfigError(f"output_dir={target!r} is not empty (an earlier run?): continue it with --resume {target}, "
                          "choose another output_dir, or set overwrite_output_dir=true to replace it")
    log.warning("overwrite_output_dir: removing what %s holds before this run starts", target)
    storage.remove(target)


def in_ray_working_dir(cwd: str | os.PathLike | None = None) -> bool:
    """Whether this process runs in a Ray job's temporary copy of its working_dir, which Ray deletes
    with the session or when it evicts the package: nothing meant to last may be written there."""
    parts = Path(cwd or os.getcwd()).resolve().parts
    return "working_dir_files" in parts or any(p.startswith("_ray_pkg_") for p in parts)


def storage_root(config) -> str:
    """`storage_root`, else $W2S_STORAGE, else ~/w2s-runs: a storage URI or an absolute path."""
    root = config.storage_root or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    return root.rstrip("/") if storage.is_uri(root) else str(Path(os.path.expanduser(root)).resolve())


def ensure_output_dir(config) -> str:
    """The run's output_dir, decided once (the CLI, the API and the controller all ask here):
    unset -> `runs/<timestamp>`, or `<storage root>/<timestamp>` when a storage root is set or the
    run is a Ray job; a relative output_dir inside a job's temporary working_dir is placed under the
    storage root instead (said in one line), so a job's results outlive its session."""
    in_job = in_ray_working_dir()
    if not config.output_dir:
        stamp = run_stamp()
        durable = in_job or config.storage_root or os.environ.get(STORAGE_ENV)
        config.output_dir = storage.join(storage_root(config), stamp) if durable else default_output_dir()
    elif in_job and not storage.is_uri(config.output_dir) and not os.path.isabs(os.path.expanduser(config.output_dir)):
        placed = storage.join(storage_root(config), config.output_dir)
        log.warning("output_dir=%s is relative inside Ray's temporary copy of the working_dir (deleted with the "
                    "session): writing to %s instead (set storage_root or $%s to choose)", config.output_dir, placed,
                    STORAGE_ENV)
        config.output_dir = placed
    return config.output_dir


def shown_path(path: str) -> str:
    """How a run directory is printed: a URI as it is, a local path absolute."""
    return path if storage.is_uri(path) else os.path.abspath(os.path.expanduser(path))


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


class RunDirectoryClosed(RuntimeError):
    """A write to a run directory after `close()`: the run is being stopped and its files are final."""


class RunDirectory:
    """One run's files. Safe to reopen (resume appends to metrics.jsonl).

    Closed means final: the Orchestrator's `shutdown` runs beside a still-running `run` (the actor
    takes calls concurrently), and on a storage URI a write after close would recreate an empty
    staging folder and upload a metrics.jsonl holding only the new lines over the whole one. Every
    write after `close()` raises `RunDirectoryClosed` instead."""

    def __init__(self, root: str | os.PathLike):
        root = str(root)
        self.remote = not storage.is_local(root)
        if self.remote:
            self.root = root.rstrip("/")
            # the orchestrator's own files, staged on this node and uploaded as they change
            self.local = Path(storage.scratch_dir("w2s-run-"))
            storage.download(self.root, str(self.local), skip=("checkpoints/",))
        else:
            self.root = str(Path(storage.local_path(root)).resolve())
            self.local = Path(self.root)
            self.local.mkdir(parents=True, exist_ok=True)
        self._published: dict[str, tuple[float, int]] = {}
        self.checkpoints = storage.join(self.root, "checkpoints")
        self.live = storage.join(self.checkpoints, ".live")  # per-agent snapshots after every mutating stage
        self.closed = False

    def close(self) -> None:
        """Upload what changed and drop the node-local staging copy of a run on a storage URI; no
        write is taken afterwards."""
        if self.closed:
            return
        if self.remote:
            self.publish()
        self.closed = True
        if self.remote:
            shutil.rmtree(self.local, ignore_errors=True)

    def _open_for_writes(self) -> None:
        if self.closed:
            raise RunDirectoryClosed(f"{self.root}: the run directory is closed (the run is stopping); not written")

    @property
    def plots(self) -> Path:
        """Where plots are written, then published (refused once closed, like every write)."""
        self._open_for_writes()
        return self.local / "plots"

    @property
    def name(self) -> str:
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    def live_snapshot(self, agent: str, version: int) -> str:
        """Where version `version` of `agent` is saved after a stage that changed it (a restarted
        actor loads the newest complete one)."""
        return storage.join(self.live, f"{agent}-v{version}")

    # ----------------------------------------------------------- files
    def publish(self, relative: str = "") -> None:
        """Upload the staged files under `relative` (all: '') that changed since their last upload;
        nothing to do for a local run."""
        self._open_for_writes()
        if not self.remote:
            return
        base = self.local / relative
        paths = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else []
        for path in paths:
            rel = path.relative_to(self.local).as_posix()
            stat = path.stat()
            if self._published.get(rel) != (stat.st_mtime, stat.st_size):
                storage.upload_file(str(path), storage.join(self.root, rel))
                self._published[rel] = (stat.st_mtime, stat.st_size)

    def write_config(self, config: dict) -> None:
        self._open_for_writes()
        tmp = self.local / ".config.yaml.tmp"
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, self.local / "config.yaml")
        self.publish("config.yaml")

    def read_config(self) -> dict:
        """The run's config.yaml as a mapping; one line naming the file when it is missing or no config."""
        from orchestrator.typed_yaml import ConfigError

        path = self.local / "config.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{self.root} has no config.yaml; is it a run directory?")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"{self.root}/config.yaml: not a readable YAML file ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{self.root}/config.yaml: not a run config (empty or not a mapping)")
        return data

    def log(self, event: str, **fields: Any) -> None:
        self._open_for_writes()
        record = {"time": round(time.time(), 3), "event": event, **fields}
        with open(self.local / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        self.publish("metrics.jsonl")

    def log_many(self, event: str, rows: list[dict]) -> None:
        """Several events of one kind in one write (and one upload on a storage URI)."""
        self._open_for_writes()
        stamp = round(time.time(), 3)
        with open(self.local / "metrics.jsonl", "a") as fh:
            fh.writelines(json.dumps({"time": stamp, "event": event, **row}) + "\n" for row in rows)
        self.publish("metrics.jsonl")

    def write_summary(self, summary: dict) -> None:
        self._open_for_writes()
        write_json_atomic(self.local / "summary.json", summary)
        self.publish("summary.json")

    def write_json(self, relative: str, data: Any) -> None:
        """A JSON file of the run (splits.json, cache/<name>), atomically, then published."""
        self._open_for_writes()
        write_json_atomic(self.local / relative, data)
        self.publish(relative)

    def write_jsonl(self, relative: str, rows: list[dict]) -> None:
        """A JSON-lines file of the run (an evaluation's samples), atomically, then published."""
        self._open_for_writes()
        path = self.local / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        os.replace(tmp, path)
        self.publish(relative)

    def read_json(self, relative: str) -> Any | None:
        """A JSON file written by `write_json` (None when absent)."""
        path = self.local / relative
        return json.loads(path.read_text()) if path.is_file() else None

    # ----------------------------------------------------------- checkpoints
    def new_checkpoint(self, round_index: int) -> str:
        """Where to write round `round_index`'s checkpoint; `commit_checkpoint` makes it count.
        Local: a temporary folder renamed into place. URI: the final prefix, cleared of any
        uncommitted leftovers of an earlier attempt."""
        self._open_for_writes()
        if self.remote:
            target = storage.join(self.checkpoints, f"{CHECKPOINT_PREFIX}{round_index}")
            storage.remove(target)
            return target
        Path(self.checkpoints).mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix=f".{CHECKPOINT_PREFIX}{round_index}.", dir=self.checkpoints)

    def commit_checkpoint(self, written: str, round_index: int, state: dict) -> str:
        self._open_for_writes()  # a round committed after its metrics.jsonl closed would be resumed unlogged
        if self.remote:
            storage.write_json(storage.join(written, STATE_FILE), state)
            storage.write_bytes(storage.join(written, COMMIT_MARKER), b"")
            return written
        write_json_atomic(Path(written) / STATE_FILE, state)
        final = Path(self.checkpoints) / f"{CHECKPOINT_PREFIX}{round_index}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(written, final)
        return str(final)

    def _rounds(self) -> list[int]:
        return checkpoint_rounds(self.root)

    def latest_checkpoint(self) -> str | None:
        """The newest committed checkpoint; partial ones are ignored."""
        for index in reversed(self._rounds()):
            if is_committed(self.root, index):
                return storage.join(self.checkpoints, f"{CHECKPOINT_PREFIX}{index}")
        return None

    def prune_checkpoints(self, keep: set[int]) -> list[int]:
        """Delete the checkpoints of rounds not in `keep`; returns the rounds deleted."""
        self._open_for_writes()
        gone = []
        for index in self._rounds():
            if index not in keep:
                path = storage.join(self.checkpoints, f"{CHECKPOINT_PREFIX}{index}")
                storage.remove(path)
                gone.append(index)
        return gone

    def read_state(self, checkpoint: str) -> dict:
        path = storage.join(checkpoint, STATE_FILE)
        return json.loads(storage.read_text(path))

def checkpoint_rounds(root: str) -> list[int]:
    """The rounds with a checkpoint folder in a run directory (a path or URI), committed or not."""
    names = storage.listdir(storage.join(root, "checkpoints"))
    return sorted(int(n[len(CHECKPOINT_PREFIX):]) for n in names
                  if n.startswith(CHECKPOINT_PREFIX) and n[len(CHECKPOINT_PREFIX):].isdigit())


def is_committed(root: str, index: int) -> bool:
    """Whether round `index`'s checkpoint is complete: on a URI it has the marker written last; a
    local one was renamed into place with its state file."""
    marker = STATE_FILE if storage.is_local(root) else COMMIT_MARKER
    return storage.exists(storage.join(root, "checkpoints", f"{CHECKPOINT_PREFIX}{index}", marker))


def check_keep_best(keep_best: str, rounds: list[dict]) -> None:
    """`checkpoint.keep_best` must name an agent and a metric the first round's evaluation has: a
    typo would otherwise keep nothing extra and let `keep_last` delete the round meant to be kept."""
    from orchestrator.typed_yaml import ConfigError

    if not rounds:
        return
    agent, metric = keep_best.split(".", 1)
    evaluation = rounds[0]["eval"]
    if agent not in evaluation:
        raise ConfigError(f"checkpoint.keep_best={keep_best!r}: no agent {agent!r}; evaluated: {sorted(evaluation)}")
    if metric not in evaluation[agent]:
        raise ConfigError(f"checkpoint.keep_best={keep_best!r}: {agent} has no metric {metric!r}; "
                          f"it has {sorted(evaluation[agent])}")


def retained_rounds(rounds: list[dict], keep_last: int, keep_best: str | None) -> set[int]:
    """Which rounds' checkpoints to keep: the newest `keep_last` (0: all), the round where
    `keep_best` ("<agent>.<metric>" of its eval, higher is better) peaked, and always the newest
    (what a resume starts from)."""
    indices = [r["round"] for r in rounds]
    if not indices:
        return set()
    keep = set(indices if keep_last <= 0 else indices[-keep_last:]) | {indices[-1]}
    if keep_best:
        agent, metric = keep_best.split(".", 1)
        scored = [(r["eval"][agent][metric], r["round"]) for r in rounds if metric in r["eval"].get(agent, {})]
        if scored:
            keep.add(max(scored, key=lambda x: (x[0], -x[1]))[1])  # ties: the earliest round
    return keep


def round_line(record: dict) -> str:
    """`round 1 done in 12.3s: student=0.975  teacher_0=0.864` - one finished round in one line."""
    rewards = "  ".join(f"{a}={m['reward']:.3f}" for a, m in record["eval"].items())
    return f"round {record['round']} done in {record['timing']['wall_s']:.1f}s: {rewards}"
