"""The method working, on every machine: the default run (seed 0) reproduces its published summary,
every agent's reward in every round within `TOLERANCE` (benchmarks/reference_run.py). The bases are
shipped and pinned, so this is the same run on any machine of this kind.

What the published reference shows about MACPO (student and teachers over rounds, against the
ablations) is a claim over seeds, not a property of one run: it is published from confirmation seeds
in benchmarks/ (sweep results with intervals), not asserted here. A claim checked on this one run
would add nothing the reproduction check does not already imply.
"""
from __future__ import annotations

import json

import pytest

from benchmarks.reference_run import REFERENCE, TOLERANCE, max_difference

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_default_run_reproduces_the_published_reference(ray_cluster, tmp_path):
    from orchestrator import load_config
    from orchestrator.api import run

    summary = run(load_config(None, ["seed=0", "progress=false", f"output_dir={tmp_path / 'run'}"]))
    reference = json.loads(REFERENCE.read_text())
    difference, problems = max_difference(reference, summary)
    assert not problems and difference <= TOLERANCE, (difference, problems)
    assert [r["round"] for r in summary["rounds"]] == [r["round"] for r in reference["rounds"]]
    # every evaluation kept its samples: the answers and per-answer rewards the headline is the mean of
    for record in summary["rounds"]:
        for agent, metrics in record["eval"].items():
            lines = (tmp_path / "run" / "eval" / f"round_{record['round']}" / f"{agent}.jsonl").read_text().splitlines()
            rows = [json.loads(line) for line in lines]
            assert len(rows) == metrics["n"] and all(r["answer"] is not None and r["reference"] for r in rows)
            assert round(sum(r["rule_reward"] for r in rows) / len(rows), 4) == metrics["reward"]
    # the run's report: headline table, plot, and answers at round 0 beside the last round's
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Answers at round 0 and round 2" in report and "![reward per round](plots/rewards.png)" in report
    rows = [line for line in report.splitlines() if line.startswith("| student | ")]
    assert len(rows) == 3 and all(line.count(" (rule_reward ") == 2 for line in rows)
