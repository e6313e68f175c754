"""Sweeps: settings x seeds on Ray Tune, claims evaluated per seed, resume, failures, bad input."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.config import ConfigError
from orchestrator.sweep_spec import SweepSpec, aggregate, grid_settings, load_spec, parse_claim, parse_seeds, trial_metrics
from tests.conftest import TINY_RUN

ROOT = Path(__file__).resolve().parent.parent


def sweep_cli(*args, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "orchestrator.sweep", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_seeds_and_grid_parse():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0-1,7") == [0, 1, 7]
    settings = grid_settings(["teachers.count=1,3", "ablation.hard_negatives=true,false"])
    assert list(settings) == ["teachers.count=1 ablation.hard_negatives=true", "teachers.count=1 ablation.hard_negatives=false",
                              "teachers.count=3 ablation.hard_negatives=true", "teachers.count=3 ablation.hard_negatives=false"]
    assert grid_settings(["teachers.specs=[{seed: 1}],[{seed: 2}]"])["teachers.specs=[{seed: 2}]"] == ["teachers.specs=[{seed: 2}]"]
    with pytest.raises(ConfigError, match="no values for 'rounds'"):
        grid_settings(["rounds="])
    with pytest.raises(ConfigError, match="--seeds 'x'"):
        parse_seeds("x")


def fake_summary(student: list[float], teachers: list[list[float]]) -> dict:
    rounds = []
    for k, s in enumerate(student):
        ev = {"student": {"reward": s, "harmless": s / 2}}
        ev.update({f"teacher_{i}": {"reward": t[k], "harmless": 0.1} for i, t in enumerate(teachers)})
        rounds.append({"round": k, "eval": ev})
    return {"agents": ["student"] + [f"teacher_{i}" for i in range(len(teachers))], "rounds": rounds,
            "baselines": {"student_sft_gold": {"reward": 1.0}}, "pgr": {"weak": 0.5, "ceiling": 1.0},
            "wspo": {"student_wspo": 0.7}}


def test_trial_metrics_flatten_a_summary():
    m = trial_metrics(fake_summary([0.6, 0.8], [[0.5, 0.6], [0.3, 0.2]]))
    assert m["student.round0"] == 0.6 and m["student.final"] == 0.8 and m["student.r1"] == 0.8
    assert m["student.gain"] == pytest.approx(0.2)
    assert m["student.harmless.final"] == 0.4
    assert m["teachers_mean.round0"] == pytest.approx(0.4) and m["teachers_mean.final"] == pytest.approx(0.4)
    assert m["best_teacher.round0"] == 0.5
    assert m["baseline.student_sft_gold.reward"] == 1.0
    assert m["pgr.r0"] == pytest.approx(0.2) and m["pgr.final"] == pytest.approx(0.6)
    assert m["wspo.student_wspo"] == 0.7


def test_claims_are_evaluated_per_seed_within_and_across_settings():
    spec = SweepSpec(name="x", settings={"full": [], "ablated": ["ablation.hard_negatives=false"]}, seeds=[0, 1, 2],
                     claims=[parse_claim("student.final > student.round0"),
                             parse_claim("full:student.final > ablated:student.final")])
    trials = []
    for seed, (full, ablated) in enumerate([(0.9, 0.8), (0.7, 0.75), (0.95, 0.9)]):
        trials.append({"setting": "full", "seed": seed, "status": "done", "metrics": trial_metrics(fake_summary([0.8, full], [[0.5, 0.5]]))})
        trials.append({"setting": "ablated", "seed": seed, "status": "failed" if seed == 2 else "done",
                       "metrics": trial_metrics(fake_summary([0.8, ablated], [[0.5, 0.5]]))})
    table, claims = aggregate(spec, trials)
    assert table["full"]["student.final"]["n"] == 3 and table["ablated"]["student.final"]["n"] == 2
    assert table["full"]["student.final"]["mean"] == pytest.approx((0.9 + 0.7 + 0.95) / 3)
    # a claim naming no setting is a claim about each setting, not only the first one
    within, within_ablated, across = claims
    assert [c["name"] for c in claims[:2]] == ["student.final > student.round0 [full]", "student.final > student.round0 [ablated]"]
    assert within["per_seed"] == {"0": True, "1": False, "2": True} and (within["holds"], within["n"]) == (2, 3)
    assert within_ablated["per_seed"] == {"0": False, "1": False} and within_ablated["left"] == "ablated:student.final"
    assert across["per_seed"] == {"0": True, "1": False} and (across["holds"], across["n"]) == (1, 2)  # seed 2 failed: not counted


def test_a_claim_holds_only_when_its_paired_interval_excludes_zero():
    from orchestrator.sweep_report import render_claims
    from orchestrator.sweep_spec import paired_interval

    clear = paired_interval([0.02, 0.03, 0.01, 0.025, 0.015])
    assert clear["difference"] == pytest.approx(0.02) and clear["holding"]
    assert 0.01 <= clear["ci95"][0] < 0.02 < clear["ci95"][1] <= 0.03
    # ahead on average and in 4 of 5 seeds, but one large loss: the interval reaches below zero
    mixed = paired_interval([0.05, 0.05, 0.05, 0.05, -0.15])
    assert mixed["difference"] > 0 and mixed["ci95"][0] < 0 < mixed["ci95"][1] and not mixed["holding"]
    assert paired_interval([0.5])["ci95"] is None and not paired_interval([0.5])["holding"]
    assert paired_interval([0.01, -0.2, 0.03]) == paired_interval([0.01, -0.2, 0.03])  # same file, same interval
    # `<` claims measure right minus left; the rendered row shows interval and verdict
    spec = SweepSpec(name="x", seeds=[0, 1, 2], claims=[parse_claim("student.round0 < student.final")])
    trials = [{"setting": "base", "seed": s, "status": "done", "metrics": trial_metrics(fake_summary([0.5, 0.6 + s / 100], [[0.5, 0.5]]))}
              for s in range(3)]
    _, (claim,) = aggregate(spec, trials)
    assert claim["difference"] == pytest.approx(0.11) and claim["holding"] and claim["holds"] == 3
    results = {"spec": spec.shown(), "claims": [claim], "trials": trials}
    assert "| +0.1100 | [+0.1000, +0.1200] | 3 of 3 seeds | holding |" in render_claims(results)


def test_a_confirmation_spec_reruns_its_exploration_spec_on_seeds_it_never_used(tmp_path):
    (tmp_path / "explore.yaml").write_text("name: explore\nseeds: 0-4\nsettings: {a: [], b: [teachers.count=1]}\n"
                                          "claims: ['a:student.final > b:student.final']\n")
    (tmp_path / "map.yaml").write_text("name: map\nseeds: [7]\nclaims: ['student.final > student.round0']\n")
    (tmp_path / "confirm.yaml").write_text("name: confirm\nconfirms: explore.yaml\nseeds: 10-29\n")
    spec = load_spec(tmp_path / "confirm.yaml")
    assert spec.seeds == list(range(10, 30)) and spec.exploration_seeds == [0, 1, 2, 3, 4]
    assert spec.settings == {"a": [], "b": ["teachers.count=1"]} and spec.claims[0].left == "a:student.final"
    (tmp_path / "confirm.yaml").write_text("name: confirm\nconfirms: explore.yaml\nseeds: 3-8\n")
    with pytest.raises(ConfigError, match=r"already used by exploration sweeps: 3 \(explore.yaml\), 4 \(explore.yaml\), 7 \(map.yaml\)"):
        load_spec(tmp_path / "confirm.yaml")
    (tmp_path / "confirm.yaml").write_text("confirms: explore.yaml\nseeds: 10-29\nsettings: {c: []}\n")
    with pytest.raises(ConfigError, match="holds only name, seeds and confirms"):
        load_spec(tmp_path / "confirm.yaml")


def test_spec_files_validate():
    for path in sorted((ROOT / "benchmarks" / "sweeps").glob("*.yaml")):
        spec = load_spec(path)
        spec.validate()
        assert spec.claims and len(spec.seeds) >= 5, path


@pytest.mark.parametrize("args, message", [
    (["--grid", "no_such.key=1,2"], "sweep setting 'no_such.key=1': no_such: unknown key"),
    (["--grid", "rounds="], "no values for 'rounds'"),
    (["--grid", "rounds=1", "--claim", "nosuch:student.final > student.round0"], "unknown setting 'nosuch'"),
])
def test_bad_sweep_input_is_one_line_exit_2_before_any_trial(args, message, tmp_path):
    proc = sweep_cli(*args, "--output-dir", str(tmp_path / "sweep"))
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 2, out
    assert len(out.strip().splitlines()) == 1 and out.startswith("error: ") and message in out
    assert not (tmp_path / "sweep").exists()


def test_a_storage_uri_as_sweep_directory_is_refused_not_made_a_local_folder(tmp_path):
    proc = sweep_cli("--grid", "rounds=1", "--output-dir", "s3://bucket/sweep")
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 2 and out.startswith("error: --output-dir=s3://bucket/sweep: a sweep directory must be"), out
    assert not (ROOT / "s3:").exists()


SECRETS = ("AKIASWEEPKEY7EXAMPLE", "sweepS3cr3tValue")
TINY_SWEEP = [o for o in TINY_RUN if o != "progress=false"] + ["rounds=1", "baselines.strong_ceiling=false"]


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_runs_trials_reports_failures_and_resumes_without_redoing(tmp_path, cache_dir):
    sweep_dir = tmp_path / "sweep #1"  # the override parser would cut a path at ` #`: the directory is set directly
    # a hub id that cannot load offline passes validation and fails inside its trials
    # 4 trials: a working setting (2 seeds: a claim over finished seeds, one trial done before the
    # interruption and one after) and a failing one (2 seeds: each failure recorded in its own trial)
    args = ["--grid", "student.name_or_path=tiny:test-strong,no-such-org/no-such-model", "--seeds", "0-1",
            "--claim", "student.final > student.round0", "--output-dir", str(sweep_dir), "--max-concurrent", "1",
            "--name", "tiny", "--publish", str(tmp_path / "published"), f"cache_dir={cache_dir}", *TINY_SWEEP,
            f"storage_options={{key: {SECRETS[0]}, secret: {SECRETS[1]}}}"]  # credentials never reach a file
    # interrupt the sweep (Ctrl-C, as a user would) once Tune has recorded the first trial as finished
    # (its "trial ... done" line; a run directory's last checkpoint comes before that, so waiting for
    # the checkpoint alone would race the trial's own shutdown)
    proc = sweep_cli(*args, start_new_session=True)
    runs = sweep_dir / "runs"
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    first_done, seen, deadline = set(), [], time.time() + 300
    while not first_done and time.time() < deadline and (proc.poll() is None or not lines.empty()):
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if line.startswith("trial ") and " done: " in line:
            first_done.add(line[len("trial "):line.index(" done: ")])
    assert first_done, "".join(seen)[-3000:]
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    stamps = {name: (runs / name / "summary.json").stat().st_mtime_ns for name in first_done}
    # the same command again: resumes, keeps what finished, records the failing setting, goes on
    resumed = sweep_cli(*args)
    out = resumed.communicate(timeout=900)[0]
    assert resumed.returncode == 0, out[-3000:]
    results = json.loads((sweep_dir / "results.json").read_text())
    assert json.loads((tmp_path / "published" / "tiny.json").read_text())["trials"] == results["trials"]
    by_id = {t["trial_id"]: t for t in results["trials"]}
    assert len(by_id) == 4
    for trial_id, trial in by_id.items():
        if "no-such-model" in trial_id:
            assert trial["status"] == "failed" and "no-such-org/no-such-model" in trial["error"], trial
            assert "\n" not in trial["error"]
        else:
            assert trial["status"] == "done", trial
            assert len(trial["per_round"]["student"]) == 2 and "student.final" in trial["metrics"]
            # the resolved config it ran, its tracker runs grouped under the sweep and tagged
            logging_cfg = trial["config"]["logging"]
            assert trial["config"]["seed"] == trial["seed"] and logging_cfg["group"] == "tiny"
            assert logging_cfg["tags"] == [f"setting:{trial['setting']}", f"seed:{trial['seed']}"]
    for name, stamp in stamps.items():  # finished before the interruption: not redone, not even started
        assert (runs / name / "summary.json").stat().st_mtime_ns == stamp
        assert f"trial {name} done" not in out
    assert sum(line.startswith("trial ") and " done: " in line for line in out.splitlines()) == 2 - len(first_done)
    claim, in_failed = results["claims"]  # a claim naming no setting: in each setting, over its finished seeds
    assert in_failed["n"] == 0 and in_failed["name"].endswith("no-such-org/no-such-model]")
    first = [by_id[f"student.name_or_path=tiny_test-strong-seed{s}"]["metrics"] for s in (0, 1)]
    assert claim["n"] == 2 and claim["holds"] == sum(m["student.final"] > m["student.round0"] for m in first)
    assert "holds in" in (sweep_dir / "results.md").read_text()
    assert (sweep_dir / "plots" / "rewards_per_round.png").stat().st_size > 1000
    assert all((sweep_dir / "runs" / t).is_dir() for t in by_id) and not (tmp_path / "sweep").exists()
    # no credential in any file the sweep wrote (Tune's own state included) nor in what it printed
    written = [p for root in (sweep_dir, tmp_path / "published") for p in root.rglob("*") if p.is_file()]
    assert len(written) > 20
    assert not [str(p) for p in written for secret in SECRETS if secret.encode() in p.read_bytes()]
    assert not [s for s in SECRETS if s in out]
    assert json.loads((sweep_dir / "spec.json").read_text())["overrides"][-1] == \
        "storage_options={key: <redacted>, secret: <redacted>}"


def test_the_sweep_plot_ticks_whole_rounds():
    import matplotlib.pyplot as plt

    from orchestrator.sweep_report import rounds_figure

    cell = {"mean": 0.5, "sd": 0.1, "n": 2}
    fig = rounds_figure({"table": {"a": {"student.r0": cell, "student.r1": cell, "teachers_mean.r0": cell,
                                         "teachers_mean.r1": cell}}})
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if -0.5 <= t <= 1.5]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plt.close(fig)
