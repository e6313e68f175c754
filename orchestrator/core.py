"""The single controller of a run: owns the agent actors, the data splits and the run directory.

It moves only texts, token ids and floats between agents; models and adapters never leave their
actors. The algorithms (`orchestrator.macpo`, `orchestrator.wspo`) are written against this class:
they ask for parallel stages, it runs them, times them, logs them, snapshots the agents after every
stage that changed them (so a restarted actor resumes exactly there) and checkpoints each round.
`orchestrator.Orchestrator` is this class as a Ray actor.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from agents.config import ModelSpec
from orchestrator.config import RunConfig, config_from_dict, model_spec
from orchestrator.pool import AgentPool, Call, StageResult
from orchestrator.run_dir import RunDirectory, default_output_dir, round_line, write_json_atomic
from tasks import TaskData, load_task, score_responses

log = logging.getLogger("orchestrator")

STUDENT = "student"
REWARD_MODEL = "reward_model"  # the judge's actor; not an agent: it never trains and has no adapter


class OrchestratorCore:
    """Drives MACPO or WSPO rounds over a student and any number of teachers."""

    def __init__(self, config: RunConfig | dict, resume_dir: str | None = None):
        if isinstance(config, dict):
            config = config_from_dict(config)
        self.config: RunConfig = config
        if resume_dir:
            self.run_dir = RunDirectory(resume_dir)
        else:
            self.config.output_dir = self.config.output_dir or default_output_dir()
            self.run_dir = RunDirectory(self.config.output_dir)
            self.run_dir.write_config(self.config.to_dict())
        self.run_id = f"{Path(self.run_dir.root).name}-{uuid.uuid4().hex[:6]}"
        self.resume_dir = resume_dir
        res = config.resources
        self.pool = AgentPool(
            run_id=self.run_id, namespace=config.ray.namespace, cache_dir=config.cache_dir,
            torch_threads=res.torch_threads, stage_timeout_s=config.ray.stage_timeout_s,
            max_failures=config.ray.max_failures, progress=self._on_progress, seed=config.seed,
        )
        self.task: TaskData | None = None
        self.teacher_specs: dict[str, ModelSpec] = {}
        self.placement_groups: list = []
        self.state: dict[str, Any] = {"round": -1, "hard_negatives": {}, "weak_labels": None}
        self.rounds: list[dict] = []
        self.baselines: dict[str, dict] = {}
        self.current_stage: str | None = None
        self.stage_progress: dict[str, Any] = {"stage": None, "done": 0, "total": 0, "count": 0}
        self._round_timing: dict[str, Any] = {}
        self.stage_round = 0  # the round the running stages belong to (0 = setup)
        self._setup_done = False
        self.algorithm = self._make_algorithm()

    def _make_algorithm(self):
        if self.config.algorithm == "macpo":
            from orchestrator.macpo import MACPO

            return MACPO(self)
        from orchestrator.wspo import WSPO

        return WSPO(self)

    # ------------------------------------------------------------ agents
    @property
    def teachers(self) -> list[str]:
        return list(self.teacher_specs)

    @property
    def agents(self) -> list[str]:
        return [STUDENT] + self.teachers

    @property
    def has_reward_model(self) -> bool:
        return self.config.reward_model.name_or_path is not None

    def _resources(self, role: str) -> dict:
        res = getattr(self.config.resources, role)
        return {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus}

    def start_agents(self, student: bool, teachers: list[tuple[str | None, ModelSpec]]) -> list[str]:
        """Reserve resources for these agents as one placement group, then start their actors."""
        from orchestrator.placement import reserve

        wanted: dict[str, tuple[Any, dict]] = {}
        if student:
            wanted[STUDENT] = (self.config.student, self._resources("student"))
            if self.has_reward_model:
                wanted[REWARD_MODEL] = (self.config.reward_model, self._resources("reward_model"))
        taken = set(self.teacher_specs)
        for name, spec in teachers:
            name = name or f"teacher_{len(taken)}"
            while name in taken:
                name = f"teacher_{int(name.split('_')[1]) + 1}"
            taken.add(name)
            wanted[name] = (spec, self._resources("teacher"))
        group, placed = reserve({n: r for n, (_, r) in wanted.items()}, self.config.ray.placement_timeout_s)
        if group is not None:  # None: placed inside an enclosing group (a sweep trial's), not ours
            self.placement_groups.append(group)
        for name, (spec, _) in wanted.items():
            if name == REWARD_MODEL:
                from agents.actor import RewardModelActor

                self.pool.start(name, spec, placed[name], RewardModelActor)
                continue
            if name != STUDENT:
                self.teacher_specs[name] = spec
            self.pool.start(name, spec, placed[name])
        return [n for n in wanted if n not in (STUDENT, REWARD_MODEL)]

    # ------------------------------------------------------------ stages
    def _on_progress(self, stage: str, done: int) -> None:
        self.stage_progress["done"] = done

    def stage(self, name: str, calls: dict[str, Call], mutating: bool = False) -> StageResult:
        """Run one parallel stage, log its timing, snapshot changed agents."""
        self.current_stage = name
        count = self.stage_progress["count"] + 1
        self.stage_progress = {"stage": name, "done": 0, "total": len(calls), "count": count}
        result = self.pool.stage(name, calls)
        if mutating:
            self._snapshot(list(calls))
        slowest = max(result.actor_s.values(), default=0.0)
        log.info("stage %-22s %6.1fs  (slowest actor %.1fs, %d agents)", name, result.wall_s, slowest, len(calls))
        metrics = {a: r for a, r in result.results.items() if isinstance(r, dict) and "steps" in r}
        self.run_dir.log("stage", stage=name, round=self.stage_round,
                         wall_s=round(result.wall_s, 4), actor_s={a: round(s, 4) for a, s in result.actor_s.items()},
                         actor_cpu_s={a: round(s, 4) for a, s in result.actor_cpu_s.items()},
                         overhead_s=round(result.overhead_s, 4), **({"train": metrics} if metrics else {}))
        timing = self._round_timing
        timing["wall_stages_s"] = timing.get("wall_stages_s", 0.0) + result.wall_s
        for key, values in (("actor_s", result.actor_s), ("actor_cpu_s", result.actor_cpu_s)):
            for agent, seconds in values.items():
                timing.setdefault(key, {})[agent] = timing.get(key, {}).get(agent, 0.0) + seconds
        self.current_stage = None
        return result

    def _snapshot(self, agents: list[str]) -> None:
        """Save the changed agents so a restarted actor resumes from exactly this point."""
        live = self.run_dir.root / "checkpoints" / ".live"
        targets = {a: live / a for a in agents}
        for path in targets.values():
            if path.exists():
                shutil.rmtree(path)
        self.pool.stage("snapshot", {a: Call("save", (str(p),)) for a, p in targets.items()})
        for agent, path in targets.items():
            self.pool.restore_dirs[agent] = str(path)

    # ------------------------------------------------------------ evaluation
    def eval_examples(self):
        test = self.task.test
        return test[: self.config.eval_size] if self.config.eval_size else test

    def evaluate(self, agents: list[str] | None = None, extra: dict[str, tuple[str, str]] | None = None) -> dict[str, dict]:
        """Score agents on the test split.

        The headline `reward` is the rule reward on the synthetic task (greedy answers); else the
        reward model's mean score over greedy answers when one is configured; else preference
        accuracy (log-prob of chosen above rejected). A configured reward model also adds
        `rm_score` on the synthetic task, and real data always gets `preference_accuracy`.
        `extra` maps a label to (agent, adapter), e.g. a baseline adapter living on the student.
        """
        agents = agents if agents is not None else self.agents
        examples = self.eval_examples()
        prompts = [ex.prompt for ex in examples]
        jobs = {a: (a, "default") for a in agents}
        jobs.update(extra or {})
        rule = self.task.has_rule_reward
        out: dict[str, dict] = {label: {} for label in jobs}
        answers: dict[str, list[str]] = {}
        for batch in _one_call_per_actor(jobs):
            if rule or self.has_reward_model:
                calls = {agent: Call("generate", (prompts, dataclasses.asdict(self.config.eval_sampling)), {"adapter": adapter})
                         for agent, adapter in batch.values()}
                result = self.stage("evaluate", calls)
                for label, (agent, _) in batch.items():
                    answers[label] = result.results[agent]
                    if rule:
                        out[label].update(score_responses(self.task.name, prompts, answers[label]))
            if not rule:
                both_prompts = prompts + prompts
                responses = [ex.chosen for ex in examples] + [ex.rejected for ex in examples]
                calls = {agent: Call("logprobs", (both_prompts, responses), {"adapter": adapter}) for agent, adapter in batch.values()}
                result = self.stage("evaluate", calls)
                n = len(examples)
                for label, (agent, _) in batch.items():
                    means = result.results[agent]["mean"]
                    acc = sum(1 for i in range(n) if means[i] > means[n + i]) / max(n, 1)
                    out[label].update(reward=acc, preference_accuracy=acc, n=n)
        if self.has_reward_model:
            for label, score in self._reward_model_scores(prompts, answers).items():
                out[label]["rm_score"] = score
                if not rule:
                    out[label]["reward"] = score
        return out

    def _reward_model_scores(self, prompts: list[str], answers: dict[str, list[str]]) -> dict[str, float]:
        """Mean reward-model score per label, all labels' answers in one call to the judge."""
        labels = list(answers)
        scores = self.score_answer_sets("reward_model", REWARD_MODEL, "score", prompts, [answers[l] for l in labels])
        return {label: sum(values) / max(len(values), 1) for label, values in zip(labels, scores)}

    def score_answer_sets(self, stage: str, agent: str, method: str, prompts: list[str],
                          answer_sets: list[list[str]]) -> list[list[float]]:
        """Score K sets of answers to the same prompts in one call to `agent` (e.g. the student's
        perplexity of every teacher's answers); returns one list of floats per set."""
        flat_prompts = [p for _ in answer_sets for p in prompts]
        flat = [r for answers in answer_sets for r in answers]
        values = self.stage(stage, {agent: Call(method, (flat_prompts, flat))}).results[agent]
        n = len(prompts)
        return [values[k * n : (k + 1) * n] for k in range(len(answer_sets))]

    # ------------------------------------------------------------ lifecycle
    def setup(self) -> dict:
        """Load data, start actors, initialise (or restore) every agent, record round 0."""
        if self._setup_done:
            return self.summary()
        if self.resume_dir:
            self._restore()
        else:
            start = time.perf_counter()
            self._round_timing = {}
            self.task = load_task(self.config.task, self.config.seed)
            write_json_atomic(self.run_dir.root / "splits.json", self.task.to_dict())
            self.run_dir.log("task", name=self.task.name, d_w=len(self.task.d_w), q_w2s=len(self.task.q_w2s),
                             test=len(self.task.test), stats=self.task.stats)
            self.start_agents(True, [(None, spec) for spec in self.config.teachers.resolved()])
            judge = [REWARD_MODEL] if self.has_reward_model else []
            self.stage("load_models", {a: Call("info") for a in self.agents + judge})
            self.algorithm.initialise()
            self._finish_round(0, time.perf_counter() - start)
        self._setup_done = True
        return self.summary()

    def run_round(self) -> dict:
        """One round of the algorithm, then evaluation and a checkpoint; returns its record."""
        if not self._setup_done:
            self.setup()
        index = self.state["round"] + 1
        self.stage_round = index
        start = time.perf_counter()
        self._round_timing = {}
        self.algorithm.round(index)
        return self._finish_round(index, time.perf_counter() - start)

    def _finish_round(self, index: int, elapsed: float) -> dict:
        evaluation = self.evaluate(extra=self.algorithm.eval_extra(index))
        for label in list(evaluation):
            if label not in self.agents:
                self.baselines[label] = evaluation.pop(label)
        record = {
            "round": index,
            "eval": evaluation,
            "timing": {"wall_s": round(elapsed, 3),
                       "actor_s": {a: round(s, 3) for a, s in self._round_timing.get("actor_s", {}).items()},
                       "actor_cpu_s": {a: round(s, 3) for a, s in self._round_timing.get("actor_cpu_s", {}).items()}},
        }
        self.rounds.append(record)
        self.state["round"] = index
        self.save()
        self.run_dir.log("round", **record)  # after the checkpoint: a logged round is never redone
        self._write_outputs()
        log.debug("%s", round_line(record))  # the driver prints it (api.follow): forwarded actor logs can arrive late
        return record

    def add_teacher(self, spec: dict | ModelSpec | None = None) -> str:
        """Add a teacher between rounds; it is initialised before it takes part."""
        if not self._setup_done:
            raise RuntimeError("call setup() before add_teacher()")
        spec = model_spec(spec, "teacher") if spec is not None else copy.deepcopy(self.config.teachers.resolved()[-1])
        if spec.seed in {s.seed for s in self.teacher_specs.values()} and spec.name_or_path in {
                s.name_or_path for s in self.teacher_specs.values()}:
            spec.seed = max(s.seed for s in self.teacher_specs.values()) + 1
        (name,) = self.start_agents(False, [(None, spec)])
        self.stage("load_models", {name: Call("info")})
        self.algorithm.initialise_teacher(name)
        self.run_dir.log("add_teacher", agent=name, spec=dataclasses.asdict(spec))
        log.info("added %s (%s, seed %d)", name, spec.name_or_path, spec.seed)
        return name

    def run(self) -> dict:
        self.setup()
        while self.state["round"] < self.algorithm.total_rounds():
            self.run_round()
        return self.summary()

    # ------------------------------------------------------------ outputs
    def summary(self) -> dict:
        summary = {"algorithm": self.config.algorithm, "agents": self.agents, "rounds": self.rounds,
                   "baselines": dict(self.baselines)}
        summary.update(self.algorithm.summary_extra())
        summary["run_dir"] = str(self.run_dir.root)
        return summary

    def progress(self) -> dict:
        """What a client attached with ray.get_actor sees: where the run is now."""
        return {"round": self.state["round"], "stage": self.current_stage, "agents": self.agents,
                "rounds_total": self.algorithm.total_rounds(), "run_dir": str(self.run_dir.root),
                "stage_progress": dict(self.stage_progress),
                "last_round": ({"round": self.rounds[-1]["round"], "line": round_line(self.rounds[-1])}
                               if self.rounds else None)}

    def _write_outputs(self) -> None:
        summary = self.summary()
        self.run_dir.write_summary(summary)
        self.run_dir.plot_rewards(summary)

    def save(self, path: str | None = None) -> str:
        """Checkpoint every agent's adapters plus the orchestrator state, atomically."""
        index = self.state["round"]
        if path is not None:
            target = Path(path)
            target.mkdir(parents=True, exist_ok=True)
            self.pool.stage("save", {a: Call("save", (str(target / a),)) for a in self.agents})
            write_json_atomic(target / "orchestrator_state.json", self._state_dict())
            return str(target)
        tmp = self.run_dir.new_checkpoint(index)
        self.pool.stage("save", {a: Call("save", (str(tmp / a),)) for a in self.agents})
        final = self.run_dir.commit_checkpoint(tmp, index, self._state_dict())
        for agent in self.agents:
            self.pool.restore_dirs[agent] = str(final / agent)
        return str(final)

    def _state_dict(self) -> dict:
        return {"round": self.state["round"], "hard_negatives": self.state["hard_negatives"],
                "weak_labels": self.state["weak_labels"], "algorithm_state": self.algorithm.state_dict(),
                "teachers": {n: dataclasses.asdict(s) for n, s in self.teacher_specs.items()},
                "rounds": self.rounds, "baselines": self.baselines, "failures": self.pool.failures}

    def _restore(self) -> None:
        checkpoint = self.run_dir.latest_checkpoint()
        if checkpoint is None:
            raise RuntimeError(f"{self.run_dir.root}: no complete checkpoint to resume from")
        state = self.run_dir.read_state(checkpoint)
        splits = self.run_dir.root / "splits.json"
        self.task = TaskData.from_dict(json.loads(splits.read_text()))
        self.start_agents(True, [(name, model_spec(spec, f"teachers.{name}")) for name, spec in state["teachers"].items()])
        for agent in self.agents:
            self.pool.restore_dirs[agent] = str(checkpoint / agent)
        self.stage("restore", {a: Call("load", (str(checkpoint / a),)) for a in self.agents})
        self.state.update(round=state["round"], hard_negatives=state["hard_negatives"], weak_labels=state["weak_labels"])
        self.algorithm.load_state_dict(state.get("algorithm_state", {}))
        self.rounds = state["rounds"]
        self.baselines = state["baselines"]
        self.pool.failures = state.get("failures", {})
        self.run_dir.log("resume", checkpoint=str(checkpoint), round=state["round"])
        log.info("resumed %s from %s (round %d done)", self.run_dir.root, checkpoint.name, state["round"])

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        self.pool.shutdown()
        for group in self.placement_groups:
            try:
                remove_placement_group(group)
            except Exception:  # noqa: BLE001 - already gone with the cluster
                pass
        self.placement_groups.clear()


def _one_call_per_actor(jobs: dict[str, tuple[str, str]]) -> list[dict[str, tuple[str, str]]]:
    """Split label -> (agent, adapter) jobs into stages with at most one job per actor each
    (a stage sends one call per actor; baselines on the student's actor go in a later stage)."""
    stages: list[dict[str, tuple[str, str]]] = []
    for label, (agent, adapter) in jobs.items():
        for stage in stages:
            if agent not in {a for a, _ in stage.values()}:
                stage[label] = (agent, adapter)
                break
        else:
            stages.append({label: (agent, adapter)})
    return stages
