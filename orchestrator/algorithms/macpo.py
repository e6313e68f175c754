"""MACPO (arXiv 2410.07672) as the paper's code runs it, over a student and any number of teachers.

Initialisation: teachers SFT on D_w chosen; every agent gets a negative agent (its adapter further
SFT'd on negative data); the student is SFT'd on weak labels (per Q_w2s prompt, the teacher response
with the lowest perplexity under the student); each negative agent generates its hard negatives once.
Round t: every agent answers Q_w2s; the student learns y+ = best teacher answer vs its hard negative;
teacher k learns y+ = the student's answer vs its own hard negative; all train in parallel.
How each pair is built (and the ablations) is `orchestrator.pairs`.
"""
from __future__ import annotations

import dataclasses
from collections import Counter

from orchestrator import calls
from orchestrator.algorithms.base import STUDENT, Algorithm, register
from orchestrator.pairs import lowest_perplexity, pair_quality, student_pairs, teacher_pairs


def _sft(prompts, responses) -> list[dict]:
    return [{"prompt": p, "response": r} for p, r in zip(prompts, responses) if r.strip()]


@register
class MACPO(Algorithm):
    adapters = ("negative", "ceiling")
    name = "macpo"

    def __init__(self, controller):
        super().__init__(controller)
        self.hard_negatives: dict[str, list[str]] = {}  # agent -> its negative agent's answers to Q_w2s
        self.weak_labels: list[str] | None = None

    def total_rounds(self) -> int:
        return self.config.rounds

    def _sampling(self, salt: int):
        """The run's sampling config with a seed of its own per use (weak labels, negatives, round t)."""
        return dataclasses.replace(self.config.sampling, seed=self.config.seed * 100003 + salt)

    def _train(self, key: str):
        return getattr(self.config.train, key)

    # ------------------------------------------------------------ initialisation
    def initialise(self) -> None:
        ctl, task = self.ctl, self.ctl.task
        teachers = ctl.teachers
        # the strong ceiling (its own adapter and seeds) needs no teacher: it trains and is evaluated beside them
        ceiling = ctl.in_background(self._strong_ceiling) if self.config.baselines.strong_ceiling else None
        try:
            self._initialise_teachers(teachers)
            prompts = task.q_w2s
            weak = ctl.stage("teacher_weak_labels", {t: calls.generate(prompts, self._sampling(1)) for t in teachers}).results
        finally:
            if ceiling is not None:
                ceiling.result()  # the student's next call must not queue behind it unseen
        labels, sources = self._select(prompts, [weak[t] for t in teachers], "select_weak_labels")
        self.weak_labels = labels
        ctl.log_event("weak_labels", selected_from={teachers[k]: n for k, n in Counter(sources).items()})
        ctl.stage("student_sft", {STUDENT: calls.train(_sft(prompts, labels), "sft", self._train("student_sft"))}, mutating=True)
        # the student's negative agent learns from the teachers' negative agents: the first teacher's
        # (the authors' data) or one teacher per prompt in turn (macpo.student_negatives_from)
        if self.config.macpo.student_negatives_from == "round_robin":
            negatives = [self.hard_negatives[teachers[i % len(teachers)]][i] for i in range(len(prompts))]
        else:
            negatives = list(self.hard_negatives[teachers[0]])
        ctl.stage("student_negative_sft", {STUDENT: calls.train(_sft(prompts, negatives), "sft", self._train("negative_sft"),
                                                                adapter="negative", init_from="default")}, mutating=True)
        hard = ctl.stage("student_hard_negatives",
                         {STUDENT: calls.generate(prompts, self._sampling(2), adapter="negative")}).results
        self.hard_negatives[STUDENT] = hard[STUDENT]

    def _initialise_teachers(self, teachers: list[str]) -> None:
        ctl, d_w = self.ctl, self.ctl.task.d_w
        chosen = [{"prompt": ex.prompt, "response": ex.chosen} for ex in d_w]
        rejected = [{"prompt": ex.prompt, "response": ex.rejected} for ex in d_w]
        ctl.stage("teacher_sft", {t: calls.train(chosen, "sft", self._train("teacher_sft")) for t in teachers}, mutating=True)
        ctl.stage("teacher_negative_sft",
                  {t: calls.train(rejected, "sft", self._train("negative_sft"), adapter="negative", init_from="default")
                   for t in teachers}, mutating=True)
        hard = ctl.stage("teacher_hard_negatives",
                         {t: calls.generate(ctl.task.q_w2s, self._sampling(3), adapter="negative") for t in teachers})
        self.hard_negatives.update(hard.results)

    def initialise_teacher(self, name: str) -> None:
        """A teacher added at run time gets the same initialisation as the first ones."""
        self._initialise_teachers([name])

    def _strong_ceiling(self) -> None:
        """The student SFT'd on gold labels (`ceiling` adapter), evaluated as soon as it is trained."""
        self.ctl.stage("student_ceiling_sft", {STUDENT: calls.train(
            self._ceiling_examples(), "sft", self._train("student_sft"), adapter="ceiling", init_from="default")},
            mutating=True)
        self.ctl.evaluate_baselines({"student_sft_gold": (STUDENT, "ceiling")})

    def _ceiling_examples(self) -> list[dict]:
        """Strong ceiling: the student on gold labels (synthetic: Q_w2s answers; real data: D_w chosen)."""
        task = self.ctl.task
        if task.has_rule_reward:
            from tasks import gold_responses

            return _sft(task.q_w2s, gold_responses(task.name, task.q_w2s))
        return [{"prompt": ex.prompt, "response": ex.chosen} for ex in task.d_w]

    def _select(self, prompts: list[str], candidates: list[list[str]], stage: str) -> tuple[list[str], list[int]]:
        """Mutual positive augmentation: the candidate with the lowest perplexity under the student."""
        return lowest_perplexity(candidates, self.ctl.score_answer_sets(stage, STUDENT, "perplexity", prompts, candidates))

    # ------------------------------------------------------------ rounds
    def round(self, index: int) -> None:
        ctl, ablation = self.ctl, self.config.ablation
        prompts = ctl.task.q_w2s
        teachers = ctl.teachers
        learners = ctl.agents if ablation.teachers_learn else [STUDENT]
        gens = ctl.stage("generate", {a: calls.generate(prompts, self._sampling(1000 + index)) for a in ctl.agents}).results
        hard = self.hard_negatives
        # the teachers' pairs need no selection: they train while the student selects its positives
        pair_sets = {t: teacher_pairs(prompts, gens[t], hard[t], gens[STUDENT], ablation.mutual_positives,
                                      ablation.hard_negatives) for t in teachers if t in learners}
        teachers_training = self._start_training(index, "train_teachers", pair_sets, background=True)
        try:
            best = None  # without mutual positives nobody's answer is selected for the student
            if ablation.mutual_positives:
                best, sources = self._select(prompts, [gens[t] for t in teachers], "select_positives")
                ctl.log_event("positives", round=index, selected_from={teachers[k]: n for k, n in Counter(sources).items()})
            student = student_pairs(prompts, gens[STUDENT], hard[STUDENT], best, ablation.mutual_positives,
                                    ablation.hard_negatives)
            ctl.log_event("pairs", round=index, **{a: p.stats() for a, p in {STUDENT: student, **pair_sets}.items()})
            self._log_pair_quality(index, prompts, gens, best)
            self._start_training(index, "train", {STUDENT: student}, background=False)
        finally:
            if teachers_training is not None:
                teachers_training.result()  # the round ends when every learner has trained

    def _log_pair_quality(self, index: int, prompts: list, gens: dict[str, list[str]], best: list[str] | None) -> None:
        """On a task with a rule reward: how good each learner's chosen and rejected answers are
        against its own answer, on benign and harmful prompts (`pair_quality` in metrics.jsonl)."""
        from tasks import harmful_flags, sample_rewards

        ctl, ablation = self.ctl, self.config.ablation
        if not ctl.task.has_rule_reward:
            return
        reward = {}  # answer set -> rule reward per prompt, each set scored once

        def rewards(name: str, answers: list[str]) -> list[float]:
            if name not in reward:
                reward[name] = sample_rewards(ctl.task.name, prompts, answers)
            return reward[name]

        harmful = harmful_flags(ctl.task.name, prompts)
        quality = {}
        for agent in (ctl.agents if ablation.teachers_learn else [STUDENT]):
            own = rewards(agent, gens[agent])
            if agent == STUDENT:
                chosen = rewards("selected", best) if ablation.mutual_positives else own
            else:
                chosen = rewards(STUDENT, gens[STUDENT]) if ablation.mutual_positives else own
            rejected = rewards(f"{agent}:negative", self.hard_negatives[agent]) if ablation.hard_negatives else own
            quality[agent] = pair_quality(chosen, rejected, own, harmful)
        ctl.log_event("pair_quality", round=index, **quality)

    def _start_training(self, index: int, stage: str, pair_sets: dict, background: bool):
        """MACPO-train every agent with usable pairs (one `stage`); in the background: a Future."""
        train_calls = {}
        for agent, pair_set in pair_sets.items():
            if not pair_set.pairs:
                self.ctl.log_event("skip_training", round=index, agent=agent, reason="no usable pairs", **pair_set.stats())
                continue
            key = "student_macpo" if agent == STUDENT else "teacher_macpo"
            train_calls[agent] = calls.train(pair_set.pairs, "macpo", self._train(key))
        if not train_calls:
            return None
        if background:
            return self.ctl.stage_async(stage, train_calls, mutating=True)
        return self.ctl.stage(stage, train_calls, mutating=True)

    # ------------------------------------------------------------ reporting
    def summary_extra(self, rounds: list[dict], baselines: dict[str, dict]) -> dict:
        """The student on weak labels (round 0) as a baseline, and PGR = (student - best teacher) /
        (ceiling - best teacher) at round 0 and at the end."""
        if not rounds:
            return {}
        first, last = rounds[0]["eval"], rounds[-1]["eval"]
        out: dict = {"baselines": {"student_sft_weak_labels": dict(first.get(STUDENT, {}))}}
        teachers0 = [m["reward"] for a, m in first.items() if a != STUDENT]
        ceiling = baselines.get("student_sft_gold", {}).get("reward")
        if teachers0 and ceiling is not None:
            weak = max(teachers0)
            gap = ceiling - weak

            def pgr(value: float) -> float | None:
                # undefined when the ceiling does not beat the weak teachers: there is no gap to recover
                return round((value - weak) / gap, 4) if gap > 1e-9 else None

            out["pgr"] = {"weak": weak, "ceiling": ceiling,
                          "round_0": pgr(first[STUDENT]["reward"]), "final": pgr(last[STUDENT]["reward"])}
        return out

    def state_dict(self) -> dict:
        return {"hard_negatives": self.hard_negatives, "weak_labels": self.weak_labels}

    def load_state_dict(self, state: dict) -> None:
        self.hard_negatives = dict(state.get("hard_negatives", {}))
        self.weak_labels = state.get("weak_labels")
