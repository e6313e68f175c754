"""Where the seconds of the default run go, from the command to its summary.

Runs `python -m orchestrator.main` (the default config plus any overrides) as a user would, timing
the whole process, and splits its wall time with the run's own metrics.jsonl (each stage event has
its start and wall time):
  start-up      process start -> the run's first event: imports, Ray start, the data split
  load_models   the actors' start: their imports and model loading (one stage)
  setup stages  the initialisation of teachers and student (round 0), evaluation included
  round N       each round's stages, evaluation and checkpoint
  shutdown      the last event -> process exit: Ray shutdown, summary table
Beside each part's wall time: the core-seconds the whole machine was busy in it (every process:
the driver, Ray's own services, the actors; from /proc/stat on Linux) and the core-seconds left
idle. Busy / cores is the floor no schedule beats without doing less work; idle is what a better
schedule could still win.
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import offline_env, write_result  # noqa: E402


def breakdown(events: list[dict], started: float, ended: float) -> dict[str, float]:
    """Seconds per part of the run, from the process start/end and the run's events."""
    return {part: round(end - start, 2) for part, (start, end) in part_windows(events, started, ended).items()}


class MachineCPU:
    """Samples the machine's busy and idle core-seconds (/proc/stat) every `interval_s` in a thread,
    so any time window of the run can be charged afterwards. Empty off Linux."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s, self.samples = interval_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _read(self) -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as stat:
                fields = [int(x) for x in stat.readline().split()[1:]]
        except OSError:
            return None
        idle = fields[3] + fields[4]  # idle + iowait
        return time.time(), (sum(fields[:8]) - idle) / self.tick, idle / self.tick  # user..steal; guest is in user

    def _sample(self) -> None:
        while not self._stop.is_set():
            if (sample := self._read()) is None:
                return
            self.samples.append(sample)
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if (sample := self._read()) is not None:
            self.samples.append(sample)

    def window(self, start: float, end: float) -> tuple[float, float] | None:
        """(busy, idle) core-seconds between two wall-clock times (nearest samples)."""
        if len(self.samples) < 2:
            return None
        a = min(self.samples, key=lambda s: abs(s[0] - start))
        b = min(self.samples, key=lambda s: abs(s[0] - end))
        return b[1] - a[1], b[2] - a[2]


def part_windows(events: list[dict], started: float, ended: float) -> dict[str, tuple[float, float]]:
    """The (start, end) wall-clock window of each part of `breakdown`."""
    stages = [e for e in events if e["event"] == "stage"]
    first = min(e["started"] for e in stages)
    load = next(e for e in stages if e["stage"] == "load_models")
    windows = {"start-up": (started, first), "load_models": (load["started"], load["started"] + load["wall_s"])}
    previous = load["started"] + load["wall_s"]
    for record in (e for e in events if e["event"] == "round"):
        windows["setup stages" if record["round"] == 0 else f"round {record['round']}"] = (previous, record["time"])
        previous = record["time"]
    windows["shutdown"] = (previous, ended)
    return windows


def run_once(overrides: list[str], tmp: str) -> dict:
    out = f"{tmp}/run-{time.time_ns()}"
    with MachineCPU() as cpu:
        started = time.time()
        proc = subprocess.run([sys.executable, "-m", "orchestrator.main", f"output_dir={out}", "progress=false", *overrides],
                              cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"the run failed: {proc.stderr[-2000:]}")
    events = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((Path(out) / "summary.json").read_text())
    charged = {part: cpu.window(*window) for part, window in part_windows(events, started, ended).items()}
    total = cpu.window(started, ended)
    return {"total_s": round(ended - started, 2), "parts": breakdown(events, started, ended),
            "busy_core_s": {part: round(c[0], 2) for part, c in charged.items() if c} if total else None,
            "idle_core_s": {part: round(c[1], 2) for part, c in charged.items() if c} if total else None,
            "total_busy_core_s": round(total[0], 2) if total else None,
            "total_idle_core_s": round(total[1], 2) if total else None,
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
              "median_parts": median, "cores": os.cpu_count()}
    if all(r["busy_core_s"] for r in runs):
        for key in ("busy_core_s", "idle_core_s"):
            result[f"median_{key}"] = {part: round(statistics.median(r[key][part] for r in runs), 2) for part in median}
        result["median_total_busy_core_s"] = round(statistics.median(r["total_busy_core_s"] for r in runs), 2)
        result["median_total_idle_core_s"] = round(statistics.median(r["total_idle_core_s"] for r in runs), 2)
    path = write_result("time_to_result", result)
    print(f"median {result['median_total_s']:.1f}s: {median}\n"
          f"busy {result.get('median_total_busy_core_s')} core-s, idle {result.get('median_total_idle_core_s')} core-s\n"
          f"written to {path}")


if __name__ == "__main__":
    main()
