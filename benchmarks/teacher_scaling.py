"""How close one MACPO round comes to this machine's limit, with 1 to 16 teachers.

For each K: set up (not timed), run one round on the synthetic task, and read the round's stages
back from the run's own metrics.jsonl. Everything compares wall and CPU time of the *same* stages
(the round's), phase by phase - a phase lies between two barriers where every agent must be done:
generate | train_teachers beside select_positives, then the student's train | evaluate:
  wall_s        what the phase took (first stage start to last stage end)
  limit_s       the physical limit: max(the busiest agent's CPU seconds, all agents' CPU seconds /
                cores) - no schedule can finish the phase sooner on these cores
  ratio         wall_s / limit_s (1.00 = at the limit)
  critical      the agent with the most CPU seconds (the phase cannot end before it does)
  overhead      stage time no actor spent on its call, over the wall: the orchestration's own cost
Per round: the sums, the same ratio, parallel efficiency (CPU / cores / wall) and per agent the
training tokens/s and the actor's peak resident memory.
Each K runs `--repeats` times (a fresh run each); the row is the run with the median ratio, and
every run's ratio is kept beside it (`ratio_runs`), so one lucky or unlucky run shows as such.
Usage: python benchmarks/teacher_scaling.py [--teachers 1 2 4 8 16] [--repeats 3] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import offline_env, start_ray, write_result  # noqa: E402

# a round's phases, between the barriers where every agent must be done: within the middle one the
# teachers train while the student selects its positives and then trains
PHASES = (("generate",), ("train_teachers", "select_positives", "train"), ("evaluate",))


def phase_limits(events: list[dict], cores: int) -> dict:
    """A phase's stage events -> wall (first start to last end), limit, ratio, critical agent, overhead."""
    cpu: dict[str, float] = {}
    for e in events:
        for agent, seconds in e["actor_cpu_s"].items():
            cpu[agent] = cpu.get(agent, 0.0) + seconds
    critical = max(cpu, key=cpu.get)
    limit = max(cpu[critical], sum(cpu.values()) / cores)
    wall = max(e["started"] + e["wall_s"] for e in events) - min(e["started"] for e in events)
    # orchestration's own cost: stage time no actor spent on its call
    overhead = sum(max(0.0, e["wall_s"] - max(e["actor_s"].values())) for e in events)
    return {"stages": [e["stage"] for e in events], "wall_s": round(wall, 3), "cpu_s": round(sum(cpu.values()), 3),
            "limit_s": round(limit, 3), "ratio": round(wall / limit, 3) if limit else None, "critical": critical,
            "overhead_s": round(overhead, 4)}


def round_limits(events: list[dict], round_index: int, cores: int) -> dict:
    """Each phase of the round and the round's totals, on one basis: the wall and CPU time of the
    same stages."""
    stages = [e for e in events if e["event"] == "stage" and e.get("round") == round_index]
    phases = {}
    for names in PHASES:
        if (members := [e for e in stages if e["stage"] in names]):
            phases["+".join(e["stage"] for e in members)] = phase_limits(members, cores)
    wall = sum(p["wall_s"] for p in phases.values())
    limit = sum(p["limit_s"] for p in phases.values())
    cpu = sum(p["cpu_s"] for p in phases.values())
    return {"wall_s": round(wall, 3), "limit_s": round(limit, 3), "ratio": round(wall / limit, 3),
            "cpu_s": round(cpu, 3), "parallel_efficiency": round(cpu / cores / wall, 3),
            "overhead_fraction": round(sum(p["overhead_s"] for p in phases.values()) / wall, 4), "phases": phases}


def measure(teachers: int, overrides: list[str], tmp: str) -> dict:
    from orchestrator import calls, load_config
    from orchestrator.core import OrchestratorCore

    out = f"{tmp}/k{teachers}-{time.time_ns()}"
    config = load_config(None, [f"teachers.count={teachers}", "rounds=1", f"output_dir={out}", "progress=false",
                                "baselines.strong_ceiling=false", *overrides])
    core = OrchestratorCore(config)
    try:
        core.setup()
        record = core.run_round()
        rss = core.pool.stage("peak_rss", {a: calls.Call("peak_rss_mib") for a in core.agents}).results
    finally:
        core.shutdown()
    cores = os.cpu_count()
    events = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    row = {"teachers": teachers, **round_limits(events, 1, cores)}
    trained = [e["train"] for e in events if e["event"] == "stage" and e.get("round") == 1 and "train" in e]
    row["tokens_per_s"] = {a: round(v["tokens_per_s"], 1) for train in trained for a, v in train.items()}
    row["peak_rss_mib"] = {a: round(v, 1) for a, v in rss.items()}
    row["student_reward"] = record["eval"]["student"]["reward"]
    # how the actors really ran (niceness, scheduling policy, threads), as the placement event saw them
    cpu = next(e["cpu"] for e in events if e["event"] == "placement")
    row["cpu"] = {"student": cpu["student"], "teacher": cpu["teacher_0"]}
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teachers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3, help="runs per K; the row is the median-ratio run")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()  # key=value may follow --teachers
    offline_env()
    start_ray()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.teachers:
            runs = sorted((measure(k, args.overrides, tmp) for _ in range(args.repeats)), key=lambda r: r["ratio"])
            row = {**runs[len(runs) // 2], "ratio_runs": [r["ratio"] for r in runs]}
            rows.append(row)
            teacher_tps = [v for a, v in row["tokens_per_s"].items() if a != "student"]
            print(f"K={k:<2} round {row['wall_s']:6.2f}s  limit {row['limit_s']:6.2f}s  ratio {row['ratio']:.2f}  "
                  f"(runs {row['ratio_runs']})  overhead {row['overhead_fraction']:.3f}  student {row['tokens_per_s'].get('student', 0):.0f} tok/s  "
                  f"teacher median {statistics.median(teacher_tps) if teacher_tps else 0:.0f} tok/s", flush=True)
    path = write_result("teacher_scaling", {"overrides": args.overrides, "repeats": args.repeats, "rows": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
