"""Rehearsal of the paper path: every paper config runs end to end with only its models, data and
judges swapped for local stand-ins of the same families (tests/paper_standins.py) and its sizes and
hardware shrunk (a few rows, one round, short answers, CPU float32 with the HF backend). Stage
sequence, templates, loaders (HH-RLHF's .jsonl.gz subsets, PKU-SafeRLHF's columns), losses,
schedules and both judges are the configs' own."""
from __future__ import annotations

import json

import pytest

from orchestrator import load_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MACPO_TEACHERS = ["llama2-7b", "mistral-7b", "llama3-8b"]  # Llama2-7B, Mistral-7B, Llama3-8B, as configured
PAPER = {  # config -> (data, student, teachers, stages the run must go through)
    "macpo_hh_helpful": ("hh", "llama2-70b", MACPO_TEACHERS, ["teacher_sft", "student_sft", "student_negative_sft",
                                                              "teacher_negative_sft", "generate", "train"]),
    "macpo_hh_harmless": ("hh", "llama2-70b", MACPO_TEACHERS, ["teacher_sft", "student_sft", "train"]),
    "macpo_pku_saferlhf": ("pku", "llama2-70b", MACPO_TEACHERS, ["teacher_sft", "student_sft", "train"]),
    "wspo_hh_rlhf": ("hh", "qwen2-7b", ["qwen2-1.5b"], ["tokenizer_check", "weak_dpo", "weak_logps_aligned",
                                                        "student_sft_baseline", "student_dpo_baseline", "student_wspo"]),
    "wspo_ultrafeedback": ("uf", "qwen2-7b", ["qwen2-1.5b"], ["tokenizer_check", "weak_dpo", "student_wspo"]),
}
JUDGE_METRICS = {"reward_model": {"rm_score", "rm_win_rate"}, "safety_model": {"safety_score", "safety_win_rate"}}


@pytest.fixture(scope="session")
def standins(tmp_path_factory):
    from tests.paper_standins import build_standins

    return build_standins(tmp_path_factory.mktemp("paper-standins"))


def rehearsal_overrides(name: str, standins: dict, run_dir) -> list[str]:
    data, student, teachers, _ = PAPER[name]
    out = [f"output_dir={run_dir}", "progress=false", "rounds=1", f"task.path={standins[data]}",
           "task.n_labelled=8", "task.n_unlabelled=6", "task.n_test=4",
           "sampling.max_new_tokens=10", "eval_sampling.max_new_tokens=10",
           f"student.name_or_path={standins[student]}", "student.backend=hf", "student.dtype=float32",
           "student.device_map=null", f"reward_model.name_or_path={standins['judge-helpful']}",
           "reward_model.dtype=float32", "resources.torch_threads=1", "resources.orchestrator_cpus=0.1"]
    paper = load_config(f"configs/{name}.yaml")
    if paper.resources.student.ranks > 1:  # a sharded student stays sharded, over 2 ranks
        out.append("resources.student.ranks=2")
    if paper.safety_model.name_or_path:  # the second judge where the config has one
        out += [f"safety_model.name_or_path={standins['judge-harmless']}", "safety_model.dtype=float32"]
    for i, teacher in enumerate(teachers):
        out += [f"teachers.specs.{i}.name_or_path={standins[teacher]}", f"teachers.specs.{i}.backend=hf",
                f"teachers.specs.{i}.dtype=float32"]
    for role in ("student", "teacher", "reward_model"):
        out += [f"resources.{role}.num_gpus=0", f"resources.{role}.num_cpus=0.1"]
    return out


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_config_runs_end_to_end_with_standins(name, standins, ray_cluster, tmp_path):
    from orchestrator.api import run

    paper = load_config(f"configs/{name}.yaml")
    overrides = rehearsal_overrides(name, standins, tmp_path / "run")
    # what the rehearsal keeps from the paper config (algorithm, templates, LoRA, schedules, data
    # subset, judges' reading): none of its overrides touches them
    touched = {o.split("=", 1)[0] for o in overrides}
    kept = ("algorithm", "train.", "wspo.", "ablation.", "macpo.", "student.template", "student.lora", "task.data_dir",
            "task.name", "reward_model.template", "safety_model.template", "reward_model.negate", "safety_model.negate")
    assert not {k for k in touched if k.startswith(kept) or k.endswith((".template", ".lora"))}, touched
    config = load_config(f"configs/{name}.yaml", overrides)
    assert (config.algorithm, config.student.template, config.student.lora, config.task.data_dir) == \
           (paper.algorithm, paper.student.template, paper.student.lora, paper.task.data_dir)
    summary = run(config)
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    agents = ["student", *[f"teacher_{i}" for i in range(len(PAPER[name][2]))]]
    judged = set().union(*(JUDGE_METRICS[slot] for slot in config.judges()))
    scores = {metric for metric in judged if metric.endswith("_score")}
    for record in summary["rounds"]:
        for agent in agents:
            metrics = record["eval"][agent]
            assert judged | {"preference_accuracy"} <= set(metrics)
            assert metrics["reward"] == metrics["rm_score"]
            # the answers themselves, for judges run after the run (AlpacaEval, Arena-Hard, MT-Bench)
            path = tmp_path / "run" / "eval" / f"round_{record['round']}" / f"{agent}.jsonl"
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            assert len(rows) == 4 and all({"prompt", "answer", "reference"} | scores <= set(r) for r in rows)
            assert sum(r["rm_score"] for r in rows) / 4 == pytest.approx(metrics["rm_score"])
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    stages = {e["stage"] for e in events if e.get("event") == "stage"}
    assert set(PAPER[name][3]) <= stages, set(PAPER[name][3]) - stages
    task = next(e for e in events if e.get("event") == "task")
    assert task["test"] == 4 and task["d_w"] == 8
    if name.startswith("macpo_hh"):  # only the configured HH subset's folder was read (its .jsonl.gz files)
        splits = json.loads((tmp_path / "run" / "splits.json").read_text())
        prompts = [ex["prompt"] for ex in splits["d_w"] + splits["test"]] + splits["q_w2s"]
        assert all(f"({paper.task.data_dir})" in p for p in prompts)
