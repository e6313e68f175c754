"""Where the seconds of the default run go, from the command to its summary.

Runs `python -m orchestrator.main` (the default config plus any overrides) as a user would, timing
the whole process, and splits its wall time with the run's own metrics.jsonl (each stage event has
its start and wall time):
  start-up      process start -> the run's first event: imports, Ray start, the data split
  load_models   the actors' start: their imports and model loading (one stage)
  setup stages  the initialisation of teachers and student (round 0), evaluation included
  round N       each round's stages, evaluation and checkpoint
  shutdown      the last event -> process exit: Ray shutdown, summary table
Usage: python benchmarks/time_to_result.py [--repeats 3] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import offline_env, write_result  # noqa: E402


def breakdown(events: list[dict], started: float, ended: float) -> dict[str, float]:
    """Seconds per part of the run, from the process start/end and the run's events."""
    stages = [e for e in events if e["event"] == "stage"]
    rounds = [e for e in events if e["event"] == "round"]
    first = min(e["started"] for e in stages)
    load = next(e for e in stages if e["stage"] == "load_models")
    parts = {"start-up": first - started, "load_models": load["wall_s"]}
    previous = load["started"] + load["wall_s"]
    for record in rounds:
        label = "setup stages" if record["round"] == 0 else f"round {record['round']}"
        parts[label] = record["time"] - previous
        previous = record["time"]
    parts["shutdown"] = ended - previous
    return {k: round(v, 2) for k, v in parts.items()}


def run_once(overrides: list[str], tmp: str) -> dict:
    out = f"{tmp}/run-{time.time_ns()}"
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.main", f"output_dir={out}", "progress=false", *overrides],
                          cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"the run failed: {proc.stderr[-2000:]}")
    events = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((Path(out) / "summary.json").read_text())
    return {"total_s": round(ended - started, 2), "parts": breakdown(events, started, ended),
            "student_final": summary["rounds"][-1]["eval"]["student"]["reward"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    offline_env()
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for i in range(args.repeats):
            runs.append(run_once(args.overrides, tmp))
            print(f"run {i + 1}: {runs[-1]['total_s']:.1f}s  {runs[-1]['parts']}", flush=True)
    median = {part: round(statistics.median(r["parts"][part] for r in runs), 2) for part in runs[0]["parts"]}
    result = {"overrides": args.overrides, "runs": runs, "median_total_s": round(statistics.median(r["total_s"] for r in runs), 2),
              "median_parts": median}
    path = write_result("time_to_result", result)
    print(f"median {result['median_total_s']:.1f}s: {median}\nwritten to {path}")


if __name__ == "__main__":
    main()
