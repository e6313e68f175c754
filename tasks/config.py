"""Which task a run uses and how big its splits are.

`TaskConfig.validate()` runs before any data is touched so that a bad setting stops a run with one
line naming the key (`task.harmful_fraction=1.5: must be in [0, 1]`), never a traceback from deep in
a loader.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tasks.errors import BadInput

TASK_NAMES = ("synthetic", "hh_rlhf", "pku_saferlhf", "trl")
SYNTHETIC_OPS = ("reverse", "sort", "count")
MAX_HARM_WORDS = 12  # len(tasks.synthetic.HARM_WORDS); kept here so config does not import the generator
# a local data file is one of these formats (the `datasets` builder that reads it) ...
DATA_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
# ... optionally compressed (read through fsspec's decompressors, as `datasets` does)
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
_LOWERCASE = set("abcdefghijklmnopqrstuvwxyz")


class TaskConfigError(BadInput, ValueError):
    """A bad task setting; the message names the key and the value."""


class TaskDataError(BadInput, ValueError):
    """A bad data file or row; the message names the file (or hub id) and the line or row."""


def data_file_format(path: str) -> tuple[str, str | None] | None:
    """(datasets builder, compression) of a data file name, e.g. train.jsonl.gz -> ("json", "gzip");
    None when the name is not a supported data file."""
    lower = path.lower()
    compression = next((name for ext, name in COMPRESSIONS.items() if lower.endswith(ext)), None)
    if compression:
        lower = lower[: lower.rfind(".")]
    builder = next((b for ext, b in DATA_FORMATS.items() if lower.endswith(ext)), None)
    return (builder, compression) if builder else None


def looks_local(path: str) -> bool:
    """A path the user means as a file on this machine (not a hub id): it exists, has a data-file
    suffix, or is written as a path. Shared by validation and the loaders so both agree."""
    return (os.path.exists(path) or data_file_format(path) is not None
            or path.startswith(("/", "./", "../", "~")))


@dataclass
class TaskConfig:
    """Which data a run uses and how it is split into D_w, Q_w2s and test."""

    name: str = "synthetic"  # synthetic | hh_rlhf | pku_saferlhf | trl
    path: str | None = None  # hub id or local data file: .json/.jsonl/.parquet/.csv/.arrow, optionally .gz/.bz2/.xz/.zst
    subset: str | None = None  # hub dataset configuration (load_dataset's `name`), e.g. PKU-SafeRLHF "default"
    data_dir: str | None = None  # folder inside a hub dataset, e.g. Anthropic/hh-rlhf "helpful-base"
    train_split: str = "train"  # hub/directory split halved into D_w and Q_w2s
    test_split: str = "test"  # hub/directory split evaluated every round
    n_labelled: int = 256  # D_w size (real data: cap, 0 = half of train)
    n_unlabelled: int = 256  # Q_w2s size (real data: cap, 0 = the other half)
    n_test: int = 200  # real data: cap, 0 = all
    # real data: share of the shuffled training rows that become D_w (the rest: Q_w2s). MACPO's
    # paper halves them; WSPO learns from labelled pairs only, and its authors use every row (1.0)
    labelled_share: float = 0.5
    harmful_fraction: float = 0.25  # synthetic: share of prompts with a trigger word (answer: the refusal)
    # share of benign D_w pairs whose chosen answer is itself a near miss (one letter wrong), against a
    # worse rejected one (two letters wrong): chosen is only *better*, as in real preference data
    chosen_noise: float = 0.0
    # the kind of D_w's rejected answers on benign prompts: the share that is the refusal (an alignment
    # failure: over-refusal) rather than a capability error, and the share of capability errors that
    # answer another operation on the same letters (the rest: one letter wrong)
    over_refusal_rejected: float = 0.0
    rejected_other_op: float = 0.5
    # how hard harmlessness is to learn: how many distinct trigger words mark harmful requests (3 = the
    # words the tiny bases saw in pre-training, up to 12), and the share of benign prompts that carry a
    # harmless look-alike word in the trigger's place (refusal must depend on which word, not on one being there)
    harm_words: int = 3
    decoy_fraction: float = 0.0
    ops: list[str] = field(default_factory=lambda: ["reverse", "sort"])  # synthetic: string operations asked for
    min_len: int = 3  # synthetic: shortest letter string of a prompt
    max_len: int = 8  # synthetic: longest letter string of a prompt
    alphabet: str = "abcdefghij"  # synthetic: letters prompts are drawn from
    preference: str = "helpful"  # PKU-SafeRLHF: helpful (better_response_id) | safe (safer_response_id)
    on_bad_row: str = "error"  # error | skip (skipped rows are counted in the task's stats)
    max_prompt_chars: int = 0  # 0 = no limit; longer prompts are skipped and counted

    def validate(self) -> None:
        """Raise TaskConfigError naming the first bad key and its value."""

        def bad(key: str, value: Any, why: str) -> None:
            raise TaskConfigError(f"task.{key}={value!r}: {why}")

        for key in ("name", "train_split", "test_split", "alphabet", "preference", "on_bad_row"):
            if not isinstance(getattr(self, key), str):
                bad(key, getattr(self, key), "must be a string")
        if self.name not in TASK_NAMES:
            bad("name", self.name, f"choose one of {TASK_NAMES}")
        for key in ("n_labelled", "n_unlabelled", "n_test", "max_prompt_chars", "min_len", "max_len"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                bad(key, value, "must be an integer")
            if value < 0:
                bad(key, value, "must be >= 0")
        for key in ("harmful_fraction", "chosen_noise", "over_refusal_rejected", "rejected_other_op", "decoy_fraction"):
            fraction = getattr(self, key)
            if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0.0 <= fraction <= 1.0:
                bad(key, fraction, "must be in [0, 1]")
        share = self.labelled_share
        if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0.0 < share <= 1.0:
            bad("labelled_share", share, "must be in (0, 1]")
        if self.preference not in ("helpful", "safe"):
            bad("preference", self.preference, "choose helpful or safe")
        if self.on_bad_row not in ("error", "skip"):
            bad("on_bad_row", self.on_bad_row, "choose error or skip")
        if self.name == "synthetic":
            self._validate_synthetic(bad)
        else:
            self._validate_real(bad)

    def _validate_synthetic(self, bad) -> None:
        ops = self.ops
        if not isinstance(ops, (list, tuple)) or not ops or any(op not in SYNTHETIC_OPS for op in ops):
            bad("ops", ops, f"a non-empty list from {SYNTHETIC_OPS}")
        if self.min_len < 1 or self.min_len > self.max_len:
            bad("min_len", self.min_len, f"must be in [1, max_len={self.max_len}]")
        # prompts are parsed back with a regex over lowercase letters: other characters could not be
        # told apart from the prompt's own syntax (`: ` and `=`)
        if len(set(self.alphabet)) < 2 or not set(self.alphabet) <= _LOWERCASE:
            bad("alphabet", self.alphabet, "needs at least 2 distinct lowercase letters a-z")
        if not isinstance(self.harm_words, int) or isinstance(self.harm_words, bool) \
                or not 1 <= self.harm_words <= MAX_HARM_WORDS:
            bad("harm_words", self.harm_words, f"must be an integer in [1, {MAX_HARM_WORDS}]")
        for key in ("n_labelled", "n_unlabelled", "n_test"):
            if getattr(self, key) < 1:
                bad(key, getattr(self, key), "the synthetic task needs at least 1 example per split")

    def _validate_real(self, bad) -> None:
        if not self.path or not isinstance(self.path, str):
            bad("path", self.path, f"task {self.name} needs a hub id or a local data file ({', '.join(DATA_FORMATS)}, "
                                   f"optionally {', '.join(COMPRESSIONS)})")
        for key in ("subset", "data_dir"):
            if getattr(self, key) is not None and not (isinstance(getattr(self, key), str) and getattr(self, key)):
                bad(key, getattr(self, key), "must be a non-empty string or null")
        if looks_local(self.path):
            local = os.path.expanduser(self.path)
            if not os.path.exists(local):
                bad("path", self.path, "file not found")
            if os.path.isfile(local) and data_file_format(local) is None:
                bad("path", self.path, f"unsupported file type; use {', '.join(DATA_FORMATS)}, optionally compressed "
                                       f"({', '.join(COMPRESSIONS)})")
            if os.path.isfile(local) and (self.subset or self.data_dir):
                bad("subset" if self.subset else "data_dir", self.subset or self.data_dir,
                    "applies to hub datasets and directories, not to a single file")
