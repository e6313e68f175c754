"""Run configuration: YAML files -> typed dataclasses, with dotted `key=value` overrides.

Every key is known in advance, so a typo or a wrong type fails at start with one line naming the
key, instead of hours later on a cluster. `teachers.count=N` cycles the listed teacher specs (each
cycled copy gets its own seed), so any number of teachers is a single override.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from agents.config import ModelSpec, RewardModelSpec, SamplingConfig, TrainConfig
from tasks.config import TaskConfig
from tasks.errors import BadInput

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


class ConfigError(BadInput, ValueError):
    """A bad configuration value; the message names the key and the value."""


@dataclass
class TeachersConfig:
    """The weak teachers: `count` agents built by cycling `specs`."""

    count: int = 3
    specs: list[ModelSpec] = field(default_factory=lambda: [ModelSpec(name_or_path="tiny:weak", seed=1)])

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

    teacher_sft: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, epochs=3))
    negative_sft: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, epochs=1))
    student_sft: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, epochs=3))
    teacher_macpo: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-5, warmup_ratio=0.1))
    student_macpo: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-5, warmup_ratio=0.1))
    weak_dpo: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-6, epochs=1))
    wspo: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-6, epochs=3, batch_size=8, warmup_ratio=0.1, gamma=0.1))
    student_dpo: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-6, epochs=3, batch_size=8, warmup_ratio=0.1))


@dataclass
class AblationConfig:
    """MACPO ablations (DESIGN.md): each False switches one mechanism off."""

    mutual_positives: bool = True
    hard_negatives: bool = True
    teachers_learn: bool = True


@dataclass
class BaselinesConfig:
    strong_ceiling: bool = True  # student SFT on gold labels of Q_w2s (synthetic) / D_w chosen (real)


@dataclass
class WspoConfig:
    """WSPO's weak pair: `sft` = weak reference is the weak SFT model, aligned = SFT then DPO (the
    paper's code, where SFT is general instruction tuning); `base` = weak reference is the weak base
    (adapter disabled), aligned = SFT then DPO on D_w - for tasks where D_w's SFT is itself the
    alignment, as in the synthetic world (refusing is learned from D_w chosen)."""

    weak_reference: str = "sft"


@dataclass
class ActorResources:
    num_cpus: float = 0.5
    num_gpus: float = 0.0


@dataclass
class ResourcesConfig:
    student: ActorResources = field(default_factory=lambda: ActorResources(num_cpus=0.25))
    teacher: ActorResources = field(default_factory=lambda: ActorResources(num_cpus=0.1))
    reward_model: ActorResources = field(default_factory=lambda: ActorResources(num_cpus=0.1))
    orchestrator_cpus: float = 0.1
    torch_threads: int = 1


@dataclass
class RayConfig:
    address: str | None = None  # None: RAY_ADDRESS if set, else a local Ray
    namespace: str = "w2s"
    stage_timeout_s: float = 1800.0  # a stage that takes longer names the slow agent and fails
    max_failures: int = 2  # agent actor restarts allowed per run before giving up
    dashboard_host: str = "127.0.0.1"
    include_dashboard: bool = False
    placement_timeout_s: float = 60.0


@dataclass
class RunConfig:
    algorithm: str = "macpo"
    seed: int = 0
    rounds: int = 2
    output_dir: str | None = None  # default runs/<timestamp>
    cache_dir: str | None = None  # built tiny bases; default $W2S_CACHE_DIR or ~/.cache/w2s_ray
    task: TaskConfig = field(default_factory=TaskConfig)
    student: ModelSpec = field(default_factory=lambda: ModelSpec(name_or_path="tiny:strong"))
    teachers: TeachersConfig = field(default_factory=TeachersConfig)
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.95, top_p=0.7, top_k=50))
    eval_sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval_size: int = 0  # 0: the whole test split
    # scores every agent's greedy test answers; the headline reward on tasks without a rule reward
    reward_model: RewardModelSpec = field(default_factory=RewardModelSpec)
    train: TrainingConfig = field(default_factory=TrainingConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    wspo: WspoConfig = field(default_factory=WspoConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    progress: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- building from plain data
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert `value` to the annotated type `tp`, naming `key` on failure."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        return [_convert(v, item_type, f"{key}.{i}") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `3e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: expected a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}={value!r}: expected a string")
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"{full}: unknown key (valid keys: {', '.join(sorted(names))})")
        kwargs[key] = _convert(value, hints[key], full)
    return cls(**kwargs)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = node[int(part)] if isinstance(node, list) and part.isdigit() else node.get(part) if isinstance(node, dict) else None
        if nxt is None:
            if isinstance(node, dict):
                nxt = node[part] = {}
            else:
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: no such key to override")
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"{dotted}: list index out of range")
        node[int(last)] = value
    else:
        node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", YAML-parsed value): `1` -> 1, `false` -> False, `[a, b]` -> list."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Load a YAML run config (default `configs/default.yaml`), apply overrides, validate."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    config = _build(RunConfig, data)
    validate(config)
    return config


def model_spec(value: ModelSpec | dict, key: str = "model") -> ModelSpec:
    """A validated ModelSpec from a dict (e.g. `add_teacher({"name_or_path": ..., "seed": 3})`)."""
    spec = _convert(copy.deepcopy(value), ModelSpec, key)
    _validate_model(spec, key)
    return spec


def config_from_dict(data: dict) -> RunConfig:
    """Rebuild a RunConfig from `to_dict()` output (e.g. a run directory's config.yaml)."""
    config = _build(RunConfig, copy.deepcopy(data))
    validate(config)
    return config


# ---------------------------------------------------------------- validation
def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def _validate_source(key: str, name: str, template: str, dtype: str, max_length: int) -> None:
    """What every loaded model needs, agent or reward model: a template, a dtype, a length and, for
    a local path, a directory that exists."""
    from agents.templates import TEMPLATES

    _check(template in TEMPLATES, f"{key}.template", template, f"choose one of {sorted(TEMPLATES)}")
    _check(dtype in ("float32", "bfloat16", "float16"), f"{key}.dtype", dtype, "choose float32, bfloat16 or float16")
    _check(max_length >= 8, f"{key}.max_length", max_length, "must be at least 8")
    if name.startswith(("/", "./", "../", "~")) and not os.path.isdir(os.path.expanduser(name)):
        raise ConfigError(f"{key}.name_or_path={name!r}: directory not found")


def _validate_model(spec: ModelSpec, key: str) -> None:
    _validate_source(key, spec.name_or_path, spec.template, spec.dtype, spec.max_length)
    _check(spec.backend in ("hf", "vllm"), f"{key}.backend", spec.backend, "choose hf or vllm")
    _check(spec.lora.r >= 1, f"{key}.lora.r", spec.lora.r, "must be >= 1")
    _check(bool(spec.lora.target_modules), f"{key}.lora.target_modules", spec.lora.target_modules, "must not be empty")
    name = spec.name_or_path
    if name.startswith("tiny:"):
        from agents.tiny import PRESETS

        _check(name[5:] in PRESETS, f"{key}.name_or_path", name, f"unknown tiny preset; choose tiny:{{{','.join(PRESETS)}}}")


def _validate_reward_model(spec: RewardModelSpec) -> None:
    key = "reward_model"
    _check(spec.batch_size >= 1, f"{key}.batch_size", spec.batch_size, "must be >= 1")
    name = spec.name_or_path
    _check(name is None or bool(name.strip()), f"{key}.name_or_path", name, "must not be empty (null switches it off)")
    _check(name is None or not name.startswith("tiny:"), f"{key}.name_or_path", name,
           "tiny presets are causal LMs; give a sequence-classification model")
    _validate_source(key, name or "", spec.template, spec.dtype, spec.max_length)


def _validate_train(cfg: TrainConfig, key: str) -> None:
    _check(cfg.lr > 0, f"{key}.lr", cfg.lr, "must be > 0")
    _check(cfg.epochs >= 1, f"{key}.epochs", cfg.epochs, "must be >= 1")
    _check(cfg.batch_size >= 1, f"{key}.batch_size", cfg.batch_size, "must be >= 1")
    _check(cfg.grad_accum >= 1, f"{key}.grad_accum", cfg.grad_accum, "must be >= 1")
    _check(0 <= cfg.warmup_ratio < 1, f"{key}.warmup_ratio", cfg.warmup_ratio, "must be in [0, 1)")
    _check(cfg.beta > 0, f"{key}.beta", cfg.beta, "must be > 0")
    _check(cfg.gamma >= 0, f"{key}.gamma", cfg.gamma, "must be >= 0")
    _check(cfg.loss_type in ("sigmoid", "ipo", "hinge"), f"{key}.loss_type", cfg.loss_type, "choose sigmoid, ipo or hinge")
    _check(0 <= cfg.label_smoothing <= 0.5, f"{key}.label_smoothing", cfg.label_smoothing, "must be in [0, 0.5]")
    _check(cfg.reference in ("base", "round_start"), f"{key}.reference", cfg.reference, "choose base or round_start")
    _check(cfg.max_steps >= 0, f"{key}.max_steps", cfg.max_steps, "must be >= 0")


def _validate_sampling(cfg: SamplingConfig, key: str) -> None:
    _check(cfg.temperature >= 0, f"{key}.temperature", cfg.temperature, "must be >= 0")
    _check(0 < cfg.top_p <= 1, f"{key}.top_p", cfg.top_p, "must be in (0, 1]")
    _check(cfg.top_k >= 0, f"{key}.top_k", cfg.top_k, "must be >= 0")
    _check(cfg.max_new_tokens >= 1, f"{key}.max_new_tokens", cfg.max_new_tokens, "must be >= 1")
    _check(cfg.batch_size >= 1, f"{key}.batch_size", cfg.batch_size, "must be >= 1")


def validate(config: RunConfig) -> None:
    """Raise ConfigError naming the first bad key."""
    from tasks.config import TaskConfigError

    from orchestrator.algorithms import ALGORITHMS

    _check(config.algorithm in ALGORITHMS, "algorithm", config.algorithm, f"choose one of {ALGORITHMS}")
    _check(config.rounds >= 0, "rounds", config.rounds, "must be >= 0")
    _check(config.eval_size >= 0, "eval_size", config.eval_size, "must be >= 0")
    _check(config.teachers.count >= 1, "teachers.count", config.teachers.count, "need at least one teacher")
    _check(bool(config.teachers.specs), "teachers.specs", config.teachers.specs, "list at least one teacher spec")
    try:
        config.task.validate()
    except TaskConfigError as exc:
        raise ConfigError(str(exc)) from None
    _validate_model(config.student, "student")
    for i, spec in enumerate(config.teachers.specs):
        _validate_model(spec, f"teachers.specs.{i}")
    for f in dataclasses.fields(TrainingConfig):
        _validate_train(getattr(config.train, f.name), f"train.{f.name}")
    _validate_sampling(config.sampling, "sampling")
    _validate_sampling(config.eval_sampling, "eval_sampling")
    _validate_reward_model(config.reward_model)
    for role in ("student", "teacher", "reward_model"):
        res = getattr(config.resources, role)
        _check(res.num_cpus >= 0, f"resources.{role}.num_cpus", res.num_cpus, "must be >= 0")
        _check(res.num_gpus >= 0, f"resources.{role}.num_gpus", res.num_gpus, "must be >= 0")
    _check(config.resources.torch_threads >= 1, "resources.torch_threads", config.resources.torch_threads, "must be >= 1")
    _check(config.wspo.weak_reference in ("sft", "base"), "wspo.weak_reference", config.wspo.weak_reference,
           "choose sft or base")
    _check(config.ray.stage_timeout_s > 0, "ray.stage_timeout_s", config.ray.stage_timeout_s, "must be > 0")
    _check(config.ray.max_failures >= 0, "ray.max_failures", config.ray.max_failures, "must be >= 0")


def preflight(config: RunConfig) -> None:
    """Checks that need this machine, not just the file (run at start, not by load_config).

    Paper configs must load anywhere (tests validate them on CPU), but running one needs what they
    ask for: the vllm extra for `backend: vllm`."""
    from agents.generation import vllm_available

    specs = [("student", config.student)] + [(f"teachers.specs.{i}", s) for i, s in enumerate(config.teachers.specs)]
    for key, spec in specs:
        if spec.backend == "vllm" and not vllm_available():
            raise ConfigError(f"{key}.backend='vllm': vllm is not installed here; pip install '.[vllm]' or set backend=hf")
