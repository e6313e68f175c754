"""Every way in, against a real multi-process Ray cluster (`ray start --head` on 127.0.0.1).

The head is started once per session by its own PID and ended by that PID (never `ray stop`,
which would kill every Ray on the machine). Its ports are found free at run time (the client port in the ephemeral range, outside Ray's worker
port range 10002-19999).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_RUN
from tests.servers import free_port, port_open, reap_processes_under, wait_for

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def head():
    """A local multi-process Ray head with dashboard (job server) and Ray client server."""
    gcs, dashboard, agent, client = free_port(), free_port(), free_port(), free_port()
    # a short temp dir: Ray's unix sockets live under it and long pytest paths break the job agent
    # (inside this test run's Ray root, so a killed run's head is found and cleared by the next run)
    temp = tempfile.mkdtemp(prefix="rh-", dir=os.environ["RAY_TMPDIR"])
    # the cluster's `python` is this venv's, as on a cluster set up from ray_cluster.yaml
    # token authentication on, with this test run's token (tests/conftest.py), as a user's cluster
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
         f"--ray-client-server-port={client}", "--num-cpus=2", "--disable-usage-stats",
         f"--dashboard-agent-listen-port={agent}",  # not the fixed default: another Ray here may hold it
         f"--temp-dir={temp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        # ours, not whatever else may hold a port: the head process must still be alive when its ports open
        wait_for(lambda: proc.poll() is not None or (port_open(dashboard) and port_open(client)), 120, "the Ray head")
        assert proc.poll() is None, f"ray start --head exited with {proc.returncode}"
        address = f"http://127.0.0.1:{dashboard}"
        wait_for(lambda: subprocess.run([RAY, "job", "list", "--address", address], env=env,
                                        capture_output=True).returncode == 0, 60, "the job server")
        yield {"dashboard": address, "client": f"ray://127.0.0.1:{client}", "gcs": f"127.0.0.1:{gcs}", "env": env}
    finally:
        # this head only (its own process group), and nothing of it is kept: no graceful shutdown
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        reap_processes_under(temp)  # workers the raylet started in process groups of their own
        shutil.rmtree(temp, ignore_errors=True)



WRONG_TOKEN = "0" * 64


# A refused driver retries as if the cluster were still starting (the GCS once a second for 20 s,
# a Ray client 3 times over 30 s): each attempt is refused the same way, so a refused driver here
# gives up after its first tries. The Ray client logs why each try failed at DEBUG level only.
REFUSED_QUICKLY = {"RAY_gcs_server_port_wait_time_s": "2", "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "1",
                   "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": "1"}


def connect_with(env: dict, address: str) -> subprocess.CompletedProcess:
    """A driver connecting to `address` with `env`'s token, in its own process."""
    code = ("import logging, sys; client_log = logging.getLogger('ray.util.client.worker'); "
            "client_log.setLevel(logging.DEBUG); client_log.addHandler(logging.StreamHandler(sys.stderr)); "
            f"import ray; ray.init(address={address!r}); print('CONNECTED', ray.cluster_resources().get('CPU'))")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)


def test_a_wrong_token_is_refused_by_the_gcs_the_job_api_and_the_client_server(head):
    """The cluster keeps token authentication on: the right token gets in, a wrong one does not,
    at each of the three doors a user knocks on (a driver at the GCS, `ray job`, a Ray client)."""
    import urllib.error
    import urllib.request

    wrong = {k: v for k, v in head["env"].items() if k != "RAY_AUTH_TOKEN_PATH"}
    wrong.update(REFUSED_QUICKLY, RAY_AUTH_TOKEN=WRONG_TOKEN)
    assert "CONNECTED" in connect_with(head["env"], head["gcs"]).stdout
    refused = connect_with(wrong, head["gcs"])
    assert "CONNECTED" not in refused.stdout and refused.returncode != 0, refused.stdout[-500:]
    assert "InvalidAuthToken: Authentication token is missing or incorrect" in refused.stderr, refused.stderr[-1500:]
    jobs = subprocess.run([RAY, "job", "list", "--address", head["dashboard"]], env=wrong, capture_output=True,
                          text=True, timeout=120)
    assert jobs.returncode != 0 and "auth" in (jobs.stdout + jobs.stderr).lower(), (jobs.stdout + jobs.stderr)[-1500:]
    with pytest.raises(urllib.error.HTTPError) as http:  # the job API without any token
        urllib.request.urlopen(f"{head['dashboard']}/api/jobs/", timeout=30)
    assert http.value.code in (401, 403)
    # last: a refused client may leave the client server busy for a moment (the right token's client
    # door is the one test_ray_client_drives_rounds_while_a_second_client_watches walks through)
    client = connect_with(wrong, head["client"])
    assert "CONNECTED" not in client.stdout and client.returncode != 0, client.stdout[-500:]
    assert "Received when checking init: Invalid or missing authentication token" in client.stderr, client.stderr[-1500:]


def submit(head, *args: str, timeout: float = 400, module: str = "orchestrator.main",
           env: dict | None = None) -> tuple[str, str]:
    """`ray job submit ... -- python -m <module> <args>` from the repo root; returns (final status, logs)."""
    runtime_env = json.dumps({"excludes": [".git", ".venv", ".ci", "runs", "**/__pycache__", "*.egg-info"],
                              "env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                                           **(env or {})}})
    cmd = [RAY, "job", "submit", "--address", head["dashboard"], "--working-dir", ".", "--no-wait",
           "--runtime-env-json", runtime_env, "--", "python", "-m", module, *args]
    for _ in range(60):  # right after start the head's job agent may not be registered yet
        out = subprocess.run(cmd, cwd=ROOT, env=head["env"], capture_output=True, text=True, timeout=120)
        if "No available agent" not in out.stderr:
            break
        time.sleep(2)
    assert out.returncode == 0, out.stderr[-2000:]
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", out.stdout).group(0)
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(head["dashboard"])
    done = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    wait_for(lambda: client.get_job_status(job_id) in done, timeout, f"job {job_id}")
    status = client.get_job_status(job_id).value
    logs = client.get_job_logs(job_id)
    return status, logs


def cluster_node_ids(head) -> set[str]:
    from ray.util.state import list_nodes

    return {node.node_id for node in list_nodes(address=head["dashboard"])}


def placed_nodes(run_dir: Path) -> set[str]:
    """The node ids the run's agents were placed on (its `placement` event)."""
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return set(next(e for e in events if e["event"] == "placement")["nodes"].values())


def test_job_submit_runs_on_the_existing_cluster(head, tmp_path, cache_dir):
    # no output_dir: a job's default run directory lies under the storage root, not in Ray's temporary
    # copy of the working_dir (deleted with the session), and the log says where
    status, logs = submit(head, *TINY_RUN, "rounds=1", "teachers.count=2", f"cache_dir={cache_dir}", "progress=true",
                          env={"W2S_STORAGE": str(tmp_path / "store")})
    assert status == "SUCCEEDED", logs[-3000:]
    [run_dir] = list((tmp_path / "store").iterdir())
    assert f"run directory: {run_dir}" in logs
    assert placed_nodes(run_dir) <= cluster_node_ids(head)  # its agents ran on the cluster, not on a second Ray
    assert "round 0 done" in logs and "round 1 done" in logs  # progress reaches the job's logs
    # quiet job logs: one line per finished stage, no bar redrawn every poll
    assert logs.count("stage teacher_sft ") == 1 and logs.count("stage train ") == 1, logs[-3000:]
    assert "agent/s" not in logs and "\r" not in logs
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]


def test_job_with_bad_config_fails_with_one_line(head):
    status, logs = submit(head, "teachers.count=0", timeout=120)
    assert status == "FAILED"
    assert "error: teachers.count=0: need at least one teacher" in logs
    assert "Traceback" not in logs


# Ray's client proxy starts one server process per client connection; on a loaded machine that start
# now and then fails ("Starting Ray client server failed") before any of our code runs. The client
# scripts retry the connection, as a user would; what each test checks begins once it is connected.
CONNECT = """
import time
import ray


def connect(address, **kwargs):
    for attempt in range(3):
        try:
            return ray.init(address, **kwargs)
        except ConnectionAbortedError:
            if attempt == 2:
                raise
            time.sleep(2)
"""


def test_ray_client_drives_rounds_while_a_second_client_watches(head, tmp_path, cache_dir):
    """Client A drives rounds step by step (setup, run_round, attach by name, add_teacher, run_round);
    client B, its own Ray client connection, gets progress() answers from the same orchestrator
    while A's first round runs (the actor serves calls concurrently). B connects and says so before
    A starts that round, so the round cannot end before B is listening."""
    ready, observed = tmp_path / "b-ready", tmp_path / "b-observed"
    runtime_env = {"working_dir": str(ROOT), "excludes": [".git", ".venv", ".ci", "runs", "**/__pycache__", "*.egg-info"]}
    client_a = CONNECT + textwrap.dedent(f"""
        import json, os, time, ray
        from orchestrator import load_config, Orchestrator
        connect({head['client']!r}, runtime_env={runtime_env!r})
        config = load_config(None, {[*TINY_RUN, "rounds=2", "teachers.count=1", f"output_dir={tmp_path / 'client-run'}",
                                     f"cache_dir={cache_dir}", "train.student_macpo.epochs=20"]!r})
        orch = Orchestrator.options(name="orchestrator:client-test", namespace=config.ray.namespace).remote(config.to_dict())
        ray.get(orch.setup.remote())
        while not os.path.exists({str(ready)!r}):
            time.sleep(0.1)
        ray.get(orch.run_round.remote())
        attached = ray.get_actor("orchestrator:client-test", namespace=config.ray.namespace)
        progress = ray.get(attached.progress.remote())
        while not os.path.exists({str(observed)!r}):
            time.sleep(0.1)
        name = ray.get(orch.add_teacher.remote({{"name_or_path": "tiny:test", "max_length": 48, "seed": 3}}))
        ray.get(orch.run_round.remote())
        summary = ray.get(orch.summary.remote())
        ray.get(orch.shutdown.remote())
        print("RESULT " + json.dumps({{"progress": progress, "added": name, "summary": summary}}))
    """)
    client_b = CONNECT + textwrap.dedent(f"""
        import json, pathlib, time, ray
        connect({head['client']!r})
        while True:
            try:
                orch = ray.get_actor("orchestrator:client-test", namespace="w2s")
                if ray.get(orch.progress.remote(), timeout=30)["round"] == 0:
                    break
            except ValueError:
                pass
            time.sleep(0.2)
        pathlib.Path({str(ready)!r}).touch()
        seen = []
        while True:
            info = ray.get(orch.progress.remote(), timeout=30)
            seen.append((info["round"], info["stage"]))
            if info["round"] == 1:
                break
            time.sleep(0.05)
        pathlib.Path({str(observed)!r}).touch()
        print("RESULT " + json.dumps(seen))
    """)
    a = subprocess.Popen([sys.executable, "-c", client_a], cwd=tmp_path, env=head["env"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        b = subprocess.run([sys.executable, "-c", client_b], cwd=tmp_path, env=head["env"], capture_output=True,
                           text=True, timeout=400)
        assert b.returncode == 0, (b.stdout + b.stderr)[-3000:]
        seen = json.loads(next(line for line in b.stdout.splitlines() if line.startswith("RESULT "))[7:])
        during = {stage for index, stage in seen if index == 0 and stage}
        assert "train" in during, seen  # answered mid-round, with the stage running then
        out = a.communicate(timeout=400)[0]
        assert a.returncode == 0, out[-3000:]
    finally:
        if a.poll() is None:
            a.kill()
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    assert result["progress"]["round"] == 1 and result["progress"]["agents"] == ["student", "teacher_0"]
    assert result["added"] == "teacher_1"
    rounds = result["summary"]["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert set(rounds[2]["eval"]) == {"student", "teacher_0", "teacher_1"}  # the new teacher took part
    assert "teacher_1" not in rounds[1]["eval"]


SWEEP = ["--grid", "rounds=1", "--seeds", "0", "--claim", "student.final >= student.round0", "--max-concurrent", "1",
         *[o for o in TINY_RUN if o != "progress=false"], "teachers.count=1", "baselines.strong_ceiling=false"]


def test_sweep_under_job_submit_runs_on_the_cluster(head, tmp_path, cache_dir):
    sweep_dir = tmp_path / "job-sweep"
    status, logs = submit(head, *SWEEP, "--output-dir", str(sweep_dir), f"cache_dir={cache_dir}",
                          module="orchestrator.sweep")
    assert status == "SUCCEEDED", logs[-3000:]
    results = json.loads((sweep_dir / "results.json").read_text())
    [trial_dir] = [p for p in (sweep_dir / "runs").iterdir() if p.is_dir()]
    assert placed_nodes(trial_dir) <= cluster_node_ids(head)  # the trial's agents ran on the cluster
    assert [t["status"] for t in results["trials"]] == ["done"]
    assert [len(t["per_round"]["student"]) for t in results["trials"]] == [2]
    assert "holds in" in logs


def test_sweep_from_a_ray_client(head, tmp_path, cache_dir):
    sweep_dir = tmp_path / "client-sweep"
    script = CONNECT + textwrap.dedent(f"""
        import json, ray
        from orchestrator.sweep import run_sweep
        from orchestrator.sweep_spec import SweepSpec, grid_settings, parse_claim
        connect({head['client']!r}, runtime_env={{"working_dir": {str(ROOT)!r},
                 "excludes": [".git", ".venv", ".ci", "runs", "**/__pycache__", "*.egg-info"]}})
        spec = SweepSpec(name="client", settings=grid_settings(["rounds=1"]), seeds=[0],
                         overrides={[*[o for o in TINY_RUN if o != "progress=false"], "teachers.count=1",
                                     "baselines.strong_ceiling=false", f"cache_dir={cache_dir}"]!r},
                         claims=[parse_claim("student.final >= student.round0")])
        results = run_sweep(spec, {str(sweep_dir)!r}, max_concurrent=1)
        print("RESULT " + json.dumps([t["status"] for t in results["trials"]]))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=head["env"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:]) == ["done"]
    assert json.loads((sweep_dir / "results.json").read_text())["claims"][0]["n"] == 1


def test_cluster_launcher_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises jsonschema.ValidationError when invalid
    assert any("pip install" in cmd and "-e" in cmd for cmd in config["setup_commands"])
    assert "gpu_worker" in config["available_node_types"]
    broken = dict(config, max_workerz=1)
    with pytest.raises(Exception, match="max_workerz"):
        validate_config(prepare_config(broken))
