"""The published reference run: `python -m orchestrator.main` with the default config, seed 0.

    python benchmarks/reference_run.py --check     # rerun it here, compare with the published summary
    python benchmarks/reference_run.py --write     # rerun it and publish its summary (after a change)
    python benchmarks/reference_run.py --threads 1 2   # the same run under other torch thread counts
    python benchmarks/reference_run.py --ranks 2       # the same run with the student as 2 FSDP2 ranks

`benchmarks/results/default_seed0_summary.json` is that run's summary.json. On any machine of this
kind the same command must give every agent's per-round reward within `TOLERANCE` of it; `--threads`
measures how far fine-tuning moves when only the float layout changes, and writes
`results/reproducibility.json`; `--ranks` runs it with the student sharded over that many ranks
(`resources.student.ranks`, gloo on CPU) and writes `results/sharded_reference.json` (the tests
check the same property at test size, tests/test_sharded_agents.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, offline_env, write_result  # noqa: E402

REFERENCE = RESULTS / "default_seed0_summary.json"
TOLERANCE = 0.005


def rewards(summary: dict) -> dict[tuple[int, str], float]:
    """(round, agent) -> reward, for every agent and baseline label the summary evaluates."""
    return {(r["round"], agent): m["reward"] for r in summary["rounds"] for agent, m in r["eval"].items()}


def max_difference(a: dict, b: dict) -> tuple[float, list[str]]:
    """Largest per-round reward difference between two summaries, and what differs in shape."""
    ra, rb = rewards(a), rewards(b)
    problems = [f"round {r} {agent} only in one summary" for r, agent in sorted(set(ra) ^ set(rb))]
    diff = max((abs(ra[k] - rb[k]) for k in set(ra) & set(rb)), default=float("inf"))
    return diff, problems


def run_default(overrides: list[str]) -> dict:
    from orchestrator import load_config
    from orchestrator.api import run

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(None, ["seed=0", f"output_dir={tmp}/run", "progress=false", *overrides])
        summary = run(config)
    summary.pop("run_dir", None)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser()
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="rerun and compare with the published summary")
    action.add_argument("--write", action="store_true", help="rerun and publish its summary")
    action.add_argument("--threads", type=int, nargs="+", help="rerun under each torch thread count and compare")
    action.add_argument("--ranks", type=int, nargs="+", help="rerun with the student on each rank count and compare")
    args = parser.parse_args()
    offline_env()
    if args.ranks:
        published = json.loads(REFERENCE.read_text())
        diffs = {n: max_difference(published, run_default([f"resources.student.ranks={n}"])) for n in args.ranks}
        path = write_result("sharded_reference", {"ranks": args.ranks, "tolerance": TOLERANCE,
                                                  "max_abs_diff_vs_published": {n: d for n, (d, _) in diffs.items()},
                                                  "problems": {n: p for n, (_, p) in diffs.items() if p}})
        print(f"max |reward difference| vs published, by student ranks: { {n: d for n, (d, _) in diffs.items()} } -> {path}")
        return 0 if all(d <= TOLERANCE and not p for d, p in diffs.values()) else 1
    if args.threads:
        runs = {n: run_default([f"resources.torch_threads={n}"]) for n in args.threads}
        first = runs[args.threads[0]]
        diffs = {n: max_difference(first, s)[0] for n, s in runs.items()}
        published = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else None
        vs_published = {n: max_difference(published, s)[0] for n, s in runs.items()} if published else None
        path = write_result("reproducibility", {"threads": args.threads, "max_abs_diff_vs_first": diffs,
                                                "max_abs_diff_vs_published": vs_published, "tolerance": TOLERANCE})
        print(f"max |reward difference| vs {args.threads[0]} thread(s): {diffs}; vs published: {vs_published} -> {path}")
        return 0
    summary = run_default([])
    if args.write:
        REFERENCE.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {REFERENCE}")
        return 0
    diff, problems = max_difference(json.loads(REFERENCE.read_text()), summary)
    print(f"max |reward difference| vs {REFERENCE.name}: {diff:.4f} (tolerance {TOLERANCE}); {problems or 'same agents and rounds'}")
    return 0 if diff <= TOLERANCE and not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
