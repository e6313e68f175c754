"""Real preference datasets through `datasets`: HH-RLHF, PKU-SafeRLHF and TRL's generic format.

A path that exists, ends in a data-file suffix (.json/.jsonl/.parquet/.csv/.arrow, optionally
compressed .gz/.bz2/.xz/.zst, as HH-RLHF's own train.jsonl.gz) or is written as a path is local;
anything else is a hub id, optionally with a subset (configuration) and a data_dir (a local
directory is loaded like a hub id, with its own splits). Every row is parsed
into a PreferenceExample; a malformed row either stops the run with the file and line/row number
(`on_bad_row: error`) or is skipped and counted in `stats` (`skip`): nothing is dropped silently.

Splits follow the MACPO paper: the training rows, shuffled by the run's seed, are halved into D_w
(labelled pairs) and Q_w2s (prompts only); the test split is fixed across seeds.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from tasks.config import COMPRESSIONS, DATA_FORMATS, TaskConfig, TaskConfigError, TaskDataError, data_file_format, looks_local
from tasks.types import PreferenceExample, TaskData, prompt_chars, prompt_key

ASSISTANT = "\n\nAssistant:"
HUMAN = "\n\nHuman:"
HELD_OUT_FRACTION = 0.1  # a local file has no test split: its last 10% of rows are held out
TEST_SAMPLE_SEED = 0  # the n_test cap samples with this fixed seed so every run seed sees one test set
MAX_REASONS = 5  # skipped rows keep this many example reasons in stats


class BadRowError(ValueError):
    """One row that cannot be parsed; the loader adds the file and the line/row number."""


# ---------------------------------------------------------------------------------------- parsers


def _text(row: dict, key: str) -> str:
    # a json file with a key missing in some rows reaches us as None in those rows (schema union),
    # so missing and null are one case
    if row.get(key) is None:
        raise BadRowError(f"missing key {key!r}")
    value = row[key]
    if not isinstance(value, str):
        raise BadRowError(f"key {key!r} is {type(value).__name__}, expected a string")
    return value


def parse_hh(row: dict, cfg: TaskConfig) -> PreferenceExample:
    """HH-RLHF: two full transcripts sharing everything up to the last Assistant turn.

    prompt = that shared transcript up to and including the last "\\n\\nAssistant:" (without the
    leading blank line), so a multi-turn dialogue keeps its history; chosen/rejected = the final
    replies, stripped.
    """
    chosen, rejected = _text(row, "chosen"), _text(row, "rejected")
    cut_c, cut_r = chosen.rfind(ASSISTANT), rejected.rfind(ASSISTANT)
    if cut_c < 0:
        raise BadRowError("no Assistant turn in 'chosen'")
    if cut_r < 0:
        raise BadRowError("no Assistant turn in 'rejected'")
    prompt = chosen[: cut_c + len(ASSISTANT)]
    if rejected[: cut_r + len(ASSISTANT)] != prompt:
        raise BadRowError("chosen and rejected transcripts differ before the last Assistant turn")
    tails = {"chosen": chosen[cut_c + len(ASSISTANT) :], "rejected": rejected[cut_r + len(ASSISTANT) :]}
    for key, tail in tails.items():
        if HUMAN in tail:
            raise BadRowError(f"{key!r} ends with a Human turn, not an Assistant reply")
        if not tail.strip():
            raise BadRowError(f"empty final response in {key!r}")
    pos, neg = tails["chosen"].strip(), tails["rejected"].strip()
    return PreferenceExample(prompt.lstrip("\n"), pos, neg, {"turns": prompt.count(HUMAN)})


def _response_id(row: dict, key: str) -> int:
    value = row.get(key)
    if value is None:
        raise BadRowError(f"missing key {key!r}")
    if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1):
        raise BadRowError(f"{key}={value!r}, expected 0 or 1")
    return value


def parse_pku(row: dict, cfg: TaskConfig) -> PreferenceExample:
    """PKU-SafeRLHF: two responses; chosen by `better_response_id` (preference helpful) or
    `safer_response_id` (safe). meta keeps the per-response safety flags where present."""
    prompt = _text(row, "prompt")
    responses = [_text(row, "response_0"), _text(row, "response_1")]
    better = _response_id(row, "better_response_id" if cfg.preference == "helpful" else "safer_response_id")
    for i, response in enumerate(responses):
        if not response.strip():
            raise BadRowError(f"empty response in 'response_{i}'")
    if not prompt.strip():
        raise BadRowError("empty prompt")
    meta = {k: row[k] for k in ("is_response_0_safe", "is_response_1_safe") if row.get(k) is not None}
    return PreferenceExample(prompt, responses[better], responses[1 - better], meta)


def _messages(value: Any, key: str) -> list[dict] | None:
    """A chat message list as TRL writes it, or None when `value` is not a list."""
    if not isinstance(value, list):
        return None
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) \
                or not isinstance(message.get("role"), str):
            raise BadRowError(f"{key!r} message {i} is not a {{'role': str, 'content': str}} message")
    return value


def _conversation(messages: list[dict]) -> list[dict]:
    """The messages a prompt keeps: role and content only (TRL rows may carry more keys)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _last_assistant(messages: list[dict], key: str) -> tuple[int, str]:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            return i, messages[i]["content"]
    raise BadRowError(f"{key!r} has no assistant message")


def _reply(value: Any, key: str) -> str:
    if value is None:
        raise BadRowError(f"missing key {key!r}")
    if isinstance(value, str):
        return value
    messages = _messages(value, key)
    if messages is None:
        raise BadRowError(f"key {key!r} is {type(value).__name__}, expected a string or a list of messages")
    return _last_assistant(messages, key)[1]


def parse_trl(row: dict, cfg: TaskConfig) -> PreferenceExample:
    """TRL preference format: prompt / chosen / rejected as strings or chat messages.

    Conversational rows take the last assistant message as the response and keep a message-list
    prompt as messages (a model's chat template renders it: `template: auto`; the hand templates
    read it as a Human/Assistant transcript). Rows without a prompt column (TRL's implicit-prompt
    format) take the conversation before chosen's last assistant message, which rejected must share.
    """
    pos, neg = _reply(row.get("chosen"), "chosen"), _reply(row.get("rejected"), "rejected")
    raw_prompt = row.get("prompt")
    if raw_prompt is None:
        chosen_msgs, rejected_msgs = _messages(row.get("chosen"), "chosen"), _messages(row.get("rejected"), "rejected")
        if chosen_msgs is None or rejected_msgs is None:
            raise BadRowError("missing key 'prompt'")
        cut_c, cut_r = _last_assistant(chosen_msgs, "chosen")[0], _last_assistant(rejected_msgs, "rejected")[0]
        if chosen_msgs[:cut_c] != rejected_msgs[:cut_r]:
            raise BadRowError("chosen and rejected conversations differ before the last assistant message")
        prompt = _conversation(chosen_msgs[:cut_c])
    elif isinstance(raw_prompt, str):
        prompt = raw_prompt
    else:
        messages = _messages(raw_prompt, "prompt")
        if messages is None:
            raise BadRowError(f"key 'prompt' is {type(raw_prompt).__name__}, expected a string or a list of messages")
        prompt = _conversation(messages)
    if not (prompt if isinstance(prompt, str) else "".join(m["content"] for m in prompt)).strip():
        raise BadRowError("empty prompt")
    for key, reply in (("chosen", pos), ("rejected", neg)):
        if not reply.strip():
            raise BadRowError(f"empty response in {key!r}")
    return PreferenceExample(prompt, pos, neg)


PARSERS: dict[str, Callable[[dict, TaskConfig], PreferenceExample]] = {
    "hh_rlhf": parse_hh, "pku_saferlhf": parse_pku, "trl": parse_trl,
}

# ---------------------------------------------------------------------------------------- reading


@dataclass
class RawRows:
    """Rows of one source, each with where it came from ("line 7" / "row 7") for messages.

    A row is a dict, or a BadRowError for a line that could not even be read as JSON (only in skip
    mode; in error mode load_rows raises at once).
    """

    source: str  # what messages name: the file path as configured, or "hub_id[split]"
    rows: Iterator[tuple[str, dict | BadRowError]]
    count: int


def is_local(path: str) -> bool:
    """A single local data file (a local directory is read like a hub id, with splits)."""
    return looks_local(path) and not os.path.isdir(os.path.expanduser(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause).strip() and ("error occurred" in text or not text):
        text = str(cause).strip()  # DatasetGenerationError hides pyarrow's useful message in its cause
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet_json_builder() -> Iterator[None]:
    """`datasets`' json builder logs its own error before raising; we report it as one line."""
    logger = logging.getLogger("datasets.packaged_modules.json.json")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _open(path: str, compression: str | None):
    """The file's decompressed bytes (fsspec's codecs, the ones `datasets` reads it with)."""
    import fsspec

    handle = fsspec.open(path, "rb", compression=compression).open()
    # zstandard's reader cannot iterate lines itself; a buffer over it can (and costs nothing elsewhere)
    return io.BufferedReader(handle) if compression == "zstd" else handle


def _line_numbers(path: str, compression: str | None) -> tuple[list[int], bool]:
    """1-based numbers of the non-blank lines (pyarrow skips blank lines, so row i is line[i]) and
    whether any line is not UTF-8 (pyarrow reads such a line and fails only when it is used)."""
    numbers, invalid = [], False
    with _open(path, compression) as handle:
        for i, line in enumerate(handle, start=1):
            if line.strip():
                numbers.append(i)
                if not invalid:
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError:
                        invalid = True
    return numbers, invalid


def _is_json_array(path: str, compression: str | None) -> bool:
    with _open(path, compression) as handle:
        for chunk in iter(lambda: handle.read(4096), b""):
            stripped = chunk.lstrip()
            if stripped:
                return stripped[:1] == b"["
    return False


def _read_json_lines(path: str, compression: str | None, source: str,
                     on_bad_row: str) -> Iterator[tuple[str, dict | BadRowError]]:
    """Stdlib fallback for JSON lines `datasets` refused: finds the broken line and, in skip mode,
    keeps every readable one."""
    with _open(path, compression) as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"line {number}"
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:  # never replaced silently: the row is bad
                    raise BadRowError(f"not UTF-8 text (byte {exc.start + 1} of the line)") from None
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise BadRowError(f"not a JSON object: {str(exc).splitlines()[0]}") from None
                if not isinstance(row, dict):
                    raise BadRowError(f"not a JSON object: a JSON {type(row).__name__}")
            except BadRowError as exc:
                if on_bad_row == "error":
                    raise TaskDataError(f"{source} {where}: {exc}") from None
                yield where, exc
                continue
            yield where, row


def _load_local(path: str, source: str, on_bad_row: str) -> RawRows:
    import datasets

    local = os.path.expanduser(path)
    if not os.path.isfile(local):
        raise TaskConfigError(f"task.path={path!r}: file not found")
    fmt = data_file_format(local)
    if fmt is None:
        raise TaskConfigError(f"task.path={path!r}: unsupported file type (use {', '.join(DATA_FORMATS)}, "
                              f"optionally compressed {', '.join(COMPRESSIONS)})")
    builder, compression = fmt
    try:
        json_lines = builder == "json" and not _is_json_array(local, compression)
        lines, invalid_text = _line_numbers(local, compression) if json_lines else ([], False)
    except (OSError, EOFError, ValueError) as exc:  # a corrupt archive, or a codec that is not installed
        raise TaskDataError(f"{source}: cannot be decompressed as {compression}: {_first_line(exc)}") from None
    if os.path.getsize(local) == 0 or (json_lines and not lines):
        raise TaskDataError(f"{source}: empty file")
    if invalid_text:  # read line by line with the stdlib: each bad line named (or skipped and counted)
        rows = list(_read_json_lines(local, compression, source, on_bad_row))
        return RawRows(source, iter(rows), len(rows))
    try:
        with _quiet_json_builder():
            table = datasets.load_dataset(builder, data_files=local, split="train")
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line naming the file
        if not json_lines:
            raise TaskDataError(f"{source}: cannot be read as {builder}: {_first_line(exc)}") from None
        # find the line pyarrow choked on (or, in skip mode, read around it) with the stdlib
        rows = list(_read_json_lines(local, compression, source, on_bad_row))
        return RawRows(source, iter(rows), len(rows))
    if len(table) == 0:
        raise TaskDataError(f"{source}: empty file (no rows)")
    # row i is the i-th non-blank line; if pyarrow ever counted differently, fall back to row numbers
    labels = [f"line {n}" for n in lines] if json_lines and len(lines) == len(table) else None
    where = (lambda i: labels[i]) if labels else (lambda i: f"row {i + 1}")
    return RawRows(source, ((where(i), row) for i, row in enumerate(table)), len(table))


def _load_hub(path: str, split: str, subset: str | None = None, data_dir: str | None = None) -> RawRows:
    import datasets

    where = "/".join(x for x in (subset, data_dir) if x)
    name = f"{path}:{where}" if where else path
    source = f"{name}[{split}]"
    try:
        table = datasets.load_dataset(os.path.expanduser(path), subset, data_dir=data_dir, split=split)
    except Exception as exc:  # noqa: BLE001 - offline cache misses, unknown ids and splits alike
        raise TaskDataError(f"dataset {name!r} split {split!r} cannot be loaded: {_first_line(exc)}") from None
    if len(table) == 0:
        raise TaskDataError(f"{source}: empty dataset (no rows)")
    return RawRows(source, ((f"row {i + 1}", row) for i, row in enumerate(table)), len(table))


def load_rows(path: str, split: str, on_bad_row: str = "error", subset: str | None = None,
              data_dir: str | None = None) -> RawRows:
    """Rows of a local data file (`split` unused: a file is one split) or of a hub dataset split
    (of `subset` / `data_dir` when given), read with `datasets.load_dataset`.

    Missing file -> TaskConfigError naming it; empty file or dataset -> TaskDataError naming it;
    a JSON line that cannot be read -> TaskDataError naming file and line (error mode) or a
    BadRowError row to be counted (skip mode).
    """
    if is_local(path):
        return _load_local(path, path, on_bad_row)
    return _load_hub(path, split, subset, data_dir)


# ---------------------------------------------------------------------------------------- parsing


def _new_source_stats() -> dict:
    return {"rows": 0, "used": 0, "skipped_rows": 0, "too_long": 0}


def parse_rows(raw: RawRows, cfg: TaskConfig, stats: dict) -> list[PreferenceExample]:
    """Parse every row of `raw`. Bad rows raise TaskDataError "<source> line 7: <reason>" or, in skip
    mode, are counted in stats (total and per source) with the first few reasons; prompts over
    `max_prompt_chars` are counted as too_long. A source left with no usable rows is an error."""
    parser = PARSERS[cfg.name]
    per_source = stats.setdefault("sources", {}).setdefault(raw.source, _new_source_stats())
    reasons = stats.setdefault("skipped_examples", [])
    out = []
    for where, row in raw.rows:
        per_source["rows"] += 1
        try:
            if isinstance(row, BadRowError):
                raise row
            example = parser(row, cfg)
        except BadRowError as exc:
            if cfg.on_bad_row == "error":
                raise TaskDataError(f"{raw.source} {where}: {exc}") from None
            per_source["skipped_rows"] += 1
            stats["skipped_rows"] = stats.get("skipped_rows", 0) + 1
            if len(reasons) < MAX_REASONS:
                reasons.append(f"{raw.source} {where}: {exc}")
            continue
        if cfg.max_prompt_chars and prompt_chars(example.prompt) > cfg.max_prompt_chars:
            per_source["too_long"] += 1
            stats["too_long"] = stats.get("too_long", 0) + 1
            continue
        if example.chosen == example.rejected:  # kept (harmless, no signal) but worth knowing
            stats["identical_pairs"] = stats.get("identical_pairs", 0) + 1
        out.append(example)
    per_source["used"] = len(out)
    if not out:
        raise TaskDataError(f"{raw.source}: no usable rows ({per_source['rows']} read, skipped "
                            f"{per_source['skipped_rows']} bad, {per_source['too_long']} too long)")
    return out


# ---------------------------------------------------------------------------------------- splits


def _sample_test(test: list[PreferenceExample], n_test: int) -> list[PreferenceExample]:
    """Cap the test split by a fixed-seed sample: hub test splits are often concatenations of
    sub-sets (HH: harmless-base first), so the first n rows would be biased; the fixed seed keeps
    the test set the same for every run seed, so seeds are compared on the same prompts."""
    if not n_test or n_test >= len(test):
        return list(test)
    order = list(range(len(test)))
    random.Random(TEST_SAMPLE_SEED).shuffle(order)
    return [test[i] for i in sorted(order[:n_test])]


def load_real_task(cfg: TaskConfig, seed: int) -> TaskData:
    """D_w / Q_w2s / test from a real preference dataset.

    - test: the hub's (or local directory's) `test_split`; for a single local file, its last 10%
      of usable rows in file order (at least 1), held out before anything is shuffled, so it is the
      same for every seed and a user controls it by ordering the file. Capped by n_test (0 = all).
    - train: the other rows, shuffled with random.Random(seed) and split by `labelled_share`
      (MACPO: halved): the first share -> D_w (capped by n_labelled, 0 = all), the rest -> Q_w2s
      prompts, each prompt once (capped by n_unlabelled, 0 = all; none when the share is 1, as
      WSPO needs none).
    Real datasets reuse prompts with different response pairs (HH-RLHF does, within and across its
    splits) and the paper's split keeps them, so prompts shared between splits are counted in
    stats (`overlap`), not removed; only repeats inside Q_w2s are dropped (and counted), since
    generating twice for one prompt only double-weights it. has_rule_reward is False.
    """
    stats: dict = {"source": cfg.path, "seed": seed, "skipped_rows": 0, "skipped_examples": [], "too_long": 0}
    if is_local(cfg.path):
        rows = parse_rows(load_rows(cfg.path, cfg.train_split, cfg.on_bad_row), cfg, stats)
        if len(rows) < 3:
            raise TaskDataError(f"{cfg.path}: {len(rows)} usable rows; need at least 3 "
                                "(test, D_w and Q_w2s get at least one each)")
        n_held = max(1, int(len(rows) * HELD_OUT_FRACTION))
        train, test = rows[:-n_held], rows[-n_held:]
        stats["test_from"] = f"last {n_held} rows of {cfg.path}"
    else:
        train = parse_rows(load_rows(cfg.path, cfg.train_split, cfg.on_bad_row, cfg.subset, cfg.data_dir), cfg, stats)
        test = parse_rows(load_rows(cfg.path, cfg.test_split, cfg.on_bad_row, cfg.subset, cfg.data_dir), cfg, stats)
        stats["test_from"] = f"{cfg.path}[{cfg.test_split}]"
    test = _sample_test(test, cfg.n_test)

    train = list(train)
    random.Random(seed).shuffle(train)
    half = len(train) if cfg.labelled_share >= 1.0 else int(len(train) * cfg.labelled_share)
    d_w = train[:half][: cfg.n_labelled or None]
    q_w2s, seen = [], set()
    for ex in train[half:]:
        if prompt_key(ex.prompt) not in seen:
            seen.add(prompt_key(ex.prompt))
            q_w2s.append(ex.prompt)
    stats["q_w2s_duplicate_prompts"] = len(train) - half - len(q_w2s)
    q_w2s = q_w2s[: cfg.n_unlabelled or None]
    if not d_w or (not q_w2s and cfg.labelled_share < 1.0):
        raise TaskDataError(f"{cfg.path}: {len(train)} usable training rows leave D_w={len(d_w)}, "
                            f"Q_w2s={len(q_w2s)}; both need at least one")
    test_prompts, d_w_prompts = {prompt_key(ex.prompt) for ex in test}, {prompt_key(ex.prompt) for ex in d_w}
    q_prompts = {prompt_key(p) for p in q_w2s}
    stats["overlap"] = {"d_w_test": len(d_w_prompts & test_prompts), "q_w2s_test": len(q_prompts & test_prompts),
                        "d_w_q_w2s": len(d_w_prompts & q_prompts)}
    stats["sizes"] = {"d_w": len(d_w), "q_w2s": len(q_w2s), "test": len(test)}
    return TaskData(name=cfg.name, d_w=d_w, q_w2s=q_w2s, test=test, has_rule_reward=False, stats=stats)
