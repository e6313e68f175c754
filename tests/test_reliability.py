"""Recovery from a dead agent actor, a hung stage hitting its timeout, runs that fail midway.
(Kill-and-resume of the CLI: tests/test_storage.py, on the S3 test server.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator import load_config
from tests.conftest import TINY_RUN

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent

TINY = [*TINY_RUN, "teachers.count=2", "baselines.strong_ceiling=false"]


def cli(*args, address: str | None = None, **kwargs):
    """The CLI in its own process; with `address`, attached to that running cluster (RAY_ADDRESS) as on
    a shared machine, instead of starting a Ray of its own."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **({"RAY_ADDRESS": address} if address else {}))
    return subprocess.Popen([sys.executable, "-m", "orchestrator.main", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_dead_teacher_actor_is_restarted_and_the_stage_redone(ray_cluster, tmp_path, cache_dir):
    from orchestrator.core import OrchestratorCore

    cfg = load_config(None, [*TINY, "rounds=1", f"output_dir={tmp_path / 'run'}", f"cache_dir={cache_dir}",
                             "train.teacher_macpo.epochs=40", "ray.max_failures=1"])
    core = OrchestratorCore(cfg)
    try:
        core.setup()
        pid = ray_cluster.get(core.pool.handles["teacher_1"].info.remote())["pid"]
        killed = threading.Event()

        def kill_during_training():
            while "train_teachers" not in (core.current_stage or ""):  # the teachers' training, in the background
                time.sleep(0.01)
            time.sleep(0.2)
            os.kill(pid, signal.SIGKILL)
            killed.set()

        threading.Thread(target=kill_during_training, daemon=True).start()
        record = core.run_round()
        assert killed.is_set()
        assert set(record["eval"]) == {"student", "teacher_0", "teacher_1"}
        assert core.pool.failures == {"teacher_1": 1}
        new_pid = ray_cluster.get(core.pool.handles["teacher_1"].info.remote())["pid"]
        assert new_pid != pid
        assert [r["round"] for r in core.summary()["rounds"]] == [0, 1]
    finally:
        core.shutdown()


def test_too_many_failures_name_the_agent(ray_cluster, tmp_path, cache_dir):
    from orchestrator.core import OrchestratorCore
    from orchestrator.pool import Call, StageError

    cfg = load_config(None, [*TINY, "rounds=1", f"output_dir={tmp_path / 'run'}", f"cache_dir={cache_dir}",
                             "ray.max_failures=0"])
    core = OrchestratorCore(cfg)
    try:
        core.start_agents(True, [])
        core.stage("load_models", {"student": Call("info")})
        long_job = [{"prompt": "sort: ba=", "response": "ab"}] * 64
        with pytest.raises(StageError, match=r"stage hang: agent student failed 1 times.*no answer within 2s"):
            # a hung actor: the call runs past this stage's own timeout (model loading above had none)
            core.pool.stage("hang", {"student": Call("train", (long_job, "sft", {"epochs": 10000, "batch_size": 1}))},
                            timeout_s=2)
    finally:
        core.shutdown()


def test_a_run_that_fails_midway_exits_1_with_one_line(ray_cluster, tmp_path, cache_dir):
    """Not bad input: every stage has 1 ms, so loading the models cannot answer in time. (Both CLI
    runs here attach to the session's cluster: the CLI starting a Ray of its own is
    tests/test_storage.py's and tests/test_sweep.py's path.)"""
    proc = cli(*TINY, "rounds=1", f"output_dir={tmp_path / 'run'}", f"cache_dir={cache_dir}",
               "ray.stage_timeout_s=0.001", "ray.max_failures=0", "--quiet",
               address=ray_cluster.get_runtime_context().gcs_address)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, out[-2000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "StageError" in errors[0] and "no answer within 0.001s" in errors[0]
    assert "Traceback" not in out


def test_a_model_that_cannot_load_is_bad_input_exit_2(ray_cluster, tmp_path, cache_dir):
    """Bad input found only once the run started (an agent's model cannot load) is still exit 2."""
    proc = cli(*TINY, "rounds=1", f"output_dir={tmp_path / 'run'}", f"cache_dir={cache_dir}",
               "student.name_or_path=no-such-org/no-such-model", "--quiet",
               address=ray_cluster.get_runtime_context().gcs_address)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 2, out[-2000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "agent student could not start" in errors[0] and "no-such-org/no-such-model" in errors[0]


def test_a_background_stage_that_ends_last_is_still_printed(tmp_path, capsys):
    """The teachers' SFT runs in the background and may end after stages started later: its line
    must still reach a client that already printed those (stage lines are numbered as they finish)."""
    from concurrent.futures import Future

    from orchestrator.api import ProgressPrinter
    from orchestrator.core import OrchestratorCore
    from orchestrator.pool import Call, StageResult

    core = OrchestratorCore(load_config(None, [*TINY, f"output_dir={tmp_path / 'run'}"]))
    release = threading.Event()

    def fake_stage(name, work, timeout_s=None):
        if name == "background":
            release.wait(10)
        return StageResult(results={a: {} for a in work}, actor_s={a: 0.0 for a in work}, wall_s=0.0,
                           actor_cpu_s={a: 0.0 for a in work})

    core.pool.stage = fake_stage
    printer = ProgressPrinter(show=True, bars=False)
    late: Future = core.stage_async("background", {"teacher_0": Call("info")})
    core.stage("foreground", {"student": Call("info")})
    printer.update(core.progress())  # the client prints the foreground stage
    release.set()
    late.result(timeout=10)
    printer.update(core.progress())  # ... and then the background one, finished last
    printed = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("stage ")]
    assert printed == ["foreground", "background"]
    core._background.shutdown()


def test_a_snapshot_that_dies_while_saving_leaves_the_previous_one_to_restore(tmp_path):
    """Live snapshots are written as a new version and only then switched to: an agent that dies
    while saving is restored from its previous complete snapshot, which is still there."""
    from orchestrator.core import OrchestratorCore
    from orchestrator.pool import StageError, StageResult

    core = OrchestratorCore(load_config(None, [*TINY, f"output_dir={tmp_path / 'run'}"]))
    dies = threading.Event()

    def fake_stage(name, work, timeout_s=None):
        for call in work.values():
            if call.method == "save":
                if dies.is_set():
                    raise StageError("stage snapshot: agent student died")
                os.makedirs(call.args[0])
                open(os.path.join(call.args[0], "agent_state.json"), "w").write("{}")
        return StageResult(results={a: {} for a in work}, actor_s={a: 0.0 for a in work}, wall_s=0.0,
                           actor_cpu_s={a: 0.0 for a in work})

    core.pool.stage = fake_stage
    core._snapshot(["student"])
    first = core.pool.restore_dirs["student"]
    core._snapshot(["student"])
    second = core.pool.restore_dirs["student"]
    assert second != first and os.path.exists(second) and not os.path.exists(first)  # switched, then the old one gone
    dies.set()
    with pytest.raises(StageError):
        core._snapshot(["student"])
    assert core.pool.restore_dirs["student"] == second and os.path.exists(os.path.join(second, "agent_state.json"))
    core._background.shutdown()


def test_keep_best_naming_nothing_round_0_produced_stops_before_anything_is_deleted():
    from orchestrator.config import ConfigError
    from orchestrator.run_dir import check_keep_best

    rounds = [{"round": 0, "eval": {"student": {"reward": 0.5}, "teacher_0": {"reward": 0.4}}}]
    check_keep_best("student.reward", rounds)
    with pytest.raises(ConfigError, match=r"keep_best='studnet.reward': no agent 'studnet'"):
        check_keep_best("studnet.reward", rounds)
    with pytest.raises(ConfigError, match=r"keep_best='student.rewrd': student has no metric 'rewrd'"):
        check_keep_best("student.rewrd", rounds)
