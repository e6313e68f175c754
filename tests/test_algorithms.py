"""The algorithms against a fake controller (no Ray, no models): what each agent is trained on.

The controller seam (`orchestrator.algorithms.base.Controller`) lets MACPO's data flow be checked
exactly: which answer becomes the student's positive, which its negative, who trains, for every
ablation switch; and that an algorithm's state survives `state_dict` / `load_state_dict`.
"""
from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from orchestrator import load_config
from orchestrator.algorithms import REGISTRY, make_algorithm
from orchestrator.algorithms.base import Algorithm
from tasks import load_task


class FakeController:
    """Answers every stage from rules instead of actors and records every call it was sent.

    Agent `a` answers prompt `p` with `"<a>:<adapter>:<p>"`; perplexity under the student is lowest
    for teacher_1's answers, so teacher_1 wins every selection."""

    def __init__(self, overrides=(), teachers=2):
        self.config = load_config(None, ["task.n_labelled=8", "task.n_unlabelled=6", "task.n_test=4", *overrides])
        self.task = load_task(self.config.task, self.config.seed)
        self.teacher_names = [f"teacher_{i}" for i in range(teachers)]
        self.calls: list[tuple[str, str, object]] = []  # (stage, agent, Call)
        self.events: list[tuple[str, dict]] = []

    @property
    def teachers(self):
        return list(self.teacher_names)

    @property
    def agents(self):
        return ["student", *self.teacher_names]

    def teacher_spec(self, name):
        return self.config.teachers.specs[0]

    def log_event(self, event, **fields):
        self.events.append((event, fields))

    def read_cache(self, name):
        return None

    def write_cache(self, name, data):
        pass

    def stage(self, name, work, mutating=False):
        results = {}
        for agent, call in work.items():
            self.calls.append((name, agent, call))
            if call.method == "generate":
                adapter = (call.kwargs or {}).get("adapter") or "default"
                results[agent] = [f"{agent}:{adapter}:{p}" for p in call.args[0]]
            elif call.method == "perplexity":
                results[agent] = [1.0 if r.startswith("teacher_1:") else 5.0 for r in call.args[1]]
            else:
                results[agent] = {"steps": 1}
        return SimpleNamespace(results=results)

    def stage_async(self, name, work, mutating=False):
        return self.in_background(self.stage, name, work, mutating)

    def in_background(self, fn, *args):
        done = Future()
        done.set_result(fn(*args))
        return done

    def evaluate_baselines(self, jobs):
        self.stage("evaluate", {agent: SimpleNamespace(method="generate", args=([ex.prompt for ex in self.task.test],),
                                                       kwargs={"adapter": adapter}) for agent, adapter in jobs.values()})

    def score_answer_sets(self, stage, agent, method, prompts, answer_sets):
        flat_prompts = [p for _ in answer_sets for p in prompts]
        flat = [r for answers in answer_sets for r in answers]
        values = self.stage(stage, {agent: SimpleNamespace(method=method, args=(flat_prompts, flat), kwargs={})}).results[agent]
        return [values[k * len(prompts):(k + 1) * len(prompts)] for k in range(len(answer_sets))]

    def trained(self, stage):
        """agent -> (examples, objective, config, kwargs) of the train calls of `stage` (MACPO's
        `train` covers the teachers' `train_teachers` beside it)."""
        stages = {stage, "train_teachers"} if stage == "train" else {stage}
        return {a: (*c.args, c.kwargs) for s, a, c in self.calls if s in stages and c.method == "train"}


def macpo_round(*overrides):
    ctl = FakeController(overrides)
    algorithm = make_algorithm("macpo", ctl)
    algorithm.initialise()
    algorithm.round(1)
    return ctl, algorithm


def test_registry_names_every_algorithm_and_rejects_others():
    assert set(REGISTRY) == {"macpo", "wspo"} and all(issubclass(c, Algorithm) for c in REGISTRY.values())
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'"):
        make_algorithm("ppo", FakeController())


def test_full_macpo_student_learns_best_teacher_answer_against_its_hard_negative():
    ctl, algorithm = macpo_round()
    q = ctl.task.q_w2s
    student_pairs = ctl.trained("train")["student"][0]
    assert [p["chosen"] for p in student_pairs] == [f"teacher_1:default:{p}" for p in q]  # lowest perplexity
    assert [p["rejected"] for p in student_pairs] == [f"student:negative:{p}" for p in q]  # its negative agent
    for t in ("teacher_0", "teacher_1"):
        pairs = ctl.trained("train")[t][0]
        assert [p["chosen"] for p in pairs] == [f"student:default:{p}" for p in q]  # the student's answer
        assert [p["rejected"] for p in pairs] == [f"{t}:negative:{p}" for p in q]
    assert ctl.trained("train")["student"][1] == "macpo"
    assert ctl.trained("train")["student"][2] is ctl.config.train.student_macpo  # the config itself, not a copy
    # weak labels at initialisation: the lowest-perplexity teacher answer, the student SFT'd on them
    assert algorithm.weak_labels == [f"teacher_1:default:{p}" for p in q]
    assert [e["response"] for e in ctl.trained("student_sft")["student"][0]] == algorithm.weak_labels


def test_each_round_logs_how_good_each_learner_s_pairs_are_by_the_rule_reward():
    from tasks import harmful_flags, sample_rewards

    ctl, algorithm = macpo_round()
    q = ctl.task.q_w2s
    [quality] = [fields for event, fields in ctl.events if event == "pair_quality"]
    assert quality["round"] == 1 and {"student", "teacher_0", "teacher_1"} <= set(quality)
    harmful = harmful_flags("synthetic", q)
    student = quality["student"]
    assert student["all"]["n"] == len(q) == student["benign"]["n"] + student.get("harmful", {"n": 0})["n"]
    chosen = sample_rewards("synthetic", q, [f"teacher_1:default:{p}" for p in q])  # the selected positives
    rejected = sample_rewards("synthetic", q, algorithm.hard_negatives["student"])
    assert student["all"]["chosen_reward"] == pytest.approx(sum(chosen) / len(q))
    assert student["all"]["rejected_reward"] == pytest.approx(sum(rejected) / len(q))
    own = sample_rewards("synthetic", q, [f"teacher_0:default:{p}" for p in q])
    beats = [c > o for c, o, h in zip(sample_rewards("synthetic", q, [f"student:default:{p}" for p in q]), own, harmful)]
    assert quality["teacher_0"]["all"]["chosen_beats_own"] == pytest.approx(sum(beats) / len(q))


def test_pair_quality_counts_what_beats_what_per_group():
    from orchestrator.pairs import pair_quality

    q = pair_quality(chosen_rewards=[1.0, 0.2, 1.0, 0.0], rejected_rewards=[0.0, 0.4, 0.0, 0.0],
                     own_rewards=[1.0, 0.1, 0.0, 1.0], harmful=[False, False, True, True])
    assert q["all"] == {"n": 4, "chosen_reward": 0.55, "rejected_reward": 0.1, "own_reward": 0.525,
                        "chosen_beats_rejected": 0.5, "chosen_beats_own": 0.5, "chosen_below_own": 0.25}
    assert q["harmful"]["chosen_beats_own"] == 0.5 and q["harmful"]["chosen_below_own"] == 0.5
    assert q["benign"]["chosen_beats_rejected"] == 0.5 and q["benign"]["own_reward"] == pytest.approx(0.55)


def test_no_mutual_positives_takes_the_agents_own_answers():
    ctl, _ = macpo_round("ablation.mutual_positives=false")
    q = ctl.task.q_w2s
    assert [p["chosen"] for p in ctl.trained("train")["student"][0]] == [f"student:default:{p}" for p in q]
    assert [p["chosen"] for p in ctl.trained("train")["teacher_0"][0]] == [f"teacher_0:default:{p}" for p in q]
    assert not [s for s, _, _ in ctl.calls if s == "select_positives"]


def test_no_hard_negatives_rejects_the_agents_own_sample():
    ctl, _ = macpo_round("ablation.hard_negatives=false")
    q = ctl.task.q_w2s
    assert [p["rejected"] for p in ctl.trained("train")["student"][0]] == [f"student:default:{p}" for p in q]
    assert [p["chosen"] for p in ctl.trained("train")["student"][0]] == [f"teacher_1:default:{p}" for p in q]


def test_frozen_teachers_do_not_train_but_the_student_does():
    ctl, _ = macpo_round("ablation.teachers_learn=false")
    assert set(ctl.trained("train")) == {"student"}


def test_macpo_state_round_trips():
    ctl, algorithm = macpo_round()
    again = make_algorithm("macpo", FakeController())
    again.load_state_dict(algorithm.state_dict())
    assert again.hard_negatives == algorithm.hard_negatives and again.weak_labels == algorithm.weak_labels
    assert set(again.hard_negatives) == {"student", "teacher_0", "teacher_1"}


def test_summary_extra_is_computed_from_records_not_written_into_the_controller():
    ctl, algorithm = macpo_round()
    rounds = [{"round": 0, "eval": {"student": {"reward": 0.8}, "teacher_0": {"reward": 0.5}, "teacher_1": {"reward": 0.6}}},
              {"round": 1, "eval": {"student": {"reward": 0.9}, "teacher_0": {"reward": 0.5}, "teacher_1": {"reward": 0.6}}}]
    baselines = {"student_sft_gold": {"reward": 1.0}}
    extra = algorithm.summary_extra(rounds, baselines)
    assert baselines == {"student_sft_gold": {"reward": 1.0}}  # untouched
    assert extra["baselines"]["student_sft_weak_labels"] == {"reward": 0.8}
    assert extra["pgr"] == {"weak": 0.6, "ceiling": 1.0, "round_0": 0.5, "final": 0.75}


def test_wspo_refuses_added_teachers_before_anything_starts():
    algorithm = make_algorithm("wspo", FakeController(["algorithm=wspo"], teachers=1))
    assert not algorithm.can_add_teachers
    with pytest.raises(RuntimeError, match="WSPO has one weak model"):
        algorithm.initialise_teacher("teacher_1")



# ----------------------------------------------------------------------------- WSPO's starting points
def wspo_initialised(*overrides):
    ctl = FakeController(["algorithm=wspo", "teachers.count=1", *overrides], teachers=1)
    algorithm = make_algorithm("wspo", ctl)
    algorithm.check_tokenizers = lambda: None  # the fake agents share no tokenizer
    algorithm.initialise()
    return ctl


def test_wspo_weak_dpo_starts_from_and_is_referenced_to_the_weak_sft_model():
    ctl = wspo_initialised()
    examples, objective, cfg, kwargs = ctl.trained("weak_dpo")["teacher_0"]
    assert objective == "dpo" and kwargs == {"adapter": "aligned", "init_from": "default"}
    assert cfg.reference == "round_start"  # the SFT adapter as the DPO call found it
    assert set(ctl.trained("sft")) == {"teacher_0"}  # the weak SFT ran first; the student has none


def test_wspo_strong_sft_and_instruct_starts():
    ctl = wspo_initialised("wspo.strong_sft=true", "train.wspo.reference=round_start",
                           "train.student_dpo.reference=round_start")
    assert set(ctl.trained("sft")) == {"teacher_0", "student"}
    assert ctl.trained("sft")["student"][1] == "sft"
    instruct = wspo_initialised("wspo.weak_sft=false")  # the weak model as loaded is its SFT model
    assert "sft" not in {s for s, _, _ in instruct.calls}
    assert instruct.trained("weak_dpo")["teacher_0"][2].reference == "round_start"


@pytest.mark.parametrize("overrides, message", [
    (["train.weak_dpo.reference=base"], "train.weak_dpo.reference='base': with wspo.weak_reference=sft"),
    (["wspo.strong_sft=true"], "train.wspo.reference='base': with wspo.strong_sft=true"),
    (["train.student_dpo.reference=round_start"], "train.student_dpo.reference='round_start': the student's reference"),
])
def test_wspo_references_that_contradict_the_starting_points_are_refused(overrides, message):
    from orchestrator.config import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(None, ["algorithm=wspo", *overrides])
    load_config(None, ["algorithm=macpo", *overrides])  # MACPO does not use these stages
