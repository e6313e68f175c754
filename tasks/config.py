"""Which task a run uses and how big its splits are."""
from __future__ import annotations

from dataclasses import dataclass, field

TASK_NAMES = ("synthetic", "hh_rlhf", "pku_saferlhf", "trl")
SYNTHETIC_OPS = ("reverse", "sort", "count")


class TaskConfigError(ValueError):
    """A bad task setting; the message names the key and the value."""


class TaskDataError(ValueError):
    """A bad data file or row; the message names the file and the line."""


@dataclass
class TaskConfig:
    name: str = "synthetic"  # synthetic | hh_rlhf | pku_saferlhf | trl
    path: str | None = None  # hub id or local .json/.jsonl/.parquet file (real tasks)
    train_split: str = "train"
    test_split: str = "test"
    n_labelled: int = 256  # D_w size (real data: cap, 0 = half of train)
    n_unlabelled: int = 256  # Q_w2s size (real data: cap, 0 = the other half)
    n_test: int = 200  # real data: cap, 0 = all
    harmful_fraction: float = 0.25
    ops: list[str] = field(default_factory=lambda: ["reverse", "sort"])
    min_len: int = 3
    max_len: int = 8
    alphabet: str = "abcdefghij"
    preference: str = "helpful"  # PKU-SafeRLHF: helpful (better_response_id) | safe (safer_response_id)
    on_bad_row: str = "error"  # error | skip (skipped rows are counted in the run's metrics)
    max_prompt_chars: int = 0  # 0 = no limit; longer prompts are skipped and counted

    def validate(self) -> None:
        def bad(key: str, value, why: str) -> None:
            raise TaskConfigError(f"task.{key}={value!r}: {why}")

        if self.name not in TASK_NAMES:
            bad("name", self.name, f"choose one of {TASK_NAMES}")
        for key in ("n_labelled", "n_unlabelled", "n_test", "max_prompt_chars"):
            if getattr(self, key) < 0:
                bad(key, getattr(self, key), "must be >= 0")
        if not 0.0 <= self.harmful_fraction <= 1.0:
            bad("harmful_fraction", self.harmful_fraction, "must be in [0, 1]")
        if self.preference not in ("helpful", "safe"):
            bad("preference", self.preference, "choose helpful or safe")
        if self.on_bad_row not in ("error", "skip"):
            bad("on_bad_row", self.on_bad_row, "choose error or skip")
        if self.name == "synthetic":
            unknown = [op for op in self.ops if op not in SYNTHETIC_OPS]
            if not self.ops or unknown:
                bad("ops", self.ops, f"choose from {SYNTHETIC_OPS}")
            if self.min_len < 1 or self.min_len > self.max_len:
                bad("min_len", self.min_len, f"must be in [1, max_len={self.max_len}]")
            if len(set(self.alphabet)) < 2:
                bad("alphabet", self.alphabet, "needs at least 2 distinct letters")
            for key in ("n_labelled", "n_unlabelled", "n_test"):
                if getattr(self, key) < 1:
                    bad(key, getattr(self, key), "the synthetic task needs at least 1 example per split")
        else:
            if not self.path:
                bad("path", self.path, f"task {self.name} needs a hub id or a local data file")
            import os

            looks_local = self.path.endswith((".json", ".jsonl", ".parquet")) or self.path.startswith(("/", "./", "../"))
            if looks_local and not os.path.exists(self.path):
                bad("path", self.path, "file not found")
