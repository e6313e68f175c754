"""Install and CI speed, measured as a new user and CI meet them: fresh clones, empty caches.

    python benchmarks/ci_speed.py setup [--ref REF] [--label L]  # scripts/setup.sh, then --dev, each in a fresh clone
    python benchmarks/ci_speed.py ci [--ref REF] [--label L]     # .ci/run in a fresh clone: empty model cache, then warm

Each command clones this repository at REF (default HEAD) into a temporary folder, gives the installers
an empty download cache (as on a fresh machine), times the command and records it in
`results/ci_speed.json` under its label (default: the short commit), keeping the other labels. `ci`
also records pytest's closing line, its slowest tests and the number of tests and `assert`
statements in the clone's tests/. Run it on an otherwise idle machine: it is a wall-clock figure.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAME = "ci_speed"


def clone(ref: str, into: Path) -> Path:
    target = into / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    subprocess.run(["git", "-C", str(target), "checkout", "-q", ref], check=True)
    return target


def fresh_env(scratch: Path, **extra: str) -> dict:
    """The machine's environment with empty installer caches and no active venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "W2S_CACHE_DIR", "CI_VENV", "W2S_VENV")}
    env.update(UV_CACHE_DIR=str(scratch / "uv-cache"), PIP_CACHE_DIR=str(scratch / "pip-cache"), **extra)
    return env


def timed(cmd: list[str], cwd: Path, env: dict, log: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    return time.perf_counter() - start, rc, log.read_text()


def count_tests(repo: Path) -> dict:
    """Test functions and `assert` statements in tests/ (static: a parametrized test counts once)."""
    tests = asserts = 0
    for path in sorted((repo / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        tests += sum(isinstance(n, ast.FunctionDef) and n.name.startswith("test_") for n in ast.walk(tree))
        asserts += sum(isinstance(n, ast.Assert) for n in ast.walk(tree))
    return {"test_functions": tests, "assert_statements": asserts}


def pytest_figures(output: str) -> dict:
    closing = [line.strip("= ") for line in output.splitlines() if re.search(r"\d+ passed", line)]
    slowest = [line.strip() for line in output.splitlines() if re.match(r"^\d+\.\d+s (call|setup|teardown) ", line)]
    return {"closing_line": closing[-1] if closing else None, "slowest": slowest[:15]}


def measure_setup(ref: str) -> dict:
    out = {}
    for flag in ("", "--dev"):
        with tempfile.TemporaryDirectory(prefix="w2s-setup-") as scratch:
            repo = clone(ref, Path(scratch))
            seconds, rc, log = timed(["bash", "scripts/setup.sh", *([flag] if flag else [])], repo,
                                     fresh_env(Path(scratch)), Path(scratch) / "setup.log")
            if rc:
                raise SystemExit(f"scripts/setup.sh {flag} failed at {ref}:\n{log[-2000:]}")
            out[f"setup{flag.replace('--', '_')}_s"] = round(seconds, 1)
    return out


def measure_ci(ref: str) -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="w2s-ci-") as scratch:
        repo = clone(ref, Path(scratch))
        out.update(count_tests(repo))
        models = Path(scratch) / "model-cache"  # empty for the cold run, filled by it for the warm one
        for run in ("cold", "warm"):
            env = fresh_env(Path(scratch), CI="true", W2S_CACHE_DIR=str(models))
            seconds, rc, log = timed(["bash", ".ci/run"], repo, env, Path(scratch) / f"ci-{run}.log")
            out[f"ci_{run}_s"] = round(seconds, 1)
            out[f"ci_{run}_rc"] = rc
            out[f"ci_{run}"] = pytest_figures(log)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["setup", "ci"])
    parser.add_argument("--ref", default="HEAD")
    parser.add_argument("--label", help="default: the short commit of --ref")
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.ref], check=True,
                            capture_output=True, text=True).stdout.strip()
    figures = measure_setup(commit) if args.what == "setup" else measure_ci(commit)
    path = RESULTS / f"{NAME}.json"
    data = json.loads(path.read_text()) if path.exists() else {"benchmark": NAME, "runs": {}}
    from orchestrator.sweep_report import machine

    entry = data["runs"].setdefault(args.label or commit, {})
    entry.update(figures, commit=commit, machine=machine(), measured_at=time.strftime("%Y-%m-%d %H:%M:%S"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps({args.label or commit: figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
