"""Agent workers forked from a warm zygote (agents.prefork): they run Ray's worker with their own
arguments, environment and streams, share one zygote per node, die with the process Ray started
(even when it is SIGKILLed), report its exit status, and fall back to a plain start when no zygote
can serve them. (That forking changes no result: test_sharded_agents runs the same world plain and
forked and compares rewards and adapters.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents import prefork
from orchestrator.pool import forks

ROOT = Path(__file__).resolve().parent.parent


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except FileNotFoundError:
        return []


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def gone(pid: int, within_s: float = 60.0) -> bool:
    """Whether the process has exited (a zombie counts) within a generous deadline."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def test_only_cpu_actors_of_a_job_without_its_own_interpreter_are_forked():
    assert forks(0, {}, "linux") and forks(0.0, {"env_vars": {"A": "1"}, "working_dir": "."}, "linux")
    assert not forks(0, {}, "darwin")  # abstract unix sockets and pidfds are Linux's
    assert not forks(1, {}) and not forks(0.5, {})  # CUDA does not survive a fork
    for key in ("pip", "uv", "conda", "py_executable", "container", "image_uri"):
        assert not forks(0, {key: "x"}), key


def test_without_a_raylet_a_worker_starts_the_plain_way(tmp_path):
    script = tmp_path / "w.py"
    script.write_text("import os, sys\nprint(os.environ.get('W2S_PREFORK_ZYGOTE'), sys.argv[1:])\nsys.exit(3)\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_RAYLET_PID"}
    out = subprocess.run([sys.executable, "-m", "agents.prefork", str(script), "--x=1"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (3, "None ['--x=1']\n"), out.stderr


def test_a_zygote_forks_workers_relays_their_status_and_ends_with_its_raylet(tmp_path):
    raylet = subprocess.Popen(["sleep", "600"])  # stands in for the node's raylet
    script = tmp_path / "w.py"
    script.write_text("import os, sys\nimport torch\n"
                      "line = f\"{os.environ.get('W2S_PREFORK_ZYGOTE')} {os.getppid()} {os.environ['MARK']} {sys.argv[1:]} "
                      "{os.getcwd()} {os.getsid(0) == os.getpid()}\"\n"
                      "open(os.environ['LOG'], 'a').write(line + '\\n')\nprint(line)\nsys.exit(int(sys.argv[1]))\n")
    env = dict(os.environ, RAY_RAYLET_PID=str(raylet.pid), PYTHONPATH=str(ROOT), LOG=str(tmp_path / "log"))

    def worker(code: int, mark: str, ready_s: str = "120") -> list[str]:
        out = subprocess.run([sys.executable, "-m", "agents.prefork", str(script), str(code)], cwd=tmp_path,
                             env=dict(env, MARK=mark, W2S_PREFORK_READY_S=ready_s), capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == code, out.stderr
        return out.stdout.split()

    try:
        # the first worker starts the zygote and does not wait for its imports: it starts the plain way
        impatient = worker(5, "a", ready_s="0.001")
        assert impatient[0] == "None"
        zygote_a, parent_a, mark_a, *rest_a = worker(7, "a")
        assert zygote_a == parent_a and "--zygote" in cmdline(int(zygote_a))  # a child of a zygote...
        assert rest_a == ["['7']", str(tmp_path), "True"]  # ...with its arguments, directory and session
        env["W2S_PREFORK_IDLE_S"] = "2"  # zygote b ends once it has nothing to do
        zygote_b, parent_b, mark_b, *_ = worker(0, "b")
        assert zygote_b == parent_b and (mark_a, mark_b) == ("a", "b")  # and its own environment
        assert zygote_a != zygote_b  # another environment, another zygote
        assert worker(0, "b")[0] == zygote_b  # the same environment reuses its zygote
        # the worker that gave up waiting ran once, the plain way: the zygote never forked it too
        assert [line.split()[2] for line in (tmp_path / "log").read_text().splitlines()] == ["a", "a", "b", "b"]
        assert gone(int(zygote_b)) and not gone(int(zygote_a), within_s=0)  # idle: b ends, a waits longer
    finally:
        raylet.kill()
        raylet.wait()
    assert gone(int(zygote_a))  # and a zygote ends with its raylet


def stand_in_of(worker_id: str) -> int:
    """The process Ray started for a forked worker: the one whose arguments carry its worker id."""
    return next(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                and f"--worker-id={worker_id}" in cmdline(int(p.name)))


@pytest.mark.ray
def test_agent_actors_are_forks_that_die_with_the_process_ray_started(ray_cluster, tiny_spec, cache_dir):
    from agents.actor import AgentActor

    agent = AgentActor.options(num_cpus=0.1, runtime_env={"py_executable": prefork.command()}).remote(
        "forked", tiny_spec(), cache_dir)
    info = ray_cluster.get(agent.info.remote(), timeout=300)
    assert info["forked"]
    zygote = parent_of(info["pid"])
    assert "agents.prefork" in cmdline(zygote) and "--zygote" in cmdline(zygote)
    result, _, _ = ray_cluster.get(agent.call.remote("logprobs", ["a"], ["b"]), timeout=120)
    assert len(result["sum"]) == 1 and result["n_tokens"] == [2]  # the forked agent computes

    @ray_cluster.remote(num_cpus=0.1, runtime_env={"py_executable": prefork.command()})
    class Probe:
        def where(self):
            import numpy
            import ray
            import torch
            from ray._raylet import ObjectID

            return (os.getpid(), ray.get_runtime_context().get_worker_id(), ObjectID.from_random().hex(),
                    float(numpy.random.random()), torch.initial_seed())

    probes = [Probe.remote(), Probe.remote()]
    (pid_1, worker_1, id_1, np_1, seed_1), (pid_2, worker_2, id_2, np_2, seed_2) = ray_cluster.get(
        [p.where.remote() for p in probes], timeout=300)
    assert parent_of(pid_1) == parent_of(pid_2) == zygote  # one zygote per node and environment
    # each child its own random streams, as each plain process has: Ray's ids (two children that
    # shared the zygote's generator collided in the object store), numpy's and torch's default generators
    assert id_1 != id_2 and np_1 != np_2 and seed_1 != seed_2
    # the process Ray started stands in for the worker; Ray may SIGKILL it, which cannot be
    # forwarded: the worker must die with it, or Ray would count a dead worker that still runs
    stand_in = stand_in_of(worker_1)
    assert stand_in != pid_1 and "agents.prefork" in cmdline(stand_in)
    os.kill(stand_in, signal.SIGKILL)
    assert gone(pid_1)
    with pytest.raises(ray_cluster.exceptions.RayActorError):
        ray_cluster.get(probes[0].where.remote(), timeout=60)
    # ray.kill ends the worker, and its stand-in exits with it
    stand_in_2 = stand_in_of(worker_2)
    ray_cluster.kill(probes[1])
    assert gone(pid_2) and gone(stand_in_2)
    ray_cluster.kill(agent)
