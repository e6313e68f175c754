"""A MACPO round on a real multi-node Ray cluster on this machine (a head and two worker nodes,
each its own raylet, via `ray.cluster_utils.Cluster`) with the run directory on an S3 server: the
agents land on different nodes, the student on the node that carries its custom resource, and
nothing relies on a path only one node sees."""
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
    cluster.add_node(num_cpus=1, resources={name: 1})
cluster.wait_for_nodes()
ray.init(address=cluster.address, namespace="w2s-multinode")
nodes = {n["NodeID"]: sorted(k for k in n["Resources"] if k.endswith(("_node", "node_a", "node_b"))) for n in ray.nodes()}
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
            f"cache_dir={cache_dir}", f"placement.strategy={strategy}", "resources.student.custom={node_a: 1}"]
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
    assert len(set(where.values())) == 3, where  # one agent per node
    assert result["nodes"][where["student"]] == ["node_a"]  # pinned by its custom resource
    for name in ("round_0", "round_1"):  # written by agents on three nodes, committed by the orchestrator
        assert fs.exists(f"runs/multinode/checkpoints/{name}/COMMITTED")
        assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"runs/multinode/checkpoints/{name}")) == \
            ["COMMITTED", "orchestrator_state.json", "student", "teacher_0", "teacher_1"]
