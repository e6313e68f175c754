"""Run directories on an object store: a real S3-compatible server (moto's server mode) on 127.0.0.1,
started and ended by this module by its own PID, the way s3fs's own tests do it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agents import storage
from tests.conftest import TINY_RUN
from tests.servers import wait_for

ROOT = Path(__file__).resolve().parent.parent
TINY = [*TINY_RUN, "teachers.count=2", "baselines.strong_ceiling=false"]


@pytest.fixture
def options(s3):
    storage.configure(s3["options"])
    yield s3["options"]
    storage.configure(None)


def test_unusable_uris_are_one_line_before_anything_runs(options):
    with pytest.raises(storage.StorageError, match=r"^s3://no-such-bucket/run: cannot write there .*bucket does not exist"):
        storage.check_writable("s3://no-such-bucket/run")
    with pytest.raises(storage.StorageError, match=r"gs://bucket/run: the gs:// filesystem is not installed; pip install gcsfs"):
        storage.check_writable("gs://bucket/run")
    with pytest.raises(storage.StorageError, match="Protocol not known: nosuch"):
        storage.check_writable("nosuch://bucket/run")
    storage.check_writable("s3://runs/ok")  # the probe leaves nothing behind
    assert storage.listdir("s3://runs/ok") == []


def test_cli_refuses_an_unreachable_bucket_with_exit_2(s3, tmp_path, cache_dir):
    ray_tmp = tmp_path / "ray"  # this run's own Ray root: empty afterwards means Ray never started
    ray_tmp.mkdir()
    env = dict(os.environ, **s3["env"], RAY_TMPDIR=str(ray_tmp))
    out = subprocess.run([sys.executable, "-m", "orchestrator.main", *TINY, "output_dir=s3://no-such-bucket/run",
                          f"cache_dir={cache_dir}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith("error: StorageError: s3://no-such-bucket/run: cannot write there")
    assert list(ray_tmp.iterdir()) == []  # refused before Ray started, so before any model loaded


def test_an_uncommitted_checkpoint_on_the_store_is_never_resumed(options):
    from orchestrator.run_dir import COMMIT_MARKER, STATE_FILE, RunDirectory

    run_dir = RunDirectory("s3://runs/commit")
    run_dir.write_config({"seed": 0})
    first = run_dir.new_checkpoint(0)
    storage.write_json(storage.join(first, "student", "agent_state.json"), {})
    run_dir.commit_checkpoint(first, 0, {"round": 0})
    second = run_dir.new_checkpoint(1)  # a crash after every file was written, before the marker
    storage.write_json(storage.join(second, "student", "agent_state.json"), {})
    storage.write_json(storage.join(second, STATE_FILE), {"round": 1})
    assert run_dir.latest_checkpoint() == "s3://runs/commit/checkpoints/round_0"
    assert storage.exists(storage.join(first, COMMIT_MARKER)) and not storage.exists(storage.join(second, COMMIT_MARKER))
    reopened = RunDirectory("s3://runs/commit")  # a new process: reads the config back from the store
    assert reopened.read_config() == {"seed": 0} and reopened.latest_checkpoint().endswith("round_0")
    assert reopened.prune_checkpoints({1}) == [0] and reopened.latest_checkpoint() is None


def test_an_agent_saves_to_and_loads_from_the_store(options, cache_dir, tiny_spec):
    import torch

    from agents import Agent

    agent = Agent("a", tiny_spec(), cache_dir=cache_dir)
    with torch.no_grad():
        next(p for n, p in agent.model.named_parameters() if "lora_B" in n).add_(0.5)
    agent.save("s3://runs/agent/a")
    assert sorted(storage.listdir("s3://runs/agent/a")) == ["agent_state.json", "default"]
    fresh = Agent("b", tiny_spec(), cache_dir=cache_dir)
    fresh.load("s3://runs/agent/a")
    prompts, answers = ["reverse: abc="], ["cba"]
    assert fresh.logprobs(prompts, answers) == agent.logprobs(prompts, answers)
    with pytest.raises(Exception, match="s3://runs/agent/none is not an agent checkpoint"):
        fresh.load("s3://runs/agent/none")


def cli(env, *args):
    return subprocess.Popen([sys.executable, "-m", "orchestrator.main", *args], cwd=ROOT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_run_on_s3_is_interrupted_and_resumed_from_its_uri(s3, tmp_path, cache_dir):
    """The held-out flow: output_dir=s3://..., SIGTERM once round 1 is committed (exit 130, like
    Ctrl-C, with the resume command), `--resume s3://...` refuses overrides (exit 2) and then finishes
    rounds [0, 1, 2]: no round lost or logged twice, one resume event, every committed checkpoint loads
    in plain peft after download. (This is also the project's only kill-and-resume test: the run
    directory code is one fsspec path for local folders and URIs.)"""
    import s3fs

    uri = "s3://runs/cli"
    fs = s3fs.S3FileSystem(endpoint_url=s3["endpoint"], key="testing", secret="testing")
    proc = cli(s3["env"], *TINY, "rounds=2", f"output_dir={uri}", f"cache_dir={cache_dir}",
               "train.teacher_macpo.epochs=20", "train.student_macpo.epochs=20", "logging.backends=[jsonl,tensorboard]")
    marker = "runs/cli/checkpoints/round_1/COMMITTED"
    wait_for(lambda: fs.exists(marker) or proc.poll() is not None, 300, "round 1's commit marker")
    fs.invalidate_cache()
    assert fs.exists(marker), proc.communicate()[0][-2000:]
    proc.send_signal(signal.SIGTERM)  # the driver shuts its Ray down and says how to resume
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and "--resume s3://runs/cli" in out, out[-2000:]  # interrupted, like Ctrl-C
    assert f"run directory: {uri}" in out and not (ROOT / "s3:").exists()  # never a local folder named s3:
    fs.invalidate_cache()
    done_before = [r["round"] for r in json.loads(fs.cat("runs/cli/summary.json"))["rounds"]]
    assert done_before[-1] in (1, 2), done_before
    refused = cli(s3["env"], "--resume", uri, f"cache_dir={cache_dir}")
    out = refused.communicate(timeout=300)[0]
    assert refused.returncode == 2 and "--resume takes overrides only for values redacted" in out, out[-2000:]  # the run's own config
    resumed = cli(s3["env"], "--resume", uri)
    out = resumed.communicate(timeout=400)[0]
    assert resumed.returncode == 0, out[-2000:]
    fs.invalidate_cache()
    summary = json.loads(fs.cat("runs/cli/summary.json"))
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2] and summary["run_dir"] == uri
    events = [json.loads(line) for line in fs.cat("runs/cli/metrics.jsonl").decode().splitlines()]
    assert [e["round"] for e in events if e["event"] == "round"] == [0, 1, 2]  # none lost, none repeated
    assert sum(e["event"] == "resume" for e in events) == 1
    assert fs.exists("runs/cli/plots/rewards.png") and fs.exists("runs/cli/splits.json")
    assert fs.glob("runs/cli/tensorboard/events.out.tfevents.*")  # tracker files are uploaded too
    local = tmp_path / "download"
    fs.get("runs/cli/checkpoints", str(local), recursive=True)
    rounds = sorted(p.name for p in local.iterdir() if p.name.startswith("round_"))
    assert rounds == ["round_0", "round_1", "round_2"]
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for name in rounds:
        assert (local / name / "COMMITTED").is_file()
        for agent in ("student", "teacher_0", "teacher_1"):
            adapter = local / name / agent / "default"
            config = json.loads((adapter / "adapter_config.json").read_text())
            base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
            model = PeftModel.from_pretrained(base, str(adapter))
            assert any("lora_" in n for n, _ in model.named_parameters())
    shutil.rmtree(local)


def test_a_closed_run_directory_takes_no_write_that_could_shrink_its_log(tmp_path):
    """The Orchestrator's shutdown closes the run directory while its `run` may still be going: a log
    line after close once recreated the staging folder and uploaded a one-line metrics.jsonl over the
    whole one (a resumed run then lost rounds 0 and 1). Every write after close is refused; the
    store keeps every line written before."""
    import fsspec

    from orchestrator.run_dir import RunDirectory, RunDirectoryClosed

    fs = fsspec.filesystem("memory")
    for root in ("memory://closing/run", str(tmp_path / "local-run")):
        run_dir = RunDirectory(root)
        run_dir.log("round", round=0)
        run_dir.log("round", round=1)
        staging = run_dir.local
        run_dir.close()
        writes = {"log": lambda: run_dir.log("round", round=2), "log_many": lambda: run_dir.log_many("x", [{}]),
                  "summary": lambda: run_dir.write_summary({}), "json": lambda: run_dir.write_json("cache/x.json", {}),
                  "jsonl": lambda: run_dir.write_jsonl("eval/x.jsonl", [{}]), "config": lambda: run_dir.write_config({}),
                  "plots": lambda: run_dir.plots, "publish": run_dir.publish,
                  "checkpoint": lambda: run_dir.new_checkpoint(2), "prune": lambda: run_dir.prune_checkpoints(set()),
                  "commit": lambda: run_dir.commit_checkpoint(str(tmp_path / "x"), 2, {})}
        for name, write in writes.items():
            with pytest.raises(RunDirectoryClosed, match="closed"):
                write()
        if run_dir.remote:
            assert not staging.exists()  # nothing recreated the staging folder
            lines = fs.cat("/closing/run/metrics.jsonl").decode().splitlines()
        else:
            lines = (staging / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["round"] for line in lines] == [0, 1], root
        run_dir.close()  # a second close is no error
    fs.rm("/closing", recursive=True)


def test_a_download_never_writes_outside_its_folder(tmp_path):
    """An object named `run/../../x` under the run prefix is refused, not written outside the staging folder."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe_file("/traversal/run/ok.json", b"{}")
    fs.pipe_file("/traversal/run/../../../../evil.txt", b"x")
    staging = tmp_path / "deep" / "er" / "staging"
    staging.mkdir(parents=True)
    with pytest.raises(storage.StorageError, match=r"evil.txt.*leads outside .*refused"):
        storage.download("memory://traversal/run", str(staging))
    assert not list(tmp_path.rglob("evil.txt"))
    fs.rm("/traversal", recursive=True)


def test_remove_deletes_exactly_its_own_objects_never_a_pattern(tmp_path):
    """`exp[1]` is a name, not a glob: removing its round leaves `exp1` alone and leaves nothing of its own."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in ("/glob/exp1/checkpoints/round_0/a.json", "/glob/exp[1]/checkpoints/round_0/b.json",
                 "/glob/exp[1]/checkpoints/round_0/sub/c.json", "/glob/exp[1]/checkpoints/round_1/d.json"):
        fs.pipe_file(path, b"1")
    storage.remove("memory://glob/exp[1]/checkpoints/round_0")
    assert sorted(fs.find("/glob")) == ["/glob/exp1/checkpoints/round_0/a.json", "/glob/exp[1]/checkpoints/round_1/d.json"]
    assert storage.listdir("memory://glob/exp[1]/checkpoints") == ["round_1"]
    local = tmp_path / "exp[1]" / "round_0"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "x").write_text("1")
    (tmp_path / "exp1").mkdir()
    storage.remove(str(local))
    assert not local.exists() and (tmp_path / "exp1").exists()
    fs.rm("/glob", recursive=True)


def test_an_upload_never_reads_outside_its_folder(tmp_path):
    """A link in a staging folder that points outside it is refused, not uploaded."""
    import fsspec

    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "ok.json").write_text("{}")
    (tmp_path / "private.txt").write_text("secret")
    os.symlink(tmp_path / "private.txt", staging / "leak.txt")
    with pytest.raises(storage.StorageError, match=r"leak.txt.*leads outside .*refused"):
        storage.upload(str(staging), "memory://uploads/run")
    fs = fsspec.filesystem("memory")
    assert not [p for p in fs.find("/uploads") if p.endswith("leak.txt")]
    fs.rm("/uploads", recursive=True)


def test_a_checkpoint_naming_an_adapter_outside_it_is_refused(tmp_path, cache_dir, tiny_spec):
    from agents import Agent, AgentError

    agent = Agent("a", tiny_spec(), cache_dir=cache_dir)
    agent.save(tmp_path / "ckpt")
    state = json.loads((tmp_path / "ckpt" / "agent_state.json").read_text())
    state["adapters"] = ["default", "../../elsewhere"]
    (tmp_path / "ckpt" / "agent_state.json").write_text(json.dumps(state))
    with pytest.raises(AgentError, match=r"adapter name '../../elsewhere' is not a plain name"):
        agent.load(tmp_path / "ckpt")


def test_sweep_trial_directories_stay_inside_runs():
    from orchestrator.sweep_spec import slug

    assert slug("..") == "base" and slug("../../etc") == "_.._etc" and "/" not in slug("a/../b")
    assert all(not slug(name).startswith(".") for name in ("..", ".hidden", "./x", "...."))
