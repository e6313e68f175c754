"""Bad input, tried systematically: every answer must be one line and exit code 2, with nothing on
disk lost or changed.

    python benchmarks/bad_inputs.py       # writes results/bad_inputs.json (tests/test_bad_inputs.py runs the same table)

Three families, each generated, not hand-picked:

- **CLI overrides** (`python -m orchestrator.main key=value`): for every key of the run config, a
  value of the wrong type; for every mapping, an unknown sub-key; for every key holding a plain
  value, a sub-key under it; for every list, an index past its end.
- **Config files** (`--config FILE`): not UTF-8, empty, not a mapping, invalid YAML, unknown key;
  a fresh run into an earlier run's directory. And `--resume` of a run directory whose config.yaml
  is empty, not a mapping or corrupt.
- **Data files** (`task.path`): truncated gzip, an invalid byte, wrong columns, empty, not JSON.
  Loading data happens inside the run; these are checked through the loader and the CLI's own
  classification of the error (`orchestrator.main.one_line`, `is_bad_input`), which is what the CLI
  prints and returns, without starting Ray for each.

Each case runs in a scratch working directory whose files are fingerprinted before and after.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import os
import sys
import tempfile
import typing
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent


def _nothing(scratch: Path) -> None:
    return None


@dataclasses.dataclass
class Case:
    family: str
    name: str
    run: Callable[[Path], tuple[int, str]]  # (exit code, stderr) given a scratch directory
    setup: Callable[[Path], None] = _nothing  # writes the case's input files into the scratch directory


def wrong_value(tp: Any) -> str:
    """A YAML value that no field of annotated type `tp` accepts."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        return wrong_value(args[0])
    if origin is list:
        return "{nested: mapping}"
    if origin is dict or tp is dict:
        return "[1, 2]"
    if tp is bool:
        return "maybe"
    if tp in (int, float):
        return "[1, 2]"
    if tp is str:
        return "{a: 1}"
    return "[1, 2]"


def override_cases() -> list[Case]:
    from orchestrator.config import RunConfig, load_config

    config = load_config(None)
    cases: list[Case] = []

    def walk(obj: Any, prefix: str) -> None:
        hints = typing.get_type_hints(type(obj))
        for field in dataclasses.fields(obj):
            key = f"{prefix}{field.name}"
            value = getattr(obj, field.name)
            if dataclasses.is_dataclass(value):
                cases.append(cli_case("override", f"{key}.no_such_key=1"))
                walk(value, f"{key}.")
                continue
            cases.append(cli_case("override", f"{key}={wrong_value(hints[field.name])}"))
            if isinstance(value, list):
                cases.append(cli_case("override", f"{key}.{len(value) + 5}=1"))
                if value and dataclasses.is_dataclass(value[0]):
                    cases.append(cli_case("override", f"{key}.{len(value) + 5}.seed=3"))
                    walk(value[0], f"{key}.0.")
            elif not isinstance(value, dict):
                cases.append(cli_case("override", f"{key}.x=1"))

    walk(config, "")
    assert isinstance(config, RunConfig)
    return cases


def cli_case(family: str, *argv: str, name: str | None = None) -> Case:
    def run(scratch: Path) -> tuple[int, str]:
        return run_cli(list(argv), scratch)

    return Case(family, name or " ".join(argv), run)


def run_cli(argv: list[str], scratch: Path) -> tuple[int, str]:
    """`orchestrator.main.main(argv)` in `scratch`, its stderr captured (no Ray starts: bad input
    stops it before)."""
    from orchestrator import main as cli

    err, out = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(scratch)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(cwd)
    return code, err.getvalue()


def config_file_cases() -> list[Case]:
    files = {
        "not UTF-8": b"rounds: 2\nseed: \xff\xfe\n",
        "empty": b"",
        "not a mapping": b"- rounds\n- 2\n",
        "invalid YAML": b"rounds: [1, 2\nseed: 0\n",
        "unknown key": b"roundz: 2\n",
        "wrong type": b"rounds: many\n",
    }
    cases = []
    for name, data in files.items():
        cases.append(Case("config file", name, lambda scratch: run_cli(["--config", "bad.yaml"], scratch),
                          lambda scratch, data=data: (scratch / "bad.yaml").write_bytes(data) and None))
    resumed = {"empty": b"", "not a mapping": b"[1, 2]\n", "corrupt": b"rounds: [\n", "not UTF-8": b"\xff\xfe\x00"}

    def old_run(scratch: Path, data: bytes) -> None:
        (scratch / "old-run").mkdir()
        (scratch / "old-run" / "config.yaml").write_bytes(data)
        (scratch / "old-run" / "metrics.jsonl").write_text('{"event": "round", "round": 0}\n')

    for name, data in resumed.items():
        cases.append(Case("resume", f"config.yaml {name}", lambda scratch: run_cli(["--resume", "old-run"], scratch),
                          lambda scratch, data=data: old_run(scratch, data)))
    # a fresh run into an earlier run's directory: refused before anything is written
    cases.append(Case("config file", "output_dir of an earlier run", lambda scratch: run_cli(["output_dir=old-run"], scratch),
                      lambda scratch: old_run(scratch, b"rounds: 2\n")))
    return cases


def _pairs(n: int = 12) -> list[dict]:
    return [{"prompt": f"question {i}", "chosen": "a good answer", "rejected": "a bad answer"} for i in range(n)]


def data_file_cases() -> list[Case]:
    good = "".join(json.dumps(row) + "\n" for row in _pairs()).encode()
    files = {
        "truncated gzip": ("pairs.jsonl.gz", gzip.compress(good)[:-12], "error"),
        "invalid byte": ("pairs.jsonl", good.replace(b"question 5", b"question \xff5"), "error"),
        "invalid byte, skip mode keeps nothing bad": ("pairs.jsonl", b"\xff\xfe\n" * 12, "skip"),
        "wrong columns": ("pairs.jsonl", "".join(json.dumps({"q": i, "a": "x"}) + "\n" for i in range(12)).encode(), "error"),
        "empty": ("pairs.jsonl", b"", "error"),
        "not JSON": ("pairs.jsonl", b"this is not json\n" * 12, "error"),
        "a JSON list per line": ("pairs.jsonl", b"[1, 2]\n" * 12, "error"),
    }
    cases = []
    for name, (filename, data, mode) in files.items():
        cases.append(Case("data file", name, lambda scratch, f=filename, m=mode: run_loader(scratch / f, m),
                          lambda scratch, f=filename, d=data: (scratch / f).write_bytes(d) and None))
    return cases


def run_loader(path: Path, on_bad_row: str) -> tuple[int, str]:
    """Load a data file as a run would, and answer as the CLI answers an error raised in a run."""
    from orchestrator.config import load_config
    from orchestrator.main import EXIT_BAD_INPUT, EXIT_FAILED, is_bad_input, one_line
    from tasks import load_task

    config = load_config(None, ["task.name=trl", f"task.path={path}", "task.n_labelled=3", "task.n_unlabelled=3",
                                "task.n_test=2", f"task.on_bad_row={on_bad_row}"])
    try:
        load_task(config.task, config.seed)
    except Exception as exc:  # noqa: BLE001 - what the CLI catches around a run
        return (EXIT_BAD_INPUT if is_bad_input(exc) else EXIT_FAILED), f"error: {one_line(exc)}\n"
    return 0, ""


def all_cases() -> list[Case]:
    return override_cases() + config_file_cases() + data_file_cases()


def fingerprint(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def try_case(case: Case) -> dict:
    """Run one case in a fresh scratch directory; what it answered and what it did to the disk."""
    with tempfile.TemporaryDirectory(prefix="w2s-bad-") as tmp:
        scratch = Path(tmp)
        case.setup(scratch)
        before = fingerprint(scratch)
        code, err = case.run(scratch)
        after = fingerprint(scratch)  # the answer may create, change or delete nothing
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return {"family": case.family, "case": case.name, "exit": code, "lines": len(lines),
            "message": lines[0] if lines else "", "one_line_exit_2": code == 2 and len(lines) == 1 and
            lines[0].startswith("error: "), "disk_changed": before != after}


def run_all() -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    results = [try_case(case) for case in all_cases()]
    families: dict[str, dict[str, int]] = {}
    for r in results:
        fam = families.setdefault(r["family"], {"tried": 0, "one_line_exit_2": 0, "disk_changed": 0})
        fam["tried"] += 1
        fam["one_line_exit_2"] += r["one_line_exit_2"]
        fam["disk_changed"] += r["disk_changed"]
    return {"families": families, "cases": results}


def main() -> None:
    from benchmarks.common import write_result

    data = run_all()
    for family, counts in data["families"].items():
        print(f"{family:<12} tried {counts['tried']:>3}  one line + exit 2 {counts['one_line_exit_2']:>3}  "
              f"disk changed {counts['disk_changed']}")
    for r in data["cases"]:
        if not r["one_line_exit_2"] or r["disk_changed"]:
            print("FAILED:", r)
    print(write_result("bad_inputs", data))


if __name__ == "__main__":
    main()
