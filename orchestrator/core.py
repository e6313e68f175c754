"""The single controller of a run: the run's lifecycle (setup, rounds, checkpoints, resume).

It moves only texts, token ids and floats between agents; models and adapters never leave their
actors. The algorithm (`orchestrator.algorithms`, found by `config.algorithm`) sees this class
through the narrow `Controller` interface: it asks for parallel stages, and this class runs them,
times them, logs them, snapshots the agents after every stage that changed them (so a restarted
actor resumes exactly there), evaluates (`orchestrator.evaluation`) and checkpoints each round.
`orchestrator.Orchestrator` is this class as a Ray actor.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agents import storage
from agents.config import ModelSpec
from orchestrator import calls
from orchestrator.algorithms import STUDENT, make_algorithm
from orchestrator.calls import Call
from orchestrator.config import RunConfig, config_from_dict, max_new_tokens, model_spec
from orchestrator.evaluation import evaluate
from orchestrator.plots import plot_rewards
from orchestrator.pool import AgentPool, StageResult
from orchestrator.redaction import redact
from orchestrator.run_dir import (SPLITS_FILE, STATE_FILE, RunDirectory, check_fresh_output_dir, check_keep_best,
                                  ensure_output_dir, retained_rounds, round_line, write_json_atomic)
from tasks import TaskData, load_task

log = logging.getLogger("orchestrator")
TRACKED_SAMPLES = 8  # test prompts per agent in each round's samples table (every answer: eval/round_<N>/)
STAGE_LINES_KEPT = 50  # finished-stage lines progress() hands a client polling every 0.5 s


class OrchestratorCore:
    """Drives MACPO or WSPO rounds over a student and any number of teachers."""

    def __init__(self, config: RunConfig | dict, resume_dir: str | None = None):
        if isinstance(config, dict):
            config = config_from_dict(config)
        self.config: RunConfig = config
        storage.configure(config.storage_options)  # this process reads and writes the run's storage
        if resume_dir:
            self.run_dir = RunDirectory(resume_dir)
        else:
            ensure_output_dir(self.config)
            check_fresh_output_dir(self.config)  # every entry point (CLI, API, sweep trial): never an earlier run's directory
            self.run_dir = RunDirectory(self.config.output_dir)
            self.run_dir.write_config(redact(self.config.to_dict()))  # credentials never reach disk
        self.run_id = f"{self.run_dir.name}-{uuid.uuid4().hex[:6]}"
        self.resume_dir = resume_dir
        res = config.resources
        self.pool = AgentPool(
            run_id=self.run_id, namespace=config.ray.namespace, cache_dir=config.cache_dir,
            torch_threads=res.torch_threads, stage_timeout_s=config.ray.stage_timeout_s,
            max_failures=config.ray.max_failures, progress=self._on_progress, seed=config.seed,
            storage_options=config.storage_options, max_new_tokens=max_new_tokens(config),
            prefork=config.ray.prefork,
        )
        self.task: TaskData | None = None
        self.teacher_specs: dict[str, ModelSpec] = {}
        self.placement_groups: list = []
        self.round_index = -1  # the last finished round (0 = set up)
        self.rounds: list[dict] = []
        self.baselines: dict[str, dict] = {}
        self.current_stage: str | None = None
        self.stage_progress: dict[str, Any] = {"stage": None, "done": 0, "total": 0, "count": 0}
        self.stage_lines: list[tuple[int, str]] = []  # (finish number, one line) of the last finished stages
        self.stages_finished = 0
        self._lock = threading.Lock()  # stage bookkeeping: a background stage may finish beside another
        self._running: list[str] = []  # stages in flight (two while one runs in the background)
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage")
        self._background_jobs = 0  # work submitted by in_background and not yet finished
        self._live_versions: dict[str, int] = {}  # agent -> its newest live snapshot's version
        self.trackers = None  # experiment trackers, opened with the run directory's first round
        self._round_timing: dict[str, Any] = {}
        self.stage_round = 0  # the round the running stages belong to (0 = setup)
        self._setup_done = False
        self.algorithm = make_algorithm(self.config.algorithm, self)
        self.pool.reserved_adapters = tuple(self.algorithm.adapters)
        self.pool.on_steps = self._on_steps
        self.global_steps: dict[str, int] = {}  # agent -> optimizer steps over the whole run (trackers' x axis)
        self._step_clock: dict[str, tuple[float, int]] = {}  # agent -> (arrival time, step) of its call's first record

    # ------------------------------------------------------------ agents
    @property
    def teachers(self) -> list[str]:
        return list(self.teacher_specs)

    @property
    def agents(self) -> list[str]:
        return [STUDENT] + self.teachers

    def teacher_spec(self, name: str) -> ModelSpec:
        return self.teacher_specs[name]

    def log_event(self, event: str, **fields: Any) -> None:
        self.run_dir.log(event, **fields)

    def read_cache(self, name: str) -> Any | None:
        return self.run_dir.read_json(f"cache/{name}")

    def write_cache(self, name: str, data: Any) -> None:
        self.run_dir.write_json(f"cache/{name}", data)

    def _resources(self, role: str) -> dict:
        res = getattr(self.config.resources, role)
        return {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "custom": dict(res.custom),
                "torch_threads": res.torch_threads or self.config.resources.torch_threads, "nice": res.nice,
                "scheduler": res.scheduler, "ranks": res.ranks, "rank_placement": res.rank_placement}

    def start_agents(self, student: bool, teachers: list[tuple[str | None, ModelSpec]]) -> list[str]:
        """Reserve resources for these agents as one placement group, then start their actors (in
        `config.actor_roles()` order: student, judges, teachers)."""
        from orchestrator.placement import reserve

        wanted: dict[str, tuple[Any, dict]] = {}
        judges = self.config.judges()
        if student:
            wanted[STUDENT] = (self.config.student, self._resources("student"))
            for slot, spec in judges.items():
                wanted[slot] = (spec, self._resources("reward_model"))
        taken = set(self.teacher_specs)
        for name, spec in teachers:
            name = name or f"teacher_{len(taken)}"
            while name in taken:
                name = f"teacher_{int(name.split('_')[1]) + 1}"
            taken.add(name)
            wanted[name] = (spec, self._resources("teacher"))
        groups, placed = reserve({n: r for n, (_, r) in wanted.items()}, self.config.ray.placement_timeout_s,
                                 self.config.placement.strategy)
        self.placement_groups.extend(groups)  # none when placed inside an enclosing group (a sweep trial's)
        for name, (spec, _) in wanted.items():
            if name in judges:
                from agents.actor import RewardModelActor

                self.pool.start(name, spec, placed[name], RewardModelActor)
                continue
            if name != STUDENT:
                self.teacher_specs[name] = spec
            self.pool.start(name, spec, placed[name])
        return [n for n in wanted if n != STUDENT and n not in judges]

    # ------------------------------------------------------------ stages
    def _on_progress(self, stage: str, done: int) -> None:
        self.stage_progress["done"] = done

    def _on_steps(self, records: list[dict], dropped: int) -> None:
        """Every optimizer step the agents reported: to metrics.jsonl (`train_step`), the trackers
        (at the agent's run-wide step) and the progress display (step, loss, ETA per agent)."""
        now = time.time()
        with self._lock:
            rows = []
            for record in records:
                agent = record["agent"]
                self.global_steps[agent] = self.global_steps.get(agent, 0) + 1
                rows.append(dict(record, round=self.stage_round, global_step=self.global_steps[agent]))
                if record["step"] == 1 or agent not in self._step_clock:
                    self._step_clock[agent] = (now, record["step"])
                start, first = self._step_clock[agent]
                rate = (record["step"] - first) / (now - start) if now > start and record["step"] > first else 0.0
                self.stage_progress.setdefault("steps", {})[agent] = {
                    "step": record["step"], "total": record["total_steps"], "loss": record.get("loss"),
                    "eta_s": round((record["total_steps"] - record["step"]) / rate, 1) if rate > 0 else None}
            if dropped:
                log.warning("%d step records were dropped (the buffer was full)", dropped)
            if rows:
                self.run_dir.log_many("train_step", rows)
                self._tracked().log_steps(rows)

    def stage(self, name: str, work: dict[str, Call], mutating: bool = False) -> StageResult:
        """Run one parallel stage (agent -> Call), log its timing, snapshot changed agents.
        Thread-safe: `stage_async` runs a stage beside the caller's next ones."""
        with self._lock:
            self._running.append(name)
            self.current_stage = " + ".join(self._running)
            count = self.stage_progress["count"] + 1
            self.stage_progress = {"stage": name, "done": 0, "total": len(work), "count": count}
            work = self._solo_threads(work) if self._running == [name] and not self._background_jobs else work
        started = time.time()
        try:
            result = self.pool.stage(name, work)
            if mutating:
                self._snapshot(list(work))
        finally:
            with self._lock:
                self._running.remove(name)
                self.current_stage = " + ".join(self._running) or None
        slowest = max(result.actor_s.values(), default=0.0)
        line = f"stage {name:<22} {result.wall_s:6.1f}s  (slowest actor {slowest:.1f}s, {len(work)} agents)"
        log.debug(line)  # the driver prints it (ProgressPrinter), once, also into `ray job logs`
        metrics = {a: r for a, r in result.results.items() if isinstance(r, dict) and "steps" in r}
        with self._lock:
            # numbered in the order stages finish, not start: a background stage (the teachers' SFT)
            # that ends after a later-started one must still be a new line for a client that has
            # printed up to that one (numbered by start, it was skipped as already seen)
            self.stages_finished += 1
            self.stage_lines = (self.stage_lines + [(self.stages_finished, line)])[-STAGE_LINES_KEPT:]
            self._tracked().log_stage(name, self.stage_round, result.wall_s, metrics)
            self.run_dir.log("stage", stage=name, round=self.stage_round, started=round(started, 3),
                             wall_s=round(result.wall_s, 4), actor_s={a: round(s, 4) for a, s in result.actor_s.items()},
                             actor_cpu_s={a: round(s, 4) for a, s in result.actor_cpu_s.items()},
                             overhead_s=round(result.overhead_s, 4), **({"train": metrics} if metrics else {}),
                             **({"threads": {a: c.threads for a, c in work.items() if c.threads}}
                                if any(c.threads for c in work.values()) else {}))
            timing = self._round_timing
            timing["wall_stages_s"] = timing.get("wall_stages_s", 0.0) + result.wall_s
            for key, values in (("actor_s", result.actor_s), ("actor_cpu_s", result.actor_cpu_s)):
                for agent, seconds in values.items():
                    timing.setdefault(key, {})[agent] = timing.get(key, {}).get(agent, 0.0) + seconds
        return result

    def _solo_threads(self, work: dict[str, Call]) -> dict[str, Call]:
        """A stage of one agent with nothing else running may use its role's `solo_threads`: the
        cores the other agents leave idle (the student's SFT once the teachers are done)."""
        if len(work) != 1:
            return work
        ((agent, call),) = work.items()
        role = "student" if agent == STUDENT else "reward_model" if agent in self.config.judges() else "teacher"
        threads = getattr(self.config.resources, role).solo_threads
        return {agent: dataclasses.replace(call, threads=threads)} if threads else work

    def stage_async(self, name: str, work: dict[str, Call], mutating: bool = False) -> Future:
        """Start a stage and return at once; `.result()` waits for it. For work that does not
        depend on the caller's next stages (MACPO's teachers train while the student, the round's
        critical path, still selects its positives), so no core idles at a stage barrier. The
        agents of the two must differ: each actor serves one call at a time."""
        return self.in_background(self.stage, name, work, mutating)

    def in_background(self, fn: Any, *args: Any) -> Future:
        """Run `fn(*args)`, a sequence of stages on agents the caller leaves alone, in the
        controller's background thread; `.result()` waits for it (and raises what it raised)."""
        with self._lock:
            self._background_jobs += 1  # from now on no stage counts as alone (see _solo_threads)

        def job():
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._background_jobs -= 1

        return self._background.submit(job)

    def evaluate_baselines(self, jobs: dict[str, tuple[str, str]]) -> None:
        """Evaluate baseline adapters as soon as they are final and keep them with the run."""
        results = self.evaluate(agents=[], extra=jobs, round_index=None)
        with self._lock:
            self.baselines.update(results)

    def _snapshot(self, agents: list[str]) -> None:
        """Save the changed agents so a restarted actor resumes from exactly this point."""
        # a new version is written beside the last one and only then switched to: an agent that dies
        # while saving is restored from the previous, complete snapshot
        with self._lock:
            versions = {a: self._live_versions.get(a, 0) + 1 for a in agents}
            self._live_versions.update(versions)
        targets = {a: self.run_dir.live_snapshot(a, v) for a, v in versions.items()}
        self.pool.stage("snapshot", {a: calls.save(p) for a, p in targets.items()})
        for agent, path in targets.items():
            previous = self.pool.restore_dirs.get(agent)
            self.pool.restore_dirs[agent] = path
            if previous and previous.startswith(self.run_dir.live):
                storage.remove(previous)

    def _log_agent_stats(self, index: int) -> None:
        """Each agent's running counts (prompts cut to fit training or generation, non-finite
        batches skipped) into metrics.jsonl `agent_stats`, once per round."""
        infos = self.pool.stage("agent_stats", {a: calls.info() for a in self.agents}).results
        self.run_dir.log("agent_stats", round=index, agents={a: info.get("stats", {}) for a, info in infos.items()})

    def _log_placement(self, infos: dict[str, dict]) -> None:
        """Which node each actor runs on, with its niceness, torch threads and whether it was forked
        from a warm process (metrics.jsonl `placement`): where to look when one is slow."""
        self.run_dir.log("placement", strategy=self.config.placement.strategy,
                         nodes={name: info.get("node_id") for name, info in infos.items()},
                         cpu={name: {"nice": info.get("nice"), "scheduler": info.get("scheduler"),
                                    "torch_threads": info.get("torch_threads"), "forked": info.get("forked")}
                              for name, info in infos.items() if "nice" in info},
                         ranks={name: info["rank_nodes"] for name, info in infos.items() if "rank_nodes" in info})

    # ------------------------------------------------------------ evaluation
    def evaluate(self, agents: list[str] | None = None, extra: dict[str, tuple[str, str]] | None = None,
                 round_index: int | None = None) -> dict[str, dict]:
        """Score agents (default: all) and `extra` label -> (agent, adapter) on the test split; the
        samples go to `eval/round_<round_index>/` (None: `eval/baselines/`)."""
        jobs = {a: (a, "default") for a in (agents if agents is not None else self.agents)}
        jobs.update(extra or {})
        return evaluate(self, jobs, round_index)

    def score_answer_sets(self, stage: str, agent: str, method: str, prompts: list[str],
                          answer_sets: list[list[str]]) -> list[list[float]]:
        """Score K sets of answers to the same prompts in one call to `agent` (e.g. the student's
        perplexity of every teacher's answers); returns one list of floats per set."""
        flat_prompts = [p for _ in answer_sets for p in prompts]
        flat = [r for answers in answer_sets for r in answers]
        values = self.stage(stage, {agent: calls.score(method, flat_prompts, flat)}).results[agent]
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
            self.run_dir.write_json(SPLITS_FILE, self.task.to_dict())
            self.run_dir.log("task", name=self.task.name, d_w=len(self.task.d_w), q_w2s=len(self.task.q_w2s),
                             test=len(self.task.test), stats=self.task.stats)
            self.start_agents(True, [(None, spec) for spec in self.config.teachers.resolved()])
            loaded = self.stage("load_models", {a: calls.info() for a in self.agents + list(self.config.judges())})
            self._log_placement(loaded.results)
            self.algorithm.initialise()
            self._finish_round(0, time.perf_counter() - start)
        self._setup_done = True
        return self.summary()

    def run_round(self) -> dict:
        """One round of the algorithm, then evaluation and a checkpoint; returns its record."""
        if not self._setup_done:
            self.setup()
        index = self.round_index + 1
        self.stage_round = index
        start = time.perf_counter()
        self._round_timing = {}
        self.algorithm.round(index)
        return self._finish_round(index, time.perf_counter() - start)

    def _finish_round(self, index: int, elapsed: float) -> dict:
        evaluation = self.evaluate(extra=self.algorithm.eval_extra(index), round_index=index)
        self._log_agent_stats(index)
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
        self.round_index = index
        self.save()
        self.run_dir.log("round", **record)  # after the checkpoint: a logged round is never redone
        self._write_outputs()
        log.debug("%s", round_line(record))  # the driver prints it (api.follow): forwarded actor logs can arrive late
        return record

    def add_teacher(self, spec: dict | ModelSpec | None = None) -> str:
        """Add a teacher between rounds; it is initialised before it takes part."""
        if not self._setup_done:
            raise RuntimeError("call setup() before add_teacher()")
        if not self.algorithm.can_add_teachers:
            raise RuntimeError(f"{self.config.algorithm} cannot take teachers at run time (add_teacher applies to MACPO runs)")
        spec = model_spec(spec, "teacher") if spec is not None else copy.deepcopy(self.config.teachers.resolved()[-1])
        if spec.seed in {s.seed for s in self.teacher_specs.values()} and spec.name_or_path in {
                s.name_or_path for s in self.teacher_specs.values()}:
            spec.seed = max(s.seed for s in self.teacher_specs.values()) + 1
        (name,) = self.start_agents(False, [(None, spec)])
        self._log_placement(self.stage("load_models", {name: calls.info()}).results)
        self.algorithm.initialise_teacher(name)
        self.run_dir.log("add_teacher", agent=name, spec=dataclasses.asdict(spec))
        log.info("added %s (%s, seed %d)", name, spec.name_or_path, spec.seed)
        return name

    def run(self) -> dict:
        self.setup()
        while self.round_index < self.algorithm.total_rounds():
            self.run_round()
        return self.summary()

    # ------------------------------------------------------------ outputs
    def summary(self) -> dict:
        summary = {"algorithm": self.config.algorithm, "agents": self.agents, "rounds": self.rounds,
                   "baselines": dict(self.baselines)}
        extra = self.algorithm.summary_extra(self.rounds, self.baselines)
        summary["baselines"].update(extra.pop("baselines", {}))
        summary.update(extra)
        summary["run_dir"] = str(self.run_dir.root)
        return summary

    def progress(self) -> dict:
        """What a client attached with ray.get_actor sees: where the run is now."""
        return {"round": self.round_index, "stage": self.current_stage, "agents": self.agents,
                "rounds_total": self.algorithm.total_rounds(), "run_dir": str(self.run_dir.root),
                "stage_progress": dict(self.stage_progress), "stage_lines": list(self.stage_lines),
                "last_round": ({"round": self.rounds[-1]["round"], "line": round_line(self.rounds[-1])}
                               if self.rounds else None)}

    def _write_outputs(self) -> None:
        summary = self.summary()
        self.run_dir.write_summary(summary)
        plot_rewards(summary, self.run_dir.plots / "rewards.png")
        from orchestrator.run_report import render_report, sample_table

        (self.run_dir.local / "report.md").write_text(render_report(summary, self.run_dir.local))
        self._tracked().log_round(self.rounds[-1], summary)
        index = self.rounds[-1]["round"]
        self._tracked().log_samples(index, sample_table(self.run_dir.local, index, list(self.rounds[-1]["eval"]),
                                                        TRACKED_SAMPLES))
        self.run_dir.publish()  # plots and tracker files of a run on a storage URI

    def _tracked(self):
        """The run's trackers (TensorBoard, W&B, MLflow as configured), opened on first use."""
        if self.trackers is None:
            from orchestrator.trackers import Trackers

            self.trackers = Trackers(self.config.logging, self.run_dir.local, redact(self.config.to_dict()))
        return self.trackers

    def save(self, path: str | None = None) -> str:
        """Checkpoint every agent's adapters plus the orchestrator state, atomically."""
        index = self.round_index
        if path is not None:
            self.pool.stage("save", {a: calls.save(storage.join(path, a)) for a in self.agents})
            if storage.is_local(path):
                write_json_atomic(Path(storage.local_path(path)) / STATE_FILE, self._state_dict())
            else:
                storage.write_json(storage.join(path, STATE_FILE), self._state_dict())
            return path
        written = self.run_dir.new_checkpoint(index)
        self.pool.stage("save", {a: calls.save(storage.join(written, a)) for a in self.agents})
        final = self.run_dir.commit_checkpoint(written, index, self._state_dict())
        for agent in self.agents:
            self.pool.restore_dirs[agent] = storage.join(final, agent)
        retention = self.config.checkpoint
        if retention.keep_best:
            check_keep_best(retention.keep_best, self.rounds)  # before anything is deleted
        if retention.keep_last or retention.keep_best:
            keep = retained_rounds(self.rounds, retention.keep_last, retention.keep_best) | {index}
            if (gone := self.run_dir.prune_checkpoints(keep)):
                self.run_dir.log("checkpoints_pruned", rounds=gone, kept=sorted(keep))
        return str(final)

    def _state_dict(self) -> dict:
        return {"round": self.round_index, "algorithm_state": self.algorithm.state_dict(),
                "teachers": {n: dataclasses.asdict(s) for n, s in self.teacher_specs.items()},
                "rounds": self.rounds, "baselines": self.baselines, "failures": self.pool.failures,
                "global_steps": self.global_steps}

    def _restore(self) -> None:
        checkpoint = self.run_dir.latest_checkpoint()
        if checkpoint is None:
            raise RuntimeError(f"{self.run_dir.root}: no complete checkpoint to resume from")
        state = self.run_dir.read_state(checkpoint)
        self.task = TaskData.from_dict(self.run_dir.read_json(SPLITS_FILE))
        self.start_agents(True, [(name, model_spec(spec, f"teachers.{name}")) for name, spec in state["teachers"].items()])
        for agent in self.agents:
            self.pool.restore_dirs[agent] = storage.join(checkpoint, agent)
        self.stage("restore", {a: calls.load(storage.join(checkpoint, a)) for a in self.agents})
        self.round_index = state["round"]
        self.algorithm.load_state_dict(state.get("algorithm_state", {}))
        self.rounds = state["rounds"]
        self.baselines = state["baselines"]
        self.pool.failures = state.get("failures", {})
        self.global_steps = dict(state.get("global_steps", {}))
        self.run_dir.log("resume", checkpoint=checkpoint, round=state["round"])
        log.info("resumed %s from %s (round %d done)", self.run_dir.root, checkpoint, state["round"])

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        self._background.shutdown(wait=True)  # a background stage still writing to the run directory

        if self.trackers is not None:
            self.trackers.close()
            self.trackers = None
        self.run_dir.close()

        self.pool.shutdown()
        for group in self.placement_groups:
            try:
                remove_placement_group(group)
            except Exception:  # noqa: BLE001 - already gone with the cluster
                pass
        self.placement_groups.clear()
