"""Typed settings an Agent needs: which model, which adapter shape, how to sample, how to train.

They live beside the Agent (not in the orchestrator) so that `agents/` can be used and tested on its
own; `orchestrator.config` nests them into the run config that YAML files fill in.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoraConfig:
    """LoRA adapter shape (MACPO paper: r=8, alpha=16 on q,v)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class ModelSpec:
    """One agent's base model.

    `name_or_path` is a hub id, a local directory in save_pretrained layout, or `tiny:<preset>` for a
    built-in tiny model of the CPU testbed (built once, then cached under `cache_dir`).
    """

    name_or_path: str = "tiny:weak"
    template: str = "plain"  # plain | vicuna | alpaca
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda
    device_map: str | None = None  # e.g. "auto" to shard a model too big for one GPU over the actor's GPUs
    trust_remote_code: bool = False
    max_length: int = 1024  # prompt + response tokens fed to training / scoring
    seed: int = 0  # which `tiny:` base (one per preset and seed); the run's `seed` seeds LoRA init
    backend: str = "hf"  # generation backend: hf | vllm
    vllm_gpu_memory_utilization: float = 0.3
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class SamplingConfig:
    """Generation settings. temperature 0 means greedy decoding."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 32
    batch_size: int = 128
    seed: int | None = None


@dataclass
class TrainConfig:
    """One training stage (SFT, DPO, MACPO or WSPO) of one agent."""

    lr: float = 5e-5
    epochs: int = 1
    batch_size: int = 16
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    beta: float = 0.1
    gamma: float = 0.2  # MACPO: weight of the positive's NLL; WSPO: scale of the strong shift
    loss_type: str = "sigmoid"  # sigmoid | ipo | hinge (DPO family)
    label_smoothing: float = 0.0
    reference: str = "base"  # base (adapter disabled, as the paper's code) | round_start
    max_steps: int = 0  # 0 = no cap; else stop after this many optimizer steps


@dataclass
class RewardModelSpec:
    """Which reward model scores the agents' test answers; `name_or_path` None switches it off."""

    name_or_path: str | None = None
    template: str = "plain"  # how the prompt is wrapped before the response is appended
    separator: str = ""  # put between the wrapped prompt and the response (e.g. "\n")
    pair_input: bool = False  # encode (prompt, response) as a text pair, as cross-encoder judges expect
    dtype: str = "float32"
    device: str = "auto"
    trust_remote_code: bool = False
    max_length: int = 1024  # longer texts keep their end (the response), losing the prompt's start
    batch_size: int = 16
    score_index: int = 0  # which output logit is the score (0 for the usual 1-label reward heads)
