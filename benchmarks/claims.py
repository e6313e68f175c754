"""Does the default world show the method working? MACPO claims over several seeds.

Runs the default config (full MACPO), 1 teacher instead of 3, and each ablation, for each seed, in
one local Ray, and reports mean and spread of the rewards that the claims of issue 6 are about:
  1. student final reward > its round-0 reward (weak labels only)
  2. student final reward > the best teacher's round-0 reward
  3. mean teacher reward after the last round > at round 0
  4. 3 teachers beat 1 teacher on the student's final reward
  5. full MACPO beats each ablation on the student's final reward
Usage: python benchmarks/claims.py [--seeds 0 1 2] [key=value overrides for every run]
Writes benchmarks/results/claims.json and prints a markdown table (pasted into README).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import offline_env, start_ray, write_result  # noqa: E402

VARIANTS = {
    "macpo (3 teachers)": [],
    "1 teacher": ["teachers.count=1"],
    "no mutual positives": ["ablation.mutual_positives=false"],
    "no hard negatives": ["ablation.hard_negatives=false"],
    "teachers frozen": ["ablation.teachers_learn=false"],
}


def one_run(overrides: list[str]) -> dict:
    from orchestrator import load_config
    from orchestrator.api import run

    config = load_config(None, overrides + ["progress=false"])
    start = time.perf_counter()
    summary = run(config)
    rounds = summary["rounds"]
    first, last = rounds[0]["eval"], rounds[-1]["eval"]
    teachers = [a for a in summary["agents"] if a != "student"]
    return {
        "student_round0": first["student"]["reward"],
        "student_final": last["student"]["reward"],
        "best_teacher_round0": max(first[t]["reward"] for t in teachers),
        "teacher_mean_round0": statistics.mean(first[t]["reward"] for t in teachers),
        "teacher_mean_final": statistics.mean(last[t]["reward"] for t in teachers),
        "student_per_round": [r["eval"]["student"]["reward"] for r in rounds],
        "teacher_mean_per_round": [statistics.mean(r["eval"][t]["reward"] for t in teachers) for r in rounds],
        "ceiling": summary["baselines"].get("student_sft_gold", {}).get("reward"),
        "pgr": summary.get("pgr"),
        "wall_s": round(time.perf_counter() - start, 1),
    }


def stat(values: list[float]) -> str:
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {spread:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    offline_env()
    start_ray()
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants:
            for seed in args.seeds:
                out = f"output_dir={tmp}/{name.replace(' ', '_')}-{seed}"
                result = one_run([f"seed={seed}", out, *VARIANTS[name], *args.overrides])
                runs.setdefault(name, []).append({"seed": seed, **result})
                print(f"{name:<22} seed {seed}: student {result['student_per_round']} "
                      f"teachers {[round(x, 3) for x in result['teacher_mean_per_round']]} ({result['wall_s']}s)", flush=True)
    full = runs.get("macpo (3 teachers)", [])
    claims = {}
    if full:
        claims["student_final_gt_round0"] = [r["student_final"] > r["student_round0"] for r in full]
        claims["student_final_gt_best_teacher_round0"] = [r["student_final"] > r["best_teacher_round0"] for r in full]
        claims["teacher_mean_final_gt_round0"] = [r["teacher_mean_final"] > r["teacher_mean_round0"] for r in full]
        for name, rs in runs.items():
            if name != "macpo (3 teachers)":
                claims[f"macpo_beats_{name.replace(' ', '_')}"] = [
                    f["student_final"] > r["student_final"] for f, r in zip(full, rs)]
    lines = ["| variant | student round 0 | student final | best teacher round 0 | teachers mean round 0 | teachers mean final |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, rs in runs.items():
        lines.append(f"| {name} | {stat([r['student_round0'] for r in rs])} | {stat([r['student_final'] for r in rs])} | "
                     f"{stat([r['best_teacher_round0'] for r in rs])} | {stat([r['teacher_mean_round0'] for r in rs])} | "
                     f"{stat([r['teacher_mean_final'] for r in rs])} |")
    table = "\n".join(lines)
    path = write_result("claims", {"seeds": args.seeds, "overrides": args.overrides, "runs": runs,
                                   "claims_per_seed": claims, "table": table})
    print()
    print(table)
    print()
    for claim, per_seed in claims.items():
        print(f"{claim}: {sum(per_seed)}/{len(per_seed)} seeds")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
