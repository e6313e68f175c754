"""Ray integration: agent actors and the whole MACPO / WSPO pipelines on a local cluster."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from orchestrator import load_config
from tests.conftest import TINY_RUN

pytestmark = pytest.mark.ray


def tiny_config(tmp_path, cache_dir, *extra, path=None):
    cfg = load_config(path, [*TINY_RUN, f"output_dir={tmp_path / 'run'}", f"cache_dir={cache_dir}", *extra])
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
    metrics, seconds, cpu_seconds = ray_cluster.get(actor.call.remote("train", [{"prompt": p, "response": r} for p, r in zip(prompts, answers)],
                                                         "sft", {"lr": 1e-2, "epochs": 5, "batch_size": 2}))
    assert metrics["steps"] == 5 and seconds > 0 and cpu_seconds > 0
    assert sum(ray_cluster.get(actor.logprobs.remote(prompts, answers))["mean"]) > sum(remote_lp["mean"])
    # one call may run with more torch threads (an agent computing alone); the actor's own count returns after it
    assert ray_cluster.get(actor.call.remote("info", _threads=3))[0]["torch_threads"] == 3
    assert ray_cluster.get(actor.call.remote("info"))[0]["torch_threads"] == 1
    ray_cluster.kill(actor)


def setup_then_resume(tmp_path, cache_dir, *extra) -> tuple[dict, dict]:
    """Round 0 in one driver (setup, then shut down), the rest resumed by another from the run
    directory: (round 0 as setup reported it, the resumed run's summary)."""
    from orchestrator.api import run

    round0 = round_0_then_stop(tmp_path, cache_dir, *extra)
    summary = run(tiny_config(tmp_path, cache_dir, *extra), resume_dir=str(tmp_path / "run"))
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert summary["rounds"][0] == round0
    assert_resumed_not_redone(tmp_path / "run")
    return round0, summary


def round_0_then_stop(tmp_path, cache_dir, *extra) -> dict:
    """A driver that sets the run up (round 0, checkpointed) and shuts down: round 0's record."""
    from orchestrator.core import OrchestratorCore

    core = OrchestratorCore(tiny_config(tmp_path, cache_dir, *extra))
    try:
        return core.setup()["rounds"][0]
    finally:
        core.shutdown()


def assert_resumed_not_redone(run_dir) -> None:
    """Round 0 evaluated once, by the first driver; the second resumed from its checkpoint."""
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["round"] for e in events if e["event"] == "round"] == [0, 1]
    assert sum(e["event"] == "resume" for e in events) == 1


def test_macpo_pipeline_two_teachers_one_round_resumed_after_setup(ray_cluster, cache_dir, tmp_path, tiny_reward_model):
    _, summary = setup_then_resume(tmp_path, cache_dir, "rounds=1", "teachers.count=2",
                                   f"reward_model.name_or_path={tiny_reward_model}", "resources.teacher.nice=3",
                                   "resources.teacher.scheduler=idle", "resources.student.torch_threads=2",
                                   "resources.student.solo_threads=3")
    run_dir = tmp_path / "run"
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["agents"] == ["student", "teacher_0", "teacher_1"] == summary["agents"]
    assert [r["round"] for r in on_disk["rounds"]] == [0, 1]
    for record in on_disk["rounds"]:
        assert set(record["eval"]) == {"student", "teacher_0", "teacher_1"}
        # the rule stays the headline on the synthetic task; the reward model adds its own score
        assert all(isinstance(m["rm_score"], float) and m["rm_score"] != m["reward"] for m in record["eval"].values())
        assert record["timing"]["wall_s"] > 0 and set(record["timing"]["actor_s"]) >= {"student", "teacher_0"}
    assert "student_sft_weak_labels" in on_disk["baselines"] and "student_sft_gold" in on_disk["baselines"]
    # PGR from the numbers beside it: (student - best teacher) / (ceiling - best teacher)
    first, last = on_disk["rounds"][0]["eval"], on_disk["rounds"][-1]["eval"]
    weak, ceiling = max(first["teacher_0"]["reward"], first["teacher_1"]["reward"]), on_disk["baselines"]["student_sft_gold"]["reward"]
    assert on_disk["pgr"]["weak"] == weak and on_disk["pgr"]["ceiling"] == ceiling
    if ceiling - weak > 1e-9:
        assert on_disk["pgr"]["round_0"] == pytest.approx((first["student"]["reward"] - weak) / (ceiling - weak), abs=1e-4)
        assert on_disk["pgr"]["final"] == pytest.approx((last["student"]["reward"] - weak) / (ceiling - weak), abs=1e-4)
    else:
        assert on_disk["pgr"]["round_0"] is None
    assert "rm_score" in on_disk["baselines"]["student_sft_gold"]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "plots" / "rewards.png").stat().st_size > 1000
    events = [json.loads(line)["event"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"stage", "round", "pairs"} <= set(events)
    placed = next(json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                  if json.loads(line)["event"] == "placement")
    # per-role CPU scheduling reaches the actors: teachers 3 steps nicer than the student (on top of
    # the niceness Ray gives every worker) and idle-scheduled, a student with 2 torch threads
    cpu = placed["cpu"]
    assert cpu["teacher_0"]["nice"] == cpu["teacher_1"]["nice"] == cpu["student"]["nice"] + 3
    assert (cpu["teacher_0"]["scheduler"], cpu["teacher_1"]["scheduler"], cpu["student"]["scheduler"]) == ("idle", "idle", "normal")
    assert (cpu["student"]["torch_threads"], cpu["teacher_0"]["torch_threads"]) == (2, 1)
    # solo_threads: only the stages the student runs with nothing else computing, never one beside the
    # teachers (the ceiling's SFT and evaluation run in the background while the teachers initialise)
    stages = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "stage"]
    solo = {e["stage"] for e in stages if e.get("threads")}
    # round 1's student `train` may be alone too, but only if the teachers' background training had
    # ended before it began (whether it had depends on timing: either way is right)
    assert solo - {"train"} == {"select_weak_labels", "student_sft", "student_negative_sft", "student_hard_negatives"}, solo
    if "train" in solo:
        by_name = {e["stage"]: e for e in stages if e["round"] == 1}
        assert by_name["train_teachers"]["started"] + by_name["train_teachers"]["wall_s"] <= by_name["train"]["started"] + 1e-3
    assert all(e["threads"] == {"student": 3} for e in stages if e.get("threads"))
    # every agent's adapter changed during round 1, and checkpoints load in plain peft
    for agent in ("student", "teacher_0", "teacher_1"):
        before = load_file(str(run_dir / "checkpoints" / "round_0" / agent / "default" / "adapter_model.safetensors"))
        after = load_file(str(run_dir / "checkpoints" / "round_1" / agent / "default" / "adapter_model.safetensors"))
        assert any(not torch.equal(before[k], after[k]) for k in before), agent
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".round_")]


def test_reward_model_is_the_headline_on_real_data(ray_cluster, cache_dir, tmp_path, tiny_reward_model):
    """TRL-format file + two judges: `reward` is the reward model's mean score of each agent's greedy
    test answers (recomputed here in-process from the checkpoint), beside preference accuracy; the
    second judge (a cost model: negated) scores the same answers side by side, and both give win
    rates against the test split's chosen answers, in summary.json and the table."""
    from agents import Agent
    from agents.config import RewardModelSpec
    from agents.reward_model import RewardModel
    from orchestrator.api import run
    from orchestrator.evaluation import win_rate
    from orchestrator.main import format_table
    from tasks import TaskConfig, load_task
    from tests.conftest import build_tiny_reward_model

    cost_model = build_tiny_reward_model(tmp_path / "cost", prefer_refusal=False)  # scores compliance up: a cost

    synthetic = load_task(TaskConfig(n_labelled=60, n_unlabelled=8, n_test=8, harmful_fraction=0.5), seed=3)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": ex.prompt, "chosen": ex.chosen, "rejected": ex.rejected}) + "\n"
                            for ex in synthetic.d_w))
    summary = run(tiny_config(tmp_path, cache_dir, "rounds=0", "teachers.count=1", "task.name=trl", f"task.path={data}",
                              "task.n_labelled=0", "task.n_unlabelled=0", f"reward_model.name_or_path={tiny_reward_model}",
                              f"safety_model.name_or_path={cost_model}", "safety_model.negate=true"))
    evaluation = summary["rounds"][0]["eval"]
    for metrics in evaluation.values():
        assert metrics["reward"] == metrics["rm_score"] and "preference_accuracy" in metrics
        assert {"safety_score", "rm_win_rate", "safety_win_rate"} <= set(metrics)
    assert "safety_score" in format_table(summary) and "rm_win_rate" in format_table(summary)
    assert "rm_score" in summary["baselines"]["student_sft_gold"]
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    prompts = [ex["prompt"] for ex in splits["test"]]
    cfg = load_config(None, [*TINY_RUN])
    student = Agent("student", dataclasses.asdict(cfg.student), cache_dir=cache_dir, num_threads=1)
    student.load(str(tmp_path / "run" / "checkpoints" / "round_0" / "student"))
    answers = student.generate(prompts, dataclasses.asdict(cfg.eval_sampling))
    judge = RewardModel(RewardModelSpec(name_or_path=tiny_reward_model), num_threads=1)
    scores = judge.score(prompts, answers)
    assert evaluation["student"]["rm_score"] == pytest.approx(sum(scores) / len(scores), abs=1e-4)
    references = [ex["chosen"] for ex in splits["test"]]
    assert evaluation["student"]["rm_win_rate"] == pytest.approx(win_rate(scores, judge.score(prompts, references)))
    cost = RewardModel(RewardModelSpec(name_or_path=cost_model), num_threads=1).score(prompts, answers)
    assert evaluation["student"]["safety_score"] == pytest.approx(-sum(cost) / len(cost), abs=1e-4)


def adapter_changed(run_dir, agent, first=0, last=1) -> bool:
    ckpt = run_dir / "checkpoints"
    before = load_file(str(ckpt / f"round_{first}" / agent / "default" / "adapter_model.safetensors"))
    after = load_file(str(ckpt / f"round_{last}" / agent / "default" / "adapter_model.safetensors"))
    return any(not torch.equal(before[k], after[k]) for k in before)


WSPO = ["algorithm=wspo", "rounds=1", "teachers.count=1", "baselines.strong_ceiling=false",
        "train.wspo.epochs=2", "train.wspo.lr=5e-3", "train.student_dpo.epochs=2", "train.student_dpo.lr=5e-3",
        "train.weak_dpo.lr=5e-3"]


def test_wspo_pipeline_resumed_after_setup_reports_baselines_and_reuses_weak_cache(ray_cluster, cache_dir, tmp_path):
    from orchestrator.core import OrchestratorCore

    round0 = round_0_then_stop(tmp_path, cache_dir, *WSPO)
    core = OrchestratorCore(tiny_config(tmp_path, cache_dir, *WSPO), resume_dir=str(tmp_path / "run"))
    try:
        summary = core.run()
        assert [r["round"] for r in summary["rounds"]] == [0, 1]
        assert summary["rounds"][0] == round0
        assert_resumed_not_redone(tmp_path / "run")
        assert {"student_sft", "student_dpo", "weak_aligned"} <= set(summary["baselines"])
        assert set(summary["wspo"]) == {"student_wspo", "student_sft", "student_dpo", "weak_aligned"}
        cache = tmp_path / "run" / "cache" / "wspo_weak_logps.json"
        data = json.loads(cache.read_text())
        assert len(data["aligned"]) == len(core.task.d_w)
        # per-token arrays: one float per response token (+EOS), same positions on both sides
        assert [len(a) for a in data["aligned"]] == [len(r) for r in data["reference"]]
        assert [len(a) for a in data["aligned"]] == [len(ex.chosen) + 1 for ex in core.task.d_w]
        assert core.algorithm.weak_cache_hits == 0
        core.algorithm.weak_logps()  # a second request reads the cache instead of the teacher
        assert core.algorithm.weak_cache_hits == 1
        events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        wspo_train = [e for e in events if e.get("stage") == "student_wspo"][0]["train"]["student"]
        assert wspo_train["steps"] > 0
        assert adapter_changed(tmp_path / "run", "student")  # WSPO trained the student's own adapter
        before, after = (r["eval"]["student"] for r in summary["rounds"])
        assert after["reward"] > before["reward"], (before, after)  # pinned bases: the same rise on every machine
    finally:
        core.shutdown()


def test_wspo_refuses_mismatched_tokenizers(ray_cluster, cache_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from agents.agent import resolve_model_path
    from agents.tiny import SPECIAL_TOKENS, CHARACTERS, build_char_tokenizer
    from orchestrator.core import OrchestratorCore
    import agents.tiny as tiny

    other = tmp_path / "other-tokenizer-model"
    AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny:test", 0, cache_dir)).save_pretrained(other)
    original = list(CHARACTERS)
    tiny.CHARACTERS[:] = original[::-1]  # same size, different ids
    try:
        build_char_tokenizer().save_pretrained(other)
    finally:
        tiny.CHARACTERS[:] = original
    assert len(SPECIAL_TOKENS) == 4
    cfg = tiny_config(tmp_path, cache_dir, *WSPO, f"teachers.specs.0.name_or_path={other}")
    core = OrchestratorCore(cfg)
    try:
        with pytest.raises(Exception, match="same tokenizer"):
            core.setup()
    finally:
        core.shutdown()


def test_placement_error_instead_of_hang(ray_cluster, cache_dir, tmp_path):
    from orchestrator.core import OrchestratorCore
    from orchestrator.placement import PlacementError

    cfg = tiny_config(tmp_path, cache_dir, "teachers.count=2", "resources.teacher.num_gpus=1", "ray.placement_timeout_s=3")
    core = OrchestratorCore(cfg)
    try:
        with pytest.raises(PlacementError, match=r"cannot fit 3 agents .* need .* 2 GPU .* has 2 CPU and 0 GPU"):
            core.setup()
    finally:
        core.shutdown()


def test_sixteen_teachers_fit_two_cores(ray_cluster, cache_dir, tmp_path):
    from orchestrator.core import OrchestratorCore
    from orchestrator.pool import Call

    cfg = tiny_config(tmp_path, cache_dir, "teachers.count=16", "resources.teacher.num_cpus=0.1",
                      "resources.student.num_cpus=0.25")
    core = OrchestratorCore(cfg)
    try:
        core.start_agents(True, [(None, spec) for spec in cfg.teachers.resolved()])
        infos = core.stage("load_models", {a: Call("info") for a in core.agents}).results
        assert len(infos) == 17 and len({i["pid"] for i in infos.values()}) == 17
    finally:
        core.shutdown()


def test_frozen_teachers_stage_rounds_and_retention(ray_cluster, cache_dir, tmp_path):
    """One 2-round run checks three things: frozen teachers (`ablation.teachers_learn=false`) keep
    their adapters while the student trains; stage events carry their round; retention keeps the
    newest round and the teacher's best round and deletes the others."""
    from orchestrator.api import run

    summary = run(tiny_config(tmp_path, cache_dir, "rounds=2", "teachers.count=1", "baselines.strong_ceiling=false",
                              "ablation.teachers_learn=false", "checkpoint.keep_last=1",
                              "checkpoint.keep_best=teacher_0.reward"))
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rounds = [e["round"] for e in events if e["event"] == "stage" and e["stage"] == "train"]
    assert train_rounds == [1, 2]
    # a frozen teacher answers the same greedy test answers every round: its best round is the first
    best = max(summary["rounds"], key=lambda r: (r["eval"]["teacher_0"]["reward"], -r["round"]))["round"]
    assert best == 0 and len({r["eval"]["teacher_0"]["reward"] for r in summary["rounds"]}) == 1
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("round_*"))
    assert kept == ["round_0", "round_2"]
    assert {e["round"] for e in events if e["event"] == "stage" and e["stage"] == "teacher_sft"} == {0}
    assert not adapter_changed(tmp_path / "run", "teacher_0", 0, 2)
    assert adapter_changed(tmp_path / "run", "student", 0, 2)
    # frozen: the teacher trained in no round, the student in every round
    trained = [e for e in events if e["event"] == "stage" and e["stage"] in ("train", "train_teachers")]
    assert all("teacher_0" not in e.get("train", {}) for e in trained)
    assert all("student" in e["train"] for e in trained if e["stage"] == "train")


def test_add_teacher_without_spec_joins_initialised_and_trains(ray_cluster, cache_dir, tmp_path):
    from orchestrator.core import OrchestratorCore

    core = OrchestratorCore(tiny_config(tmp_path, cache_dir, "rounds=1", "teachers.count=1", "baselines.strong_ceiling=false"))
    try:
        with pytest.raises(RuntimeError, match="call setup"):
            core.add_teacher()
        core.setup()
        name = core.add_teacher()  # no spec: the next cycled copy of the configured teachers
        assert name == "teacher_1" and core.teacher_spec(name).seed == core.teacher_spec("teacher_0").seed + 1
        assert len(core.algorithm.hard_negatives[name]) == len(core.task.q_w2s)  # initialised like the first
        record = core.run_round()
        assert set(record["eval"]) == {"student", "teacher_0", "teacher_1"}
        events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        # it trained in round 1 (the teachers train beside the student's selection, as `train_teachers`)
        assert "teacher_1" in [e for e in events if e.get("stage") == "train_teachers"][-1]["train"]
    finally:
        core.shutdown()


def test_add_teacher_under_wspo_is_refused_before_any_actor_starts(ray_cluster, cache_dir, tmp_path):
    from orchestrator.core import OrchestratorCore

    core = OrchestratorCore(tiny_config(tmp_path, cache_dir, *WSPO))
    try:
        core._setup_done = True  # as after setup(); the refusal must come before any actor is started
        with pytest.raises(RuntimeError, match="wspo cannot take teachers"):
            core.add_teacher({"name_or_path": "tiny:test", "seed": 2})
        assert core.pool.names() == []
    finally:
        core.shutdown()
