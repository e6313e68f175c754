"""Ray integration: agent actors and the whole MACPO / WSPO pipelines on a local cluster."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from orchestrator import load_config

pytestmark = pytest.mark.ray

TINY = ["student.name_or_path=tiny:test-strong", "student.max_length=48",
        "teachers.specs.0.name_or_path=tiny:test", "teachers.specs.0.max_length=48",
        "task.n_labelled=24", "task.n_unlabelled=24", "task.n_test=24",
        "sampling.max_new_tokens=26", "eval_sampling.max_new_tokens=26",
        "resources.student.num_cpus=0.25", "resources.teacher.num_cpus=0.25", "progress=false"]


def tiny_config(tmp_path, cache_dir, *extra, path=None):
    cfg = load_config(path, [*TINY, f"output_dir={tmp_path / 'run'}", f"cache_dir={cache_dir}", *extra])
    return cfg


def test_agent_actor_answers_generate_logprobs_train(ray_cluster, cache_dir, tiny_spec):
    from agents import Agent, AgentActor

    actor = AgentActor.options(num_cpus=0.25).remote("a", tiny_spec(), cache_dir, 1)
    local = Agent("a", tiny_spec(), cache_dir=cache_dir)
    prompts, answers = ["reverse: abc=", "sort: cba="], ["cba", "abc"]
    greedy = {"temperature": 0.0, "max_new_tokens": 6}
    assert ray_cluster.get(actor.generate.remote(prompts, greedy)) == local.generate(prompts, greedy)
    remote_lp = ray_cluster.get(actor.logprobs.remote(prompts, answers))
    assert remote_lp["sum"] == pytest.approx(local.logprobs(prompts, answers)["sum"], abs=1e-5)
    metrics, seconds = ray_cluster.get(actor.call.remote("train", [{"prompt": p, "response": r} for p, r in zip(prompts, answers)],
                                                         "sft", {"lr": 1e-2, "epochs": 5, "batch_size": 2}))
    assert metrics["steps"] == 5 and seconds > 0
    assert sum(ray_cluster.get(actor.logprobs.remote(prompts, answers))["mean"]) > sum(remote_lp["mean"])
    ray_cluster.kill(actor)


def test_macpo_pipeline_two_teachers_one_round(ray_cluster, cache_dir, tmp_path):
    from orchestrator.api import run

    cfg = tiny_config(tmp_path, cache_dir, "rounds=1", "teachers.count=2")
    summary = run(cfg)
    run_dir = tmp_path / "run"
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["agents"] == ["student", "teacher_0", "teacher_1"] == summary["agents"]
    assert [r["round"] for r in on_disk["rounds"]] == [0, 1]
    for record in on_disk["rounds"]:
        assert set(record["eval"]) == {"student", "teacher_0", "teacher_1"}
        assert all(0.0 <= m["reward"] <= 1.0 for m in record["eval"].values())
        assert record["timing"]["wall_s"] > 0 and set(record["timing"]["actor_s"]) >= {"student", "teacher_0"}
    assert "student_sft_weak_labels" in on_disk["baselines"] and "student_sft_gold" in on_disk["baselines"]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "plots" / "rewards.png").stat().st_size > 1000
    events = [json.loads(line)["event"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"stage", "round", "pairs"} <= set(events)
    # every agent's adapter changed during round 1, and checkpoints load in plain peft
    for agent in ("student", "teacher_0", "teacher_1"):
        before = load_file(str(run_dir / "checkpoints" / "round_0" / agent / "default" / "adapter_model.safetensors"))
        after = load_file(str(run_dir / "checkpoints" / "round_1" / agent / "default" / "adapter_model.safetensors"))
        assert any(not torch.equal(before[k], after[k]) for k in before), agent
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".round_")]


def test_frozen_teachers_keep_their_adapters(ray_cluster, cache_dir, tmp_path):
    from orchestrator.api import run

    run(tiny_config(tmp_path, cache_dir, "rounds=1", "teachers.count=1", "ablation.teachers_learn=false",
                    "baselines.strong_ceiling=false"))
    ckpt = tmp_path / "run" / "checkpoints"
    before = load_file(str(ckpt / "round_0" / "teacher_0" / "default" / "adapter_model.safetensors"))
    after = load_file(str(ckpt / "round_1" / "teacher_0" / "default" / "adapter_model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
