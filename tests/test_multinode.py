"""A MACPO round on a real multi-node Ray cluster on this machine (a head and two worker nodes,
each its own raylet, via `ray.cluster_utils.Cluster`) with the run directory on an S3 server: the
teachers land on different nodes, the student is two FSDP2 ranks on the two nodes that carry its
custom resource (one process group across nodes), and nothing relies on a path only one node sees;
and a node lost mid-round costs no committed round."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import TINY_RUN

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import json, sys
import ray
from ray.cluster_utils import Cluster
from orchestrator import load_config
from orchestrator.api import run

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head_node": 1}})
for name in ("node_a", "node_b"):
    cluster.add_node(num_cpus=1, resources={name: 1, "student_node": 1})
cluster.wait_for_nodes()
ray.init(address=cluster.address, namespace="w2s-multinode")
nodes = {n["NodeID"]: sorted(k for k in n["Resources"] if k in ("head_node", "node_a", "node_b")) for n in ray.nodes()}
try:
    summary = run(load_config(None, sys.argv[1:]))
    print("RESULT " + json.dumps({"nodes": nodes, "rounds": [r["round"] for r in summary["rounds"]]}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


@pytest.mark.parametrize("strategy", ["STRICT_SPREAD"])
def test_a_round_across_three_nodes_with_the_run_on_s3(s3, tmp_path, cache_dir, strategy):
    import s3fs

    uri = "s3://runs/multinode"
    args = [*TINY_RUN, "teachers.count=2", "baselines.strong_ceiling=false", "rounds=1", f"output_dir={uri}",
            f"cache_dir={cache_dir}", f"placement.strategy={strategy}", "resources.student.custom={student_node: 1}",
            "resources.student.ranks=2", "resources.student.rank_placement=STRICT_SPREAD"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **s3["env"])
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=500)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, (out.stdout + out.stderr)[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["rounds"] == [0, 1]
    fs = s3fs.S3FileSystem(endpoint_url=s3["endpoint"], key="testing", secret="testing")
    events = [json.loads(line) for line in fs.cat("runs/multinode/metrics.jsonl").decode().splitlines()]
    placed = next(e for e in events if e["event"] == "placement")
    assert placed["strategy"] == strategy
    where = placed["nodes"]  # agent -> node id
    assert set(where) == {"student", "teacher_0", "teacher_1"}
    assert where["teacher_0"] != where["teacher_1"], where  # the agents' group: one per node
    ranks = placed["ranks"]["student"]  # rank 0 first
    assert ranks[0] == where["student"] and len(set(ranks)) == 2, ranks  # one process group over two nodes
    assert sorted(result["nodes"][node][0] for node in ranks) == ["node_a", "node_b"]  # pinned by its custom resource
    for name in ("round_0", "round_1"):  # written by agents on three nodes, committed by the orchestrator
        assert fs.exists(f"runs/multinode/checkpoints/{name}/COMMITTED")
        assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"runs/multinode/checkpoints/{name}")) == \
            ["COMMITTED", "orchestrator_state.json", "student", "teacher_0", "teacher_1"]


NODE_LOSS_SCRIPT = """
import json, sys, threading, time
import ray, s3fs
from ray.cluster_utils import Cluster
from orchestrator import load_config
from orchestrator.api import run

endpoint, prefix = sys.argv[1], sys.argv[2]
# the GCS declares a silent node dead after 2 missed health checks 0.5 s apart (Ray's default: 5
# missed, 3 s apart, about 20 s in which the lost teacher's call just waits): a cluster's own setting,
# the same recovery path, sooner
health = {"health_check_period_ms": 500, "health_check_timeout_ms": 500, "health_check_failure_threshold": 2}
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": health})
workers = [cluster.add_node(num_cpus=1) for _ in range(3)]  # three agents, one spare node
cluster.wait_for_nodes()
ray.init(address=cluster.address, namespace="w2s-node-loss")
fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing")
removed = {}

def events():
    fs.invalidate_cache()
    try:
        return [json.loads(line) for line in fs.cat(prefix + "/metrics.jsonl").decode().splitlines()]
    except FileNotFoundError:
        return []

def remove_a_teachers_node():
    # once round 0 is committed and logged, round 1 is under way: take away a node holding a
    # teacher (not the head, where the driver and orchestrator live) as a machine failure would
    deadline = time.time() + 400
    while time.time() < deadline and not removed:
        seen = events()
        placed = next((e for e in seen if e["event"] == "placement"), None)
        if placed and any(e["event"] == "round" and e["round"] == 0 for e in seen):
            head = cluster.head_node.node_id
            for agent in ("teacher_1", "teacher_0"):
                node = next((w for w in workers if w.node_id == placed["nodes"][agent] != head), None)
                if node is not None:
                    time.sleep(1.0)
                    cluster.remove_node(node, allow_graceful=False)
                    removed.update(agent=agent, node=node.node_id)
                    return
            removed.update(agent=None)
            return
        time.sleep(0.3)

watcher = threading.Thread(target=remove_a_teachers_node, daemon=True)
watcher.start()
try:
    summary = run(load_config(None, sys.argv[3:]))
    watcher.join(timeout=5)
    print("RESULT " + json.dumps({"removed": removed, "rounds": [r["round"] for r in summary["rounds"]]}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_a_node_lost_mid_round_costs_no_committed_round(s3, tmp_path, cache_dir):
    """Fault: a worker node holding a teacher dies while round 1 runs, with the run on S3. The
    agent's bundle moves to the spare node, the actor restarts there from its last snapshot, its call
    is redone, and the run finishes: every round logged once, every checkpoint committed."""
    import s3fs

    prefix = "runs/node-loss"
    args = [*TINY_RUN, "teachers.count=2", "baselines.strong_ceiling=false", "rounds=2", f"output_dir=s3://{prefix}",
            # a lost node can cost two restarts: the actor that was on it, and its replacement if Ray
            # places it there again before it has declared the node dead
            f"cache_dir={cache_dir}", "placement.strategy=SPREAD", "train.teacher_macpo.epochs=10", "ray.max_failures=4",
            "train.student_macpo.epochs=10"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **s3["env"])
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(NODE_LOSS_SCRIPT), s3["endpoint"], prefix, *args],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=550)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, (out.stdout + out.stderr)[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["removed"].get("agent"), result  # a node was really taken away mid-run
    assert result["rounds"] == [0, 1, 2]
    fs = s3fs.S3FileSystem(endpoint_url=s3["endpoint"], key="testing", secret="testing")
    events = [json.loads(line) for line in fs.cat(f"{prefix}/metrics.jsonl").decode().splitlines()]
    assert [e["round"] for e in events if e["event"] == "round"] == [0, 1, 2]  # none lost, none twice
    for name in ("round_0", "round_1", "round_2"):
        assert fs.exists(f"{prefix}/checkpoints/{name}/COMMITTED")
    state = json.loads(fs.cat(f"{prefix}/checkpoints/round_2/orchestrator_state.json"))
    assert state["failures"].get(result["removed"]["agent"], 0) >= 1, state["failures"]  # it was restarted
