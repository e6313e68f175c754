"""Real preference datasets through `datasets`: HH-RLHF, PKU-SafeRLHF and TRL's generic format.

A path that exists (or ends in .json/.jsonl/.parquet) is a local file; anything else is a hub id.
Every row is parsed into a PreferenceExample; a malformed row either stops the run with the file and
row number (`on_bad_row: error`) or is skipped and counted (`skip`): nothing is dropped silently.
Splits follow the MACPO paper: train shuffled and halved into D_w (labelled) and Q_w2s (prompts).
"""
from __future__ import annotations

import os
import random
from typing import Any, Callable, Iterable

from tasks.config import TaskConfig, TaskConfigError, TaskDataError
from tasks.types import PreferenceExample, TaskData

ASSISTANT = "\n\nAssistant:"
HUMAN = "\n\nHuman:"
LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
HELD_OUT_FRACTION = 0.1  # local files have no test split: this share of rows is held out


class BadRowError(ValueError):
    """One row that cannot be parsed; the loader adds file and row number."""


def _text(row: dict, key: str) -> str:
    # a json file with a key missing in some rows reaches us as None in those rows (schema union)
    if row.get(key) is None:
        raise BadRowError(f"missing key {key!r}")
    value = row[key]
    if not isinstance(value, str):
        raise BadRowError(f"key {key!r} is {type(value).__name__}, expected a string")
    return value


def parse_hh(row: dict, cfg: TaskConfig) -> PreferenceExample:
    """HH-RLHF: two full transcripts sharing everything up to the last Assistant turn."""
    chosen, rejected = _text(row, "chosen"), _text(row, "rejected")
    cut_c, cut_r = chosen.rfind(ASSISTANT), rejected.rfind(ASSISTANT)
    if cut_c < 0 or cut_r < 0:
        raise BadRowError("transcript has no Assistant turn")
    prompt = chosen[: cut_c + len(ASSISTANT)]
    if rejected[: cut_r + len(ASSISTANT)] != prompt:
        raise BadRowError("chosen and rejected transcripts differ before the last Assistant turn")
    pos, neg = chosen[cut_c + len(ASSISTANT) :].strip(), rejected[cut_r + len(ASSISTANT) :].strip()
    if not pos or not neg:
        raise BadRowError("empty final response")
    turns = prompt.count(HUMAN)
    return PreferenceExample(prompt.lstrip("\n"), pos, neg, {"turns": turns})


def parse_pku(row: dict, cfg: TaskConfig) -> PreferenceExample:
    """PKU-SafeRLHF: two responses; chosen by `better_response_id` (helpful) or `safer_response_id` (safe)."""
    prompt = _text(row, "prompt")
    responses = [_text(row, "response_0"), _text(row, "response_1")]
    key = "better_response_id" if cfg.preference == "helpful" else "safer_response_id"
    if row.get(key) is None:
        raise BadRowError(f"missing key {key!r}")
    better = row[key]
    if better not in (0, 1) or isinstance(better, bool):
        raise BadRowError(f"{key}={better!r}, expected 0 or 1")
    if not responses[0].strip() or not responses[1].strip():
        raise BadRowError("empty response")
    meta = {k: row[k] for k in ("is_response_0_safe", "is_response_1_safe") if k in row}
    return PreferenceExample(prompt, responses[better], responses[1 - better], meta)


def _message_text(value: Any, key: str, want_last_assistant: bool) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        if want_last_assistant:
            replies = [m["content"] for m in value if m.get("role") == "assistant"]
            if not replies:
                raise BadRowError(f"{key!r} has no assistant message")
            return replies[-1]
        return "\n".join(f"{m.get('role', 'user')}: {m['content']}" for m in value)
    raise BadRowError(f"key {key!r} is neither a string nor a list of messages")


def parse_trl(row: dict, cfg: TaskConfig) -> PreferenceExample:
    """TRL preference format: prompt / chosen / rejected, as strings or chat messages."""
    for key in ("prompt", "chosen", "rejected"):
        if row.get(key) is None:
            raise BadRowError(f"missing key {key!r}")
    prompt = _message_text(row["prompt"], "prompt", want_last_assistant=False)
    pos = _message_text(row["chosen"], "chosen", want_last_assistant=True)
    neg = _message_text(row["rejected"], "rejected", want_last_assistant=True)
    if not prompt.strip() or not pos.strip() or not neg.strip():
        raise BadRowError("empty prompt or response")
    return PreferenceExample(prompt, pos, neg)


PARSERS: dict[str, Callable[[dict, TaskConfig], PreferenceExample]] = {
    "hh_rlhf": parse_hh, "pku_saferlhf": parse_pku, "trl": parse_trl,
}


def is_local(path: str) -> bool:
    return os.path.exists(path) or path.endswith(tuple(LOCAL_BUILDERS))


def load_rows(path: str, split: str) -> Iterable[dict]:
    """Rows of a local json/jsonl/parquet file or of a hub dataset split (via `datasets`)."""
    import datasets

    if is_local(path):
        ext = os.path.splitext(path)[1]
        if not os.path.isfile(path):
            raise TaskConfigError(f"task.path={path!r}: file not found")
        if ext not in LOCAL_BUILDERS:
            raise TaskConfigError(f"task.path={path!r}: unsupported file type {ext!r} (use .json, .jsonl or .parquet)")
        if os.path.getsize(path) == 0:
            raise TaskDataError(f"{path}: empty file")
        try:
            return datasets.load_dataset(LOCAL_BUILDERS[ext], data_files=path, split="train")
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors are long; keep the gist
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TaskDataError(f"{path}: cannot be read as {LOCAL_BUILDERS[ext]}: {reason}") from None
    try:
        return datasets.load_dataset(path, split=split)
    except Exception as exc:  # noqa: BLE001
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TaskDataError(f"dataset {path!r} split {split!r} cannot be loaded: {reason}") from None


def parse_rows(rows: Iterable[dict], source: str, cfg: TaskConfig, stats: dict) -> list[PreferenceExample]:
    """Parse every row; errors name `source` and the 1-based row (= line of a .jsonl file)."""
    parser = PARSERS[cfg.name]
    out = []
    for number, row in enumerate(rows, start=1):
        try:
            example = parser(row, cfg)
        except BadRowError as exc:
            if cfg.on_bad_row == "error":
                raise TaskDataError(f"{source} line {number}: {exc}") from None
            stats["skipped_rows"] = stats.get("skipped_rows", 0) + 1
            reasons = stats.setdefault("skipped_examples", [])
            if len(reasons) < 5:
                reasons.append(f"line {number}: {exc}")
            continue
        if cfg.max_prompt_chars and len(example.prompt) > cfg.max_prompt_chars:
            stats["too_long"] = stats.get("too_long", 0) + 1
            continue
        out.append(example)
    if not out:
        raise TaskDataError(f"{source}: no usable rows (skipped {stats.get('skipped_rows', 0)}, "
                                 f"too long {stats.get('too_long', 0)})")
    return out


def _cap(items: list, n: int) -> list:
    return items[:n] if n else items


def load_real_task(cfg: TaskConfig, seed: int) -> TaskData:
    """D_w / Q_w2s = halves of shuffled train (capped by n_labelled / n_unlabelled); test from the
    hub's test split, or for a local file the last 10% of its rows (shuffled), held out first."""
    stats: dict = {"source": cfg.path}
    rows = parse_rows(load_rows(cfg.path, cfg.train_split), cfg.path, cfg, stats)
    rng = random.Random(seed)
    if is_local(cfg.path):
        rng.shuffle(rows)
        n_test = max(1, int(len(rows) * HELD_OUT_FRACTION))
        test, train = rows[-n_test:], rows[:-n_test]
    else:
        test_stats: dict = {}
        test = parse_rows(load_rows(cfg.path, cfg.test_split), f"{cfg.path}[{cfg.test_split}]", cfg, test_stats)
        stats["test"] = test_stats
        train = rows
        rng.shuffle(train)
    if len(train) < 2:
        raise TaskDataError(f"{cfg.path}: {len(train)} training rows; need at least 2 to split D_w / Q_w2s")
    half = len(train) // 2
    d_w = _cap(train[:half], cfg.n_labelled)
    q_w2s = [ex.prompt for ex in _cap(train[half:], cfg.n_unlabelled)]
    stats.update(rows=len(rows), d_w=len(d_w), q_w2s=len(q_w2s), test=len(_cap(test, cfg.n_test)))
    return TaskData(name=cfg.name, d_w=d_w, q_w2s=q_w2s, test=_cap(test, cfg.n_test), has_rule_reward=False, stats=stats)
