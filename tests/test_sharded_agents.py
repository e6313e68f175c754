"""Sharded agents on Ray (`resources.<role>.ranks`): a run with a two-rank FSDP2 student gives the
rewards of the same run with one rank, through a rank killed mid-training, and bad `ranks` settings
are refused before any model loads. (The agent-level equalities: test_sharding; ranks on two nodes:
test_multinode; the default run with a two-rank student against the published reference:
`benchmarks/reference_run.py --ranks 2`, results/sharded_reference.json.)"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from safetensors.torch import load_file

from benchmarks.reference_run import TOLERANCE, max_difference
from orchestrator import load_config
from tests.conftest import TINY_RUN

pytestmark = [pytest.mark.ray, pytest.mark.slow]
# test size, one round: round 1 holds the student's MACPO training, where a rank is killed
TINY_ONE_ROUND = [*TINY_RUN, "rounds=1"]
ADAPTER_ATOL = 1e-4


def test_a_two_rank_student_gives_the_one_rank_rewards_through_a_killed_rank(ray_cluster, tmp_path, cache_dir):
    from orchestrator.api import run
    from orchestrator.core import OrchestratorCore

    # the one-rank run starts its agents the plain way, the two-rank run forks them from a warm
    # process (agents.prefork): the equalities below also show that forking changes no result
    one_rank = run(load_config(None, [*TINY_ONE_ROUND, f"cache_dir={cache_dir}", f"output_dir={tmp_path / 'one'}",
                                      "ray.prefork=false"]))
    run_dir = tmp_path / "two"
    core = OrchestratorCore(load_config(None, [*TINY_ONE_ROUND, f"cache_dir={cache_dir}", f"output_dir={run_dir}",
                                               "resources.student.ranks=2", "ray.max_failures=1"]))
    try:
        core.setup()
        infos = [ray_cluster.get(actor.info.remote()) for actor in core.pool.ranks["student"]]
        assert [i["rank"] for i in infos] == [0, 1] and infos[0]["pid"] != infos[1]["pid"]
        killed = threading.Event()

        def kill_rank_one_while_the_student_trains():
            while "train" not in (core.current_stage or "").split(" + "):  # the student's MACPO training, round 1
                time.sleep(0.005)
            os.kill(infos[1]["pid"], signal.SIGKILL)
            killed.set()

        threading.Thread(target=kill_rank_one_while_the_student_trains, daemon=True).start()
        summary = core.run()
        assert killed.is_set()
        assert core.pool.failures == {"student": 1}  # the group restarted once, from its last snapshot
        new = [ray_cluster.get(actor.info.remote())["pid"] for actor in core.pool.ranks["student"]]
        assert not {i["pid"] for i in infos} & set(new)  # both ranks replaced: they share one process group
    finally:
        core.shutdown()
    difference, problems = max_difference(one_rank, summary)
    assert not problems and difference <= TOLERANCE, (difference, problems)
    # and the same student: at test size a few greedy answers could hide a training difference, so
    # its adapter after the round must equal the one-rank adapter up to float summation order
    one = load_file(str(tmp_path / "one" / "checkpoints" / "round_1" / "student" / "default" / "adapter_model.safetensors"))
    two = load_file(str(run_dir / "checkpoints" / "round_1" / "student" / "default" / "adapter_model.safetensors"))
    assert one.keys() == two.keys()
    largest = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert largest <= ADAPTER_ATOL, largest
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["round"] for e in events if e["event"] == "round"] == [0, 1]  # each logged once
    placed = next(e for e in events if e["event"] == "placement")
    assert len(placed["ranks"]["student"]) == 2
    assert {a["forked"] for a in placed["cpu"].values()} == {True}
    plain = next(json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["event"] == "placement")
    assert {a["forked"] for a in plain["cpu"].values()} == {False}


@pytest.mark.parametrize("overrides, message", [
    (["resources.student.ranks=0"], "resources.student.ranks=0: a positive integer"),
    (["resources.student.ranks=1.5"], "resources.student.ranks"),
    (["resources.student.num_gpus=8", "resources.student.ranks=3"], "must divide resources.student.num_gpus=8"),
    (["resources.student.ranks=2", "student.device_map=auto"], "student.device_map='auto': a sharded agent"),
    (["resources.student.ranks=2", "student.backend=vllm"], "student.backend='vllm': a sharded agent"),
    (["resources.student.rank_placement=EVERYWHERE"], "resources.student.rank_placement"),
])
def test_bad_ranks_are_one_line_before_any_model_loads(overrides, message):
    from orchestrator.config import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(None, overrides)
