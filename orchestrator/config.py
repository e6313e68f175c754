"""Run configuration: YAML files -> typed dataclasses, with dotted `key=value` overrides.

Every key is known in advance, so a typo or a wrong type fails at start with one line naming the
key, instead of hours later on a cluster. `teachers.count=N` cycles the listed teacher specs (each
cycled copy gets its own seed), so any number of teachers is a single override.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from agents import storage
from agents.config import (SCHEDULERS, AgentConfigError, ModelSpec, RewardModelSpec, SamplingConfig, TrainConfig, validate_model_spec,
                           validate_reward_model, validate_sampling, validate_train)
from orchestrator.trackers import LoggingConfig
from orchestrator.trackers import validate as validate_logging
from orchestrator.typed_yaml import ConfigError, build, convert_value, from_mapping, parse_override, read_composed, read_yaml_mapping  # noqa: F401 - re-exported
from tasks.config import TaskConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
# judge slot -> prefix of its metrics (`rm_score`, `rm_win_rate`, `safety_score`, `safety_win_rate`)
JUDGE_METRICS = {"reward_model": "rm", "safety_model": "safety"}


@dataclass
class TeachersConfig:
    """The weak teachers: `count` agents built by cycling `specs`."""

    count: int = 3  # how many teachers (cycling `specs`)
    specs: list[ModelSpec] = field(default_factory=lambda: [ModelSpec(name_or_path="tiny:weak", seed=1)])  # their models

    def resolved(self) -> list[ModelSpec]:
        """The `count` teacher specs; the n-th cycled copy of a spec takes seed `seed + n * len(specs)`
        (a different `tiny:` base), so specs seeded 1..3 grow into teachers on bases 1..count."""
        out = []
        for i in range(self.count):
            spec = copy.deepcopy(self.specs[i % len(self.specs)])
            spec.seed += len(self.specs) * (i // len(self.specs))
            out.append(spec)
        return out


@dataclass
class TrainingConfig:
    """One TrainConfig per training stage (MACPO and WSPO stages, plus baselines)."""

    # MACPO: teachers SFT on D_w chosen
    teacher_sft: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, epochs=3))
    # MACPO: every negative agent's SFT on negative data (from the agent's own adapter)
    negative_sft: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, epochs=1))
    # MACPO: the student's SFT on weak labels (and the gold-label ceiling baseline)
    student_sft: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, epochs=3))
    # MACPO rounds: each teacher's macpo_loss on (student answer, own hard negative)
    teacher_macpo: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-5, warmup_ratio=0.1))
    # MACPO rounds: the student's macpo_loss on (best teacher answer, own hard negative)
    student_macpo: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-5, warmup_ratio=0.1))
    # WSPO: the weak model's DPO on D_w pairs (weak reference -> weak aligned); with
    # wspo.weak_reference=sft it is referenced to the weak SFT model (round_start), as the paper's code
    weak_dpo: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-6, epochs=1, reference="round_start"))
    # WSPO with wspo.strong_sft: the student's SFT on D_w chosen, its start and reference
    strong_sft: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, epochs=3))
    # WSPO: the student's wspo_loss (also the budget of its SFT-on-chosen baseline)
    wspo: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-6, epochs=3, batch_size=8, warmup_ratio=0.1, shift_scale=0.1))
    # WSPO: the student's DPO baseline on the same D_w pairs
    student_dpo: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-6, epochs=3, batch_size=8, warmup_ratio=0.1))


@dataclass
class AblationConfig:
    """MACPO ablations (docs/architecture.md): each False switches one mechanism off."""

    mutual_positives: bool = True  # off: each agent's positive is its own answer, not a peer's
    hard_negatives: bool = True  # off: each agent's negative is its own sample, not its negative agent's
    teachers_learn: bool = True  # off: teachers stay frozen after initialisation


STUDENT_NEGATIVE_SOURCES = ("first_teacher", "round_robin")


@dataclass
class MacpoConfig:
    """Choices of MACPO's initialisation where the paper leaves room.

    `student_negatives_from`: whose negative agent's answers the student's negative agent is SFT'd
    on. `first_teacher`: the first teacher's (teachers.specs.0), as the authors' data file
    hh_weak_neg_5k_help.json holds (it matches the Llama-2-7B teacher's rejected answers on every
    row checked, none of Mistral's); `round_robin`: the teachers' in turn, one prompt each."""

    student_negatives_from: str = "first_teacher"


@dataclass
class BaselinesConfig:
    strong_ceiling: bool = True  # student SFT on gold labels of Q_w2s (synthetic) / D_w chosen (real)


@dataclass
class WspoConfig:
    """Where WSPO's two sides start.

    Weak side: `weak_reference: sft` = the shift is weak SFT model -> weak aligned (SFT then DPO,
    the DPO referenced to the SFT model: `train.weak_dpo.reference: round_start`), as the paper's
    code; `base` = the shift is weak base (adapter disabled) -> SFT then DPO on D_w, for tasks where
    D_w's SFT is itself the alignment, as in the synthetic world (refusing is learned from D_w
    chosen). `weak_sft: false` takes the weak model as loaded for its SFT model (an Instruct
    checkpoint, as the official example's Qwen2-1.5B-Instruct): no SFT stage.
    Strong side: the paper starts from, and references to, an SFT model: either load one (the
    official example: Qwen2-7B-Instruct, `strong_sft: false`, reference = the model as loaded) or
    `strong_sft: true`: SFT the student on D_w chosen first (`train.strong_sft`); WSPO and both
    baselines then start from it and are referenced to it (`reference: round_start`)."""

    weak_reference: str = "sft"  # sft | base
    weak_sft: bool = True  # SFT the weak model on D_w chosen before its DPO (false: it is an SFT model already)
    strong_sft: bool = False  # SFT the student on D_w chosen first and use it as start and reference


@dataclass
class ActorResources:
    num_cpus: float = 0.5  # Ray scheduling share (each actor runs `resources.torch_threads` threads)
    num_gpus: float = 0.0  # GPUs reserved for the actor (fractions share one GPU)
    # memory of each of those GPUs, the budget of the memory preflight (0: read from the GPU the
    # starting machine shows; 80 where it shows none, and the preflight says it assumed so)
    gpu_memory_gib: float = 0.0
    # custom node resources the actor needs, to pin a role to nodes started with them
    # (`ray start --resources='{"student_node": 1}'` and here {student_node: 1})
    custom: dict = field(default_factory=dict)
    # CPU scheduling on a shared node: torch threads of this role's actors (0: resources.torch_threads),
    # their niceness, added to the one Ray gives its workers (higher = lower OS priority), and their OS
    # scheduling policy: normal | batch | idle (Linux SCHED_IDLE: only cycles nobody else wants, so a
    # node's critical-path agent, usually the student, keeps a whole core). None changes any result.
    torch_threads: int = 0
    nice: int = 0
    scheduler: str = "normal"
    # FSDP2 ranks of each agent of this role (agents.sharding): N > 1 makes the agent N actors, one
    # per placement bundle of num_gpus / N GPUs and num_cpus / N CPUs, started, driven and recovered
    # together; training splits each batch over them (same update as one rank), checkpoints are
    # written by rank 0 in PEFT format. 1: one actor, as before.
    ranks: int = 1
    # how one agent's ranks spread over nodes: PACK (one node where they fit), STRICT_PACK (one node
    # or refuse), SPREAD (prefer different nodes), STRICT_SPREAD (one node per rank or refuse)
    rank_placement: str = "PACK"
    # torch threads for a stage this agent runs alone (nothing else computing, e.g. the student's
    # SFT after the teachers are done): the cores the others leave idle. 0: no change.
    solo_threads: int = 0


@dataclass
class ResourcesConfig:
    student: ActorResources = field(default_factory=lambda: ActorResources(num_cpus=0.25))  # the student's actor
    teacher: ActorResources = field(default_factory=lambda: ActorResources(num_cpus=0.1))  # each teacher's actor
    reward_model: ActorResources = field(default_factory=lambda: ActorResources(num_cpus=0.1))  # the judge's actor
    orchestrator_cpus: float = 0.1  # the orchestrator actor (or a sweep trial's process)
    torch_threads: int = 1  # torch intra-op threads per actor


@dataclass
class RayConfig:
    address: str | None = None  # None: RAY_ADDRESS if set, else a local Ray
    namespace: str = "w2s"  # Ray namespace of the named orchestrator and agent actors
    stage_timeout_s: float = 1800.0  # a stage that takes longer names the slow agent and fails
    max_failures: int = 2  # agent actor restarts allowed per run before giving up
    dashboard_host: str = "127.0.0.1"  # a local Ray's dashboard binds here (loopback: not exposed)
    include_dashboard: bool = False  # start the dashboard with a local Ray
    placement_timeout_s: float = 60.0  # an agents' placement group not granted by then is an error naming them
    # CPU agents start as forks of a per-node process that has imported torch/transformers/peft once
    # (agents.prefork): about 7 CPU seconds saved per agent; GPU agents always start the plain way
    prefork: bool = True


PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class PlacementConfig:
    """How the agents' bundles spread over the nodes: Ray's placement group strategies. PACK fills
    few nodes (fast on one machine), SPREAD prefers different nodes, STRICT_SPREAD demands one node
    per agent (fails, naming the agents, when the cluster has too few)."""

    strategy: str = "PACK"


@dataclass
class CheckpointConfig:
    """Which round checkpoints stay on disk (the newest always does: a resume starts there)."""

    keep_last: int = 0  # the newest N rounds (0: every round)
    keep_best: str | None = None  # also the best round by "<agent>.<metric>" of its eval, e.g. student.reward


@dataclass
class RunConfig:
    algorithm: str = "macpo"  # a registered algorithm: macpo | wspo
    seed: int = 0  # data split, LoRA init, batch order, sampling (not which base: that is each spec's seed)
    rounds: int = 2  # rounds after initialisation (WSPO always runs 1)
    output_dir: str | None = None  # a path or storage URI; default runs/<timestamp>-<id> (<storage_root>/... in a Ray job)
    overwrite_output_dir: bool = False  # a fresh run may replace a non-empty output_dir (else it is refused)
    # where jobs' runs go: a storage URI (s3://bucket/runs) or a path every node sees; default $W2S_STORAGE, else ~/w2s-runs
    storage_root: str | None = None
    # fsspec options for storage URIs (e.g. S3's endpoint_url, key, secret); S3 also reads the AWS_* variables
    storage_options: dict = field(default_factory=dict)
    cache_dir: str | None = None  # built tiny bases; default $W2S_CACHE_DIR or ~/.cache/w2s_ray
    task: TaskConfig = field(default_factory=TaskConfig)  # data: which task, split sizes
    student: ModelSpec = field(default_factory=lambda: ModelSpec(name_or_path="tiny:strong"))  # the strong model
    teachers: TeachersConfig = field(default_factory=TeachersConfig)  # the weak models
    # how agents answer Q_w2s (weak labels, hard negatives, round positives): the MACPO paper's sampling
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.95, top_p=0.7, top_k=50))
    eval_sampling: SamplingConfig = field(default_factory=SamplingConfig)  # how test answers are made (greedy)
    eval_size: int = 0  # 0: the whole test split
    # scores every agent's greedy test answers; the headline reward on tasks without a rule reward
    reward_model: RewardModelSpec = field(default_factory=RewardModelSpec)
    # a second judge beside it, e.g. harmlessness (a cost model with `negate: true`): both papers judge
    # helpfulness and harmlessness separately
    safety_model: RewardModelSpec = field(default_factory=RewardModelSpec)
    train: TrainingConfig = field(default_factory=TrainingConfig)  # one TrainConfig per training stage
    ablation: AblationConfig = field(default_factory=AblationConfig)  # MACPO's switches
    macpo: MacpoConfig = field(default_factory=MacpoConfig)  # MACPO's initialisation choices
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)  # extra adapters evaluated beside the agents
    wspo: WspoConfig = field(default_factory=WspoConfig)  # WSPO's weak pair
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)  # Ray resources per role
    ray: RayConfig = field(default_factory=RayConfig)  # cluster, timeouts, failures
    placement: PlacementConfig = field(default_factory=PlacementConfig)  # how agents spread over nodes
    progress: bool = True  # progress bars on a terminal
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # experiment trackers beside metrics.jsonl
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)  # retention of round checkpoints

    def judges(self) -> dict[str, RewardModelSpec]:
        """The configured judge slots (actor name -> spec), in start order."""
        return {slot: getattr(self, slot) for slot in JUDGE_METRICS if getattr(self, slot).name_or_path is not None}

    def actor_roles(self) -> list[str]:
        """The `resources` role of every actor the run starts, in the order it starts them (the
        student, each judge (`resources.reward_model`), each teacher): what a sweep trial's bundles
        are sized on."""
        return ["student"] + ["reward_model"] * len(self.judges()) + ["teacher"] * self.teachers.count

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Load a YAML run config (default `configs/default.yaml`), apply overrides, validate."""
    config = build(RunConfig, read_composed(path or DEFAULT_CONFIG), overrides)
    validate(config)
    return config


def model_spec(value: ModelSpec | dict, key: str = "model") -> ModelSpec:
    """A validated ModelSpec from a dict (e.g. `add_teacher({"name_or_path": ..., "seed": 3})`)."""
    spec = convert_value(copy.deepcopy(value), ModelSpec, key)
    try:
        validate_model_spec(spec, key)
    except AgentConfigError as exc:
        raise ConfigError(str(exc)) from None
    return spec


def config_for_resume(saved: dict, overrides: Sequence[str] = ()) -> RunConfig:
    """The config of a run resumed from its config.yaml, whose credentials were redacted when it
    was written (orchestrator.redaction): overrides may give exactly those values again; redacted
    `storage_options` not given are dropped, so the storage's own credential chain (AWS_*
    variables, profiles) supplies them; any other redacted value must be given."""
    from orchestrator.redaction import REDACTED, redacted_keys

    redacted = redacted_keys(saved)
    data = copy.deepcopy(saved)
    for text in overrides:
        key = parse_override(text)[0]
        if key not in redacted:
            raise ConfigError(f"--resume takes overrides only for values redacted from config.yaml "
                              f"({', '.join(redacted) or 'none here'}); {key} comes from the run's own config.yaml")
    given = {parse_override(text)[0] for text in overrides}
    for key in redacted:
        if key in given:
            continue
        if key.startswith("storage_options."):
            parent = data
            *path, leaf = key.split(".")
            for part in path:
                parent = parent[part]
            del parent[leaf]
        else:
            raise ConfigError(f"{key} was redacted from config.yaml ({REDACTED}); give it again: --resume RUN_DIR {key}=...")
    config = build(RunConfig, data, overrides)
    validate(config)
    return config


def config_from_dict(data: dict) -> RunConfig:
    """Rebuild a RunConfig from `to_dict()` output (e.g. a run directory's config.yaml)."""
    config = from_mapping(RunConfig, copy.deepcopy(data))
    validate(config)
    return config


# ---------------------------------------------------------------- validation
def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def _validate_ranks(config: RunConfig, role: str, res: ActorResources) -> None:
    """`ranks`: a positive integer that splits the role's GPUs into whole GPUs per rank; a sharded
    agent trains with FSDP2, so not with `device_map` nor (yet) a vLLM engine."""
    key = f"resources.{role}.ranks"
    _check(isinstance(res.ranks, int) and not isinstance(res.ranks, bool) and res.ranks >= 1, key, res.ranks,
           "a positive integer: the FSDP ranks of each agent of this role")
    _check(res.rank_placement in PLACEMENT_STRATEGIES, f"resources.{role}.rank_placement", res.rank_placement,
           f"choose one of {PLACEMENT_STRATEGIES}")
    if res.ranks == 1:
        return
    _check(role != "reward_model", key, res.ranks, "a judge only scores; give it 1 rank (num_gpus for its size)")
    per_rank = res.num_gpus / res.ranks
    _check(res.num_gpus == 0 or (per_rank >= 1 and per_rank == int(per_rank)), key, res.ranks,
           f"must divide resources.{role}.num_gpus={res.num_gpus:g} into whole GPUs per rank (NCCL needs one GPU per rank)")
    specs = [("student", config.student)] if role == "student" else [
        (f"teachers.specs.{i}", s) for i, s in enumerate(config.teachers.specs)]
    for spec_key, spec in specs:
        _check(not spec.device_map, f"{spec_key}.device_map", spec.device_map,
               f"a sharded agent ({key}={res.ranks}) is split by FSDP2, not device_map; set it to null")
        _check(spec.backend == "hf", f"{spec_key}.backend", spec.backend,
               f"a sharded agent ({key}={res.ranks}) generates with transformers in lockstep; a vLLM engine beside FSDP ranks is not supported yet")


def validate(config: RunConfig) -> None:
    """Raise ConfigError naming the first bad key."""
    from tasks.config import TaskConfigError

    from orchestrator.algorithms import ALGORITHMS

    _check(config.algorithm in ALGORITHMS, "algorithm", config.algorithm, f"choose one of {ALGORITHMS}")
    _check(config.rounds >= 0, "rounds", config.rounds, "must be >= 0")
    for key in ("output_dir", "storage_root"):
        value = getattr(config, key)
        _check(value is None or (isinstance(value, str) and value.strip()), key, value, "a path or storage URI, or null")
        if isinstance(value, str) and "://" in value:
            _check(value.split("://", 1)[0].isidentifier() and value.split("://", 1)[1].strip("/"), key, value,
                   "a storage URI is <protocol>://<bucket>/<path>, e.g. s3://bucket/runs")
    _check(isinstance(config.storage_options, dict), "storage_options", config.storage_options,
           "a mapping of fsspec options, e.g. {endpoint_url: http://127.0.0.1:9000}")
    _check(config.eval_size >= 0, "eval_size", config.eval_size, "must be >= 0")
    _check(config.ablation.mutual_positives or config.ablation.hard_negatives, "ablation.hard_negatives", False,
           "with ablation.mutual_positives=false too, every pair would be an answer against itself; keep one of them")
    _check(config.algorithm != "macpo" or config.task.name == "synthetic" or config.task.labelled_share < 1.0,
           "task.labelled_share", config.task.labelled_share, "MACPO needs unlabelled prompts (Q_w2s): use a share below 1")
    _check(config.macpo.student_negatives_from in STUDENT_NEGATIVE_SOURCES, "macpo.student_negatives_from",
           config.macpo.student_negatives_from, f"choose one of {STUDENT_NEGATIVE_SOURCES}")
    _check(config.teachers.count >= 1, "teachers.count", config.teachers.count, "need at least one teacher")
    _check(bool(config.teachers.specs), "teachers.specs", config.teachers.specs, "list at least one teacher spec")
    try:
        config.task.validate()
    except TaskConfigError as exc:
        raise ConfigError(str(exc)) from None
    try:
        validate_model_spec(config.student, "student")
        for i, spec in enumerate(config.teachers.specs):
            validate_model_spec(spec, f"teachers.specs.{i}")
        for f in dataclasses.fields(TrainingConfig):
            validate_train(getattr(config.train, f.name), f"train.{f.name}")
        validate_sampling(config.sampling, "sampling")
        validate_sampling(config.eval_sampling, "eval_sampling")
        for slot in JUDGE_METRICS:
            validate_reward_model(getattr(config, slot), slot)
    except AgentConfigError as exc:
        raise ConfigError(str(exc)) from None
    for role in ("student", "teacher", "reward_model"):
        res = getattr(config.resources, role)
        _check(res.num_cpus >= 0, f"resources.{role}.num_cpus", res.num_cpus, "must be >= 0")
        _check(res.num_gpus >= 0, f"resources.{role}.num_gpus", res.num_gpus, "must be >= 0")
        _validate_ranks(config, role, res)
    for role in ("student", "teacher", "reward_model"):
        custom = getattr(config.resources, role).custom
        _check(isinstance(custom, dict) and all(isinstance(k, str) and isinstance(v, (int, float)) and v > 0
                                                for k, v in custom.items()),
               f"resources.{role}.custom", custom, "a mapping of node resource name -> amount > 0")
    for role in ("student", "teacher", "reward_model"):
        res = getattr(config.resources, role)
        _check(res.torch_threads >= 0, f"resources.{role}.torch_threads", res.torch_threads, "must be >= 0 (0: resources.torch_threads)")
        _check(res.solo_threads >= 0, f"resources.{role}.solo_threads", res.solo_threads, "must be >= 0 (0: no change)")
        _check(0 <= res.nice <= 19, f"resources.{role}.nice", res.nice, "must be in [0, 19] (raising priority needs root)")
        _check(res.scheduler in SCHEDULERS, f"resources.{role}.scheduler", res.scheduler, f"choose one of {SCHEDULERS}")
    _check(config.placement.strategy in PLACEMENT_STRATEGIES, "placement.strategy", config.placement.strategy,
           f"choose one of {PLACEMENT_STRATEGIES}")
    _check(config.resources.torch_threads >= 1, "resources.torch_threads", config.resources.torch_threads, "must be >= 1")
    _check(config.wspo.weak_reference in ("sft", "base"), "wspo.weak_reference", config.wspo.weak_reference,
           "choose sft or base")
    if config.algorithm == "wspo":
        _validate_wspo_references(config)
    _check(config.checkpoint.keep_last >= 0, "checkpoint.keep_last", config.checkpoint.keep_last, "must be >= 0")
    best = config.checkpoint.keep_best
    _check(best is None or (isinstance(best, str) and len(best.split(".", 1)) == 2 and all(best.split(".", 1))),
           "checkpoint.keep_best", best, 'expected "<agent>.<metric>", e.g. student.reward')
    if (problem := validate_logging(config.logging)):
        raise ConfigError(problem)
    _check(config.ray.stage_timeout_s > 0, "ray.stage_timeout_s", config.ray.stage_timeout_s, "must be > 0")
    _check(config.ray.max_failures >= 0, "ray.max_failures", config.ray.max_failures, "must be >= 0")


def _validate_wspo_references(config: RunConfig) -> None:
    """Each WSPO training stage must be referenced to the model its side starts from, or the shift
    the student copies is not the one the weak DPO learned (or its own shift is measured from the
    wrong place)."""
    train, wspo = config.train, config.wspo
    if wspo.weak_reference == "sft":
        _check(train.weak_dpo.reference == "round_start", "train.weak_dpo.reference", train.weak_dpo.reference,
               "with wspo.weak_reference=sft the weak DPO is referenced to the weak SFT model: use round_start")
    strong = "round_start" if wspo.strong_sft else "base"
    why = ("with wspo.strong_sft=true the student starts from its SFT model and is referenced to it: use round_start"
           if wspo.strong_sft else "the student's reference is the strong model as loaded: use base "
           "(or set wspo.strong_sft=true)")
    for key in ("wspo", "student_dpo"):
        _check(getattr(train, key).reference == strong, f"train.{key}.reference", getattr(train, key).reference, why)


# the training stages each role runs, per algorithm, and whether a stage feeds pairs (2 sequences each)
_ROLE_STAGES = {
    "macpo": {"student": ("student_sft", "student_macpo"), "teacher": ("teacher_sft", "negative_sft", "teacher_macpo")},
    "wspo": {"student": ("wspo", "student_dpo", "strong_sft"), "teacher": ("teacher_sft", "weak_dpo")},
}
_PAIR_STAGES = {"student_macpo", "teacher_macpo", "student_dpo", "weak_dpo"}


def role_stages(config: RunConfig, role: str) -> tuple[str, ...]:
    """The training stages `role` runs in this run (WSPO's SFT stages only where switched on)."""
    stages = _ROLE_STAGES.get(config.algorithm, {}).get(role, ())
    if config.algorithm == "wspo":
        skipped = {"teacher_sft"} if not config.wspo.weak_sft else set()
        skipped |= {"strong_sft"} if not config.wspo.strong_sft else set()
        stages = tuple(s for s in stages if s not in skipped)
    return stages


def max_new_tokens(config: RunConfig) -> int:
    """The longest answer any generation of the run asks for: what an engine's context must hold."""
    return max(config.sampling.max_new_tokens, config.eval_sampling.max_new_tokens)


def gpu_gib(resources: ActorResources) -> tuple[float, bool]:
    """(GiB of each of the role's GPUs, whether that is an assumption): `gpu_memory_gib`, else the
    GPU this machine shows, else 80."""
    from agents.gpu_layout import visible_gpu_gib

    if resources.gpu_memory_gib > 0:
        return resources.gpu_memory_gib, False
    seen = visible_gpu_gib()
    return (seen, False) if seen else (80.0, True)


def check_gpu_memory(config: RunConfig) -> list[str]:
    """Refuse, naming the agent, a GPU layout that cannot work: training weights plus the larger of
    a training micro-batch and a scoring pass, plus (or, with `vllm_sleep`, instead of) the vLLM
    engine's share, over the GPU's memory (agents.gpu_layout's estimate from each model's
    config.json), or a vLLM engine that cannot start in the agent's bundle. Returns the agents whose
    config.json could not be read (their check was skipped) and notes an assumed GPU size."""
    from agents.gpu_layout import ModelShape, engine_placement_problem, estimate_memory, read_model_config, vllm_engine_args

    skipped = []
    specs = [("student", "student", config.student)] + [
        (f"teachers.specs.{i}", "teacher", s) for i, s in enumerate(config.teachers.specs)]
    for key, role, spec in specs:
        resources = getattr(config.resources, role)
        if resources.num_gpus <= 0 or spec.name_or_path.startswith("tiny:"):
            continue
        model_config = read_model_config(spec.name_or_path)
        if model_config is None:
            skipped.append(key)
            continue
        shape = ModelShape.from_config(model_config)
        if spec.backend == "vllm":
            try:
                problem = engine_placement_problem(
                    vllm_engine_args(spec.name_or_path, spec, resources.num_gpus, max_new_tokens(config)),
                    resources.num_gpus, shape)
            except ValueError as exc:
                problem = str(exc)
            if problem:
                raise ConfigError(f"{key}: vLLM engine of {spec.name_or_path} on resources.{role}: {problem}")
        sequences = max((getattr(config.train, s).batch_size * (2 if s in _PAIR_STAGES else 1)
                         for s in role_stages(config, role)), default=1)
        size, assumed = gpu_gib(resources)
        estimate = estimate_memory(shape, spec, resources.num_gpus, size, sequences, resources.ranks)
        if (problem := estimate.problem()):
            raise ConfigError(
                f"{key}: {spec.name_or_path} on {resources.num_gpus:g} x {size:g} GiB GPUs "
                f"{f'as {resources.ranks} FSDP ranks ' if resources.ranks > 1 else ''}"
                f"(resources.{role}{'; GPU size assumed, none visible here' if assumed else ''}) {problem}; give it more GPUs or ranks, a smaller train batch_size with grad_accum, "
                f"a smaller score_token_budget or a smaller vllm_gpu_memory_utilization")
    return skipped


def preflight(config: RunConfig) -> None:
    """Checks that need more than the file (run at start, not by load_config).

    Paper configs must load anywhere (tests validate them on CPU), but running one needs a GPU
    layout where every model fits (from its config.json) and what they ask for: the vllm extra for
    `backend: vllm`."""
    import logging

    from agents.gpu_layout import vllm_available

    from orchestrator.trackers import check_installed

    if (missing := check_installed(config.logging)):
        raise ConfigError(missing)
    storage.configure(config.storage_options)
    for target in (config.output_dir, config.storage_root):
        if target:  # a URI's filesystem installed and its bucket writable, before any model loads
            storage.check_writable(target)
    if (skipped := check_gpu_memory(config)):
        logging.getLogger("orchestrator").warning(
            "GPU memory preflight skipped for %s: config.json not reachable", ", ".join(skipped))
    specs = [("student", config.student)] + [(f"teachers.specs.{i}", s) for i, s in enumerate(config.teachers.specs)]
    for key, spec in specs:
        if spec.backend == "vllm" and not vllm_available():
            raise ConfigError(f"{key}.backend='vllm': vllm is not installed here; pip install '.[vllm]' or set backend=hf")
