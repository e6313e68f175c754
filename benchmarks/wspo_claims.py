"""WSPO on the CPU world over several seeds: the student trained by WSPO against its SFT and DPO
baselines (same data, same budget) and the weak aligned model it learns from.
Usage: python benchmarks/wspo_claims.py [--seeds 0 1 2] [key=value ...]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.claims import stat  # noqa: E402
from benchmarks.common import offline_env, start_ray, write_result  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "wspo_default.yaml"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    offline_env()
    start_ray()
    from orchestrator import load_config
    from orchestrator.api import run

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            config = load_config(CONFIG, [f"seed={seed}", f"output_dir={tmp}/wspo-{seed}", "progress=false", *args.overrides])
            summary = run(config)
            row = {"seed": seed, "student_before": summary["rounds"][0]["eval"]["student"]["reward"], **summary["wspo"]}
            runs.append(row)
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    keys = ["student_before", "student_wspo", "student_sft", "student_dpo", "weak_aligned"]
    table = "\n".join(["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys),
                       "| " + " | ".join(stat([r[k] for r in runs]) for k in keys) + " |"])
    claims = {"wspo_gt_student_sft": [r["student_wspo"] > r["student_sft"] for r in runs],
              "wspo_ge_student_dpo": [r["student_wspo"] >= r["student_dpo"] for r in runs],
              "wspo_gt_weak_aligned": [r["student_wspo"] > r["weak_aligned"] for r in runs],
              "wspo_gt_student_before": [r["student_wspo"] > r["student_before"] for r in runs]}
    path = write_result("wspo_claims", {"seeds": args.seeds, "overrides": args.overrides, "runs": runs,
                                        "claims_per_seed": claims, "table": table})
    print(table)
    for claim, per_seed in claims.items():
        print(f"{claim}: {sum(per_seed)}/{len(per_seed)} seeds")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
