"""The run directory: resolved config, event log, summary, atomic checkpoints and plots.

Layout (a contract users rely on): config.yaml, metrics.jsonl, summary.json, splits.json,
checkpoints/round_<N>/ (and checkpoints/.live/ snapshots), cache/, plots/rewards.png. This class is the
one owner of those paths. Everything that may be read back on resume is JSON or safetensors, written to a
temporary name first and renamed, so a crash never leaves a half-written file that looks complete.
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

CHECKPOINT_PREFIX = "round_"
STATE_FILE = "orchestrator_state.json"


STORAGE_ENV = "W2S_STORAGE"  # where runs go when a job's config names no absolute output_dir
DEFAULT_STORAGE = "~/w2s-runs"
log = logging.getLogger("orchestrator")


def default_output_dir() -> str:
    return os.path.join("runs", datetime.now().strftime("%Y%m%d-%H%M%S"))


def in_ray_working_dir(cwd: str | os.PathLike | None = None) -> bool:
    """Whether this process runs in a Ray job's temporary copy of its working_dir, which Ray deletes
    with the session or when it evicts the package: nothing meant to last may be written there."""
    parts = Path(cwd or os.getcwd()).resolve().parts
    return "working_dir_files" in parts or any(p.startswith("_ray_pkg_") for p in parts)


def storage_root(config) -> Path:
    """`storage_root`, else $W2S_STORAGE, else ~/w2s-runs."""
    return Path(os.path.expanduser(config.storage_root or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE)).resolve()


def ensure_output_dir(config) -> str:
    """The run's output_dir, decided once (the CLI, the API and the controller all ask here):
    unset -> `runs/<timestamp>`, or `<storage root>/<timestamp>` when a storage root is set or the
    run is a Ray job; a relative output_dir inside a job's temporary working_dir is placed under the
    storage root instead (said in one line), so a job's results outlive its session."""
    in_job = in_ray_working_dir()
    if not config.output_dir:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        durable = in_job or config.storage_root or os.environ.get(STORAGE_ENV)
        config.output_dir = str(storage_root(config) / stamp) if durable else default_output_dir()
    elif in_job and not os.path.isabs(os.path.expanduser(config.output_dir)):
        placed = str(storage_root(config) / config.output_dir)
        log.warning("output_dir=%s is relative inside Ray's temporary copy of the working_dir (deleted with the "
                    "session): writing to %s instead (set storage_root or $%s to choose)", config.output_dir, placed,
                    STORAGE_ENV)
        config.output_dir = placed
    return config.output_dir


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


class RunDirectory:
    """One run's files. Safe to reopen (resume appends to metrics.jsonl)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.root / "checkpoints"
        self.plots = self.root / "plots"
        self.splits_file = self.root / "splits.json"  # the run's data splits, read back on resume
        self.live = self.checkpoints / ".live"  # per-agent snapshots after every mutating stage

    def live_snapshot(self, agent: str) -> Path:
        """Where `agent` is saved after each stage that changed it (a restarted actor loads it)."""
        return self.live / agent

    def cache_file(self, name: str) -> Path:
        """A file of derived data an algorithm may cache (e.g. WSPO's weak log-probs)."""
        return self.root / "cache" / name

    # ----------------------------------------------------------- files
    def write_config(self, config: dict) -> None:
        tmp = self.root / ".config.yaml.tmp"
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, self.root / "config.yaml")

    def read_config(self) -> dict:
        path = self.root / "config.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{self.root} has no config.yaml; is it a run directory?")
        return yaml.safe_load(path.read_text())

    def log(self, event: str, **fields: Any) -> None:
        record = {"time": round(time.time(), 3), "event": event, **fields}
        with open(self.root / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.root / "summary.json", summary)

    # ----------------------------------------------------------- checkpoints
    def new_checkpoint(self, round_index: int) -> Path:
        """A temporary directory to fill; `commit_checkpoint` renames it into place."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT_PREFIX}{round_index}.", dir=self.checkpoints))

    def commit_checkpoint(self, tmp: Path, round_index: int, state: dict) -> Path:
        write_json_atomic(tmp / STATE_FILE, state)
        final = self.checkpoints / f"{CHECKPOINT_PREFIX}{round_index}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (has the state file); partial temp dirs are ignored."""
        if not self.checkpoints.is_dir():
            return None
        done = [p for p in self.checkpoints.iterdir()
                if p.name.startswith(CHECKPOINT_PREFIX) and p.name[len(CHECKPOINT_PREFIX):].isdigit()
                and (p / STATE_FILE).is_file()]
        return max(done, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]), default=None)

    def prune_checkpoints(self, keep: set[int]) -> list[int]:
        """Delete the complete checkpoints of rounds not in `keep`; returns the rounds deleted."""
        gone = []
        for path in sorted(self.checkpoints.glob(f"{CHECKPOINT_PREFIX}*")):
            index = path.name[len(CHECKPOINT_PREFIX):]
            if index.isdigit() and int(index) not in keep:
                shutil.rmtree(path)
                gone.append(int(index))
        return gone

    @staticmethod
    def read_state(checkpoint: Path) -> dict:
        return json.loads((checkpoint / STATE_FILE).read_text())

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
