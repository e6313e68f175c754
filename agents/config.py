"""Typed settings an Agent needs: which model, which adapter shape, how to sample, how to train.

They live beside the Agent (not in the orchestrator) so that `agents/` can be used and tested on its
own; `orchestrator.config` nests them into the run config that YAML files fill in.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tasks.errors import BadInput

DTYPES = ("float32", "bfloat16", "float16")
BACKENDS = ("hf", "vllm")
REFERENCES = ("base", "round_start")  # what a DPO-family loss compares the policy against


class AgentConfigError(BadInput, ValueError):
    """A bad agent setting; the message names the key and the value."""


# OS scheduling policies an actor process may ask for (`normal`: the default time-sharing one)
SCHEDULERS = ("normal", "batch", "idle")


@dataclass
class LoraConfig:
    """LoRA adapter shape (MACPO paper: r=8, alpha=16 on q,v)."""

    r: int = 8  # rank of the low-rank update
    alpha: int = 16  # scaling: the update is multiplied by alpha / r
    dropout: float = 0.0  # dropout on the LoRA input during training
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # module names LoRA wraps


@dataclass
class ModelSpec:
    """One agent's base model.

    `name_or_path` is a hub id, a local directory in save_pretrained layout, or `tiny:<preset>` for a
    built-in tiny model of the CPU testbed (built once, then cached under `cache_dir`).
    """

    name_or_path: str = "tiny:weak"
    template: str = "plain"  # plain | vicuna | alpaca | hh | qwen | auto (the tokenizer's own chat template)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda
    device_map: str | None = None  # e.g. "auto" to shard a model too big for one GPU over the actor's GPUs
    trust_remote_code: bool = False  # run the model repository's own code (off: only transformers' classes)
    max_length: int = 1024  # prompt + response tokens fed to training / scoring; generation keeps the prompt in it too
    # padded tokens per scoring forward pass (perplexity, log-probs): long sequences split a batch
    # that short ones share, so scoring memory is bounded by this budget, not by the row count
    score_token_budget: int = 16384
    seed: int = 0  # which `tiny:` base (one per preset and seed); the run's `seed` seeds LoRA init
    backend: str = "hf"  # generation backend: hf | vllm
    vllm_gpu_memory_utilization: float = 0.3  # share of the actor's GPU memory the vLLM engine may take
    # put the engine to sleep (weights to CPU, KV cache freed) while the agent trains and scores with
    # transformers on the same GPUs; it wakes for the next generation
    vllm_sleep: bool = True
    # recompute each decoder layer's activations during backward (transformers' non-reentrant
    # checkpointing): a training batch then holds every layer's input instead of every layer's
    # activations, which is what lets a 70B student train at 1024 tokens on 80 GB GPUs
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)  # the shape of every adapter of this agent


@dataclass
class SamplingConfig:
    """Generation settings. temperature 0 means greedy decoding."""

    temperature: float = 0.0  # 0: greedy (argmax) decoding
    top_p: float = 1.0  # nucleus sampling: keep the smallest token set with this much probability
    top_k: int = 0  # keep only the k most likely tokens (0: no limit)
    max_new_tokens: int = 32  # answer length cap in tokens
    batch_size: int = 128  # prompts generated together
    seed: int | None = None  # sampling seed (the algorithms set one per use, from the run's seed)


@dataclass
class TrainConfig:
    """One training stage (SFT, DPO, MACPO or WSPO) of one agent."""

    lr: float = 5e-5  # peak AdamW learning rate (cosine schedule)
    epochs: int = 1  # passes over the stage's examples
    batch_size: int = 16  # examples (or pairs) per forward pass
    grad_accum: int = 1  # forward passes per optimizer step (effective batch = batch_size x grad_accum)
    warmup_ratio: float = 0.0  # share of the optimizer steps spent warming the learning rate up
    weight_decay: float = 0.0  # AdamW weight decay on the adapter
    max_grad_norm: float = 1.0  # gradient clipping norm
    beta: float = 0.1  # DPO / MACPO temperature: reward = beta * (policy - reference) log-prob
    nll_weight: float = 0.2  # MACPO: weight of the positive's mean token NLL beside the DPO term (the paper's gamma)
    shift_scale: float = 0.1  # WSPO: gamma in (gamma * strong shift - weak shift)^2 (the paper's gamma)
    loss_type: str = "sigmoid"  # sigmoid | ipo | hinge (DPO family)
    label_smoothing: float = 0.0  # conservative DPO: assumed share of flipped preference labels
    reference: str = "base"  # base (adapter disabled, as the paper's code) | round_start
    max_steps: int = 0  # 0 = no cap; else stop after this many optimizer steps


@dataclass
class RewardModelSpec:
    """Which reward model scores the agents' test answers; `name_or_path` None switches it off."""

    name_or_path: str | None = None
    template: str = "plain"  # how the prompt is wrapped before the response is appended (auto: the chat template)
    separator: str = ""  # put between the wrapped prompt and the response (e.g. "\n")
    pair_input: bool = False  # encode (prompt, response) as a text pair, as cross-encoder judges expect
    dtype: str = "float32"
    device: str = "auto"
    trust_remote_code: bool = False
    max_length: int = 1024  # longer texts keep their end (the response), losing the prompt's start
    batch_size: int = 16
    score_index: int = 0  # which output logit is the score (0 for the usual 1-label reward heads)
    negate: bool = False  # the judge scores badness (a cost model, e.g. PKU's beaver cost): report minus it


# ---------------------------------------------------------------- validation (names the bad key)
def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise AgentConfigError(f"{key}={value!r}: {why}")


def validate_source(key: str, name: str, template: str, dtype: str, max_length: int) -> None:
    """What every loaded model needs, agent or reward model: a template, a dtype, a length and, for
    a local path, a directory that exists."""
    from agents.templates import AUTO, TEMPLATES

    _check(template in TEMPLATES or template == AUTO, f"{key}.template", template,
           f"choose one of {sorted([*TEMPLATES, AUTO])}")
    _check(dtype in DTYPES, f"{key}.dtype", dtype, f"choose one of {DTYPES}")
    _check(max_length >= 8, f"{key}.max_length", max_length, "must be at least 8")
    if name.startswith(("/", "./", "../", "~")) and not os.path.isdir(os.path.expanduser(name)):
        raise AgentConfigError(f"{key}.name_or_path={name!r}: directory not found")


def validate_model_spec(spec: ModelSpec, key: str) -> None:
    validate_source(key, spec.name_or_path, spec.template, spec.dtype, spec.max_length)
    _check(spec.backend in BACKENDS, f"{key}.backend", spec.backend, f"choose one of {BACKENDS}")
    _check(spec.score_token_budget >= 1, f"{key}.score_token_budget", spec.score_token_budget, "must be >= 1")
    _check(spec.lora.r >= 1, f"{key}.lora.r", spec.lora.r, "must be >= 1")
    _check(bool(spec.lora.target_modules), f"{key}.lora.target_modules", spec.lora.target_modules, "must not be empty")
    name = spec.name_or_path
    if name.startswith("tiny:"):
        from agents.tiny import PRESETS

        _check(name[5:] in PRESETS, f"{key}.name_or_path", name, f"unknown tiny preset; choose tiny:{{{','.join(PRESETS)}}}")


def validate_reward_model(spec: RewardModelSpec, key: str) -> None:
    _check(spec.batch_size >= 1, f"{key}.batch_size", spec.batch_size, "must be >= 1")
    name = spec.name_or_path
    _check(name is None or bool(name.strip()), f"{key}.name_or_path", name, "must not be empty (null switches it off)")
    _check(name is None or not name.startswith("tiny:"), f"{key}.name_or_path", name,
           "tiny presets are causal LMs; give a sequence-classification model")
    validate_source(key, name or "", spec.template, spec.dtype, spec.max_length)


def validate_train(cfg: TrainConfig, key: str) -> None:
    from losses.names import LOSS_TYPES

    _check(cfg.lr > 0, f"{key}.lr", cfg.lr, "must be > 0")
    _check(cfg.epochs >= 1, f"{key}.epochs", cfg.epochs, "must be >= 1")
    _check(cfg.batch_size >= 1, f"{key}.batch_size", cfg.batch_size, "must be >= 1")
    _check(cfg.grad_accum >= 1, f"{key}.grad_accum", cfg.grad_accum, "must be >= 1")
    _check(0 <= cfg.warmup_ratio < 1, f"{key}.warmup_ratio", cfg.warmup_ratio, "must be in [0, 1)")
    _check(cfg.beta > 0, f"{key}.beta", cfg.beta, "must be > 0")
    _check(cfg.nll_weight >= 0, f"{key}.nll_weight", cfg.nll_weight, "must be >= 0")
    _check(cfg.shift_scale > 0, f"{key}.shift_scale", cfg.shift_scale, "must be > 0")
    _check(cfg.loss_type in LOSS_TYPES, f"{key}.loss_type", cfg.loss_type, f"choose one of {LOSS_TYPES}")
    _check(0 <= cfg.label_smoothing <= 0.5, f"{key}.label_smoothing", cfg.label_smoothing, "must be in [0, 0.5]")
    _check(cfg.reference in REFERENCES, f"{key}.reference", cfg.reference, f"choose one of {REFERENCES}")
    _check(cfg.max_steps >= 0, f"{key}.max_steps", cfg.max_steps, "must be >= 0")


def validate_sampling(cfg: SamplingConfig, key: str) -> None:
    _check(cfg.temperature >= 0, f"{key}.temperature", cfg.temperature, "must be >= 0")
    _check(0 < cfg.top_p <= 1, f"{key}.top_p", cfg.top_p, "must be in (0, 1]")
    _check(cfg.top_k >= 0, f"{key}.top_k", cfg.top_k, "must be >= 0")
    _check(cfg.max_new_tokens >= 1, f"{key}.max_new_tokens", cfg.max_new_tokens, "must be >= 1")
    _check(cfg.batch_size >= 1, f"{key}.batch_size", cfg.batch_size, "must be >= 1")
