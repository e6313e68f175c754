"""How one MACPO round's time grows with the number of teachers, and how well it uses the cores.

For K in 1, 2, 4, 8 teachers: set up (not timed), then time one round on the synthetic task. From
the run's own metrics.jsonl it reports, per stage and in total:
  wall_s                        what the round took
  actor_s                       wall time inside the agent actors (sum; includes waiting for a core)
  actor_cpu_s                   CPU time the agent actors used (sum): the compute actually done
  parallel_efficiency           (actor_cpu_s / cores) / wall_s: 1.0 = every core busy all the time
  overhead_fraction             (wall - slowest actor) / wall per stage: orchestration cost
Usage: python benchmarks/teacher_scaling.py [--teachers 1 2 4 8] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import offline_env, start_ray, write_result  # noqa: E402

ROUND_STAGES = ("generate", "select_positives", "train", "evaluate")


def measure(teachers: int, overrides: list[str], tmp: str) -> dict:
    from orchestrator import load_config
    from orchestrator.core import OrchestratorCore

    out = f"{tmp}/k{teachers}"
    config = load_config(None, [f"teachers.count={teachers}", "rounds=1", f"output_dir={out}", "progress=false",
                                "baselines.strong_ceiling=false", *overrides])
    core = OrchestratorCore(config)
    try:
        core.setup()
        record = core.run_round()
    finally:
        core.shutdown()
    cores = os.cpu_count()
    events = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    stages = [e for e in events if e["event"] == "stage" and e.get("round") == 1 and e["stage"] in ROUND_STAGES]
    per_stage = {}
    for e in stages:
        entry = per_stage.setdefault(e["stage"], {"wall_s": 0.0, "actor_s": 0.0, "actor_cpu_s": 0.0, "slowest_actor_s": 0.0})
        entry["wall_s"] += e["wall_s"]
        entry["actor_s"] += sum(e["actor_s"].values())
        entry["actor_cpu_s"] += sum(e["actor_cpu_s"].values())
        entry["slowest_actor_s"] += max(e["actor_s"].values())
    for entry in per_stage.values():
        entry["overhead_fraction"] = round((entry["wall_s"] - entry["slowest_actor_s"]) / entry["wall_s"], 4)
        entry["parallel_efficiency"] = round(entry["actor_cpu_s"] / cores / entry["wall_s"], 4)
    stage_wall = sum(e["wall_s"] for e in stages)
    actor = sum(record["timing"]["actor_s"].values())
    cpu = sum(record["timing"]["actor_cpu_s"].values())
    return {
        "teachers": teachers,
        "round_wall_s": record["timing"]["wall_s"],
        "stage_wall_s": round(stage_wall, 3),
        "actor_s": round(actor, 3),
        "actor_cpu_s": round(cpu, 3),
        "parallel_efficiency": round(cpu / cores / record["timing"]["wall_s"], 4),
        "overhead_fraction": round(sum(e["wall_s"] - max(e["actor_s"].values()) for e in stages) / stage_wall, 4),
        "stages": per_stage,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teachers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    offline_env()
    start_ray()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.teachers:
            row = measure(k, args.overrides, tmp)
            rows.append(row)
            print(f"K={k:<2} round {row['round_wall_s']:6.2f}s  actor cpu {row['actor_cpu_s']:6.2f}s  "
                  f"efficiency {row['parallel_efficiency']:.2f}  overhead {row['overhead_fraction']:.3f}", flush=True)
    base = rows[0]
    for row in rows:
        row["time_ratio_vs_first"] = round(row["round_wall_s"] / base["round_wall_s"], 3)
        row["teacher_ratio_vs_first"] = round(row["teachers"] / base["teachers"], 3)
    path = write_result("teacher_scaling", {"overrides": args.overrides, "rows": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
