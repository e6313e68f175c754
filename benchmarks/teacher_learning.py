"""What the teachers are trained on each round, and where the student's reward peaks.

Reads a finished sweep's run directories (e.g. `benchmarks/sweeps/probe_rounds.yaml`: the default
config over 6 rounds on the exploration seeds) and, per round, averages over seeds:
- every agent's test reward, and the teachers' on benign prompts (`helpful`) and harmful ones (`harmless`);
- the `pair_quality` event: how often a teacher's chosen answer (the student's) beats, or falls below,
  the teacher's own answer by the rule reward, on benign and harmful prompts, and chosen minus own;
- the `pairs` event: the share of prompts dropped because chosen equals rejected;
- the last optimizer step of each round's training: chosen NLL, reward margin, preference accuracy.

    python benchmarks/teacher_learning.py runs/sweeps/probe_rounds     # writes results/teacher_learning.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import write_result  # noqa: E402


def _stats(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def read_run(run_dir: Path) -> dict:
    """One run's per-round numbers (round -> name -> value) from its metrics.jsonl."""
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rounds: dict[int, dict[str, float]] = {}
    for event in events:
        kind, index = event["event"], event.get("round")
        if index is None:
            continue
        row = rounds.setdefault(index, {})
        if kind == "round":
            evaluation = event["eval"]
            teachers = [a for a in evaluation if a != "student"]
            row["student_reward"] = evaluation["student"]["reward"]
            row["student_harmless"] = evaluation["student"].get("harmless")
            for metric in ("reward", "helpful", "harmless"):
                row[f"teachers_{metric}"] = statistics.mean(evaluation[t][metric] for t in teachers)
        elif kind == "pair_quality":
            teachers = [a for a in event if a.startswith("teacher_")]
            for group in ("all", "benign", "harmful"):
                present = [event[t][group] for t in teachers if group in event[t]]
                if present:
                    for key in ("chosen_beats_own", "chosen_below_own"):
                        row[f"teacher_{group}_{key}"] = statistics.mean(q[key] for q in present)
                    row[f"teacher_{group}_chosen_minus_own"] = statistics.mean(q["chosen_reward"] - q["own_reward"] for q in present)
            if "student" in event:
                row["student_chosen_minus_own"] = event["student"]["all"]["chosen_reward"] - event["student"]["all"]["own_reward"]
        elif kind == "pairs":
            teachers = [a for a in event if a.startswith("teacher_")]
            if teachers:
                row["teacher_dropped_share"] = statistics.mean(
                    event[t]["dropped_equal"] / max(event[t]["pairs"] + event[t]["dropped_equal"] + event[t]["dropped_empty"], 1)
                    for t in teachers)
        elif kind == "train_step" and event.get("objective") == "macpo" and event["step"] == event["total_steps"]:
            who = "student" if event["agent"] == "student" else "teachers"
            for key in ("chosen_nll", "reward_margin", "accuracy"):
                if key in event:
                    row.setdefault(f"_{who}_{key}", []).append(event[key])
    for row in rounds.values():
        for key in [k for k in row if k.startswith("_")]:
            row[key[1:] + "_last_step"] = statistics.mean(row.pop(key))
    return rounds


def summarise(sweep_dir: Path) -> dict:
    runs = {}
    for run_dir in sorted((sweep_dir / "runs").iterdir()):
        if (run_dir / "summary.json").is_file():
            runs[run_dir.name] = read_run(run_dir)
    if not runs:
        raise SystemExit(f"{sweep_dir}: no finished runs")
    indices = sorted({r for rounds in runs.values() for r in rounds})
    names = sorted({name for rounds in runs.values() for row in rounds.values() for name in row})
    per_round = {str(r): {name: _stats([rounds.get(r, {}).get(name) for rounds in runs.values()]) for name in names}
                 for r in indices}
    peaks = {}
    for trial, rounds in runs.items():
        rewards = {r: row["student_reward"] for r, row in rounds.items() if "student_reward" in row}
        peaks[trial] = max(rewards, key=lambda r: (rewards[r], -r))
    return {"sweep": sweep_dir.name, "trials": sorted(runs), "rounds": indices, "per_round": per_round,
            "student_peak_round": peaks, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="a finished sweep directory (its runs/ hold one run per trial)")
    args = parser.parse_args(argv)
    result = summarise(Path(args.sweep_dir))
    write_result("teacher_learning", result)
    print(json.dumps({"peaks": result["student_peak_round"]}, indent=1))


if __name__ == "__main__":
    main()
