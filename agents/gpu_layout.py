"""Where an agent's model goes on its GPUs: vLLM's engine arguments and a memory estimate.

Pure functions of the agent's spec, its GPUs and the model's `config.json` (no torch, no vllm), so
both are tested on CPU and the orchestrator can refuse a layout that cannot fit before any actor
starts a 70B download.

Memory model, per GPU of one agent (bf16 weights, LoRA, one process sharding layers with
`device_map` over `num_gpus` GPUs, a vLLM engine with tensor parallelism over the same GPUs):

    training weights / n  +  activations of one micro-batch / n  +  vLLM's share x GPU memory  <=  GPU memory
    vLLM weights / n  <=  (1 - KV_CACHE_MIN) x vLLM's share x GPU memory

Activations follow Korthikanti et al. 2022 without recomputation (34 x hidden bytes per token per
layer in 16-bit) plus float32 logits; a DPO-family stage runs chosen and rejected together. It is an
estimate meant to refuse what cannot fit, not to promise that what passes fits.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2}
KV_CACHE_MIN = 0.1  # share of vLLM's memory left for the KV cache after its weights
GIB = 2**30


def vllm_lora_rank(r: int) -> int:
    """The smallest rank vLLM accepts that holds an adapter of rank `r`."""
    for rank in VLLM_LORA_RANKS:
        if r <= rank:
            return rank
    raise ValueError(f"lora.r={r}: vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]}")


def vllm_engine_args(model_path: str, spec, num_gpus: int) -> dict:
    """Keyword arguments of `vllm.LLM` for an agent whose actor holds `num_gpus` GPUs."""
    return {
        "model": model_path,
        "tensor_parallel_size": max(1, int(num_gpus)),
        "enable_lora": True,
        "max_lora_rank": vllm_lora_rank(spec.lora.r),
        "dtype": spec.dtype,
        "max_model_len": spec.max_length,
        "gpu_memory_utilization": spec.vllm_gpu_memory_utilization,
        "trust_remote_code": spec.trust_remote_code,
    }


@dataclass
class ModelShape:
    """What memory depends on, read from a transformers `config.json`."""

    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied_embeddings: bool

    @classmethod
    def from_config(cls, config: dict) -> "ModelShape":
        text = config.get("text_config", config)  # multimodal wrappers keep the LM under text_config
        hidden = text["hidden_size"]
        heads = text.get("num_attention_heads", 1)
        return cls(hidden=hidden, layers=text["num_hidden_layers"], intermediate=text.get("intermediate_size", 4 * hidden),
                   vocab=text["vocab_size"], heads=heads, kv_heads=text.get("num_key_value_heads", heads),
                   tied_embeddings=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))))

    @property
    def params(self) -> int:
        """Parameters of a Llama-style decoder (gated MLP, grouped-query attention)."""
        head_dim = self.hidden // self.heads
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim
        mlp = 3 * self.hidden * self.intermediate
        per_layer = attention + mlp + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * per_layer + embeddings + self.hidden


def read_model_config(name_or_path: str) -> dict | None:
    """The model's config.json: a local directory's, else the hub cache's or the hub's (a small
    file); None when it cannot be had (offline with nothing cached)."""
    local = Path(name_or_path).expanduser() / "config.json"
    if local.is_file():
        return json.loads(local.read_text())
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(name_or_path, "config.json")).read_text())
    except Exception:  # noqa: BLE001 - offline, gated or unknown: the caller says the check was skipped
        return None


@dataclass
class MemoryEstimate:
    """GiB per GPU of one agent, and whether it fits."""

    weights_gib: float  # training copy, per GPU
    activations_gib: float  # one micro-batch, per GPU
    vllm_share_gib: float  # what the engine reserves, per GPU
    vllm_weights_gib: float  # the engine's copy, per GPU
    gpu_gib: float

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.activations_gib + self.vllm_share_gib

    def problem(self) -> str | None:
        """Why it cannot fit, or None."""
        if self.total_gib > self.gpu_gib:
            return (f"needs ~{self.total_gib:.0f} GiB per GPU (weights {self.weights_gib:.0f} + activations "
                    f"{self.activations_gib:.0f} + vLLM share {self.vllm_share_gib:.0f}) of {self.gpu_gib:.0f}")
        if self.vllm_weights_gib > (1 - KV_CACHE_MIN) * self.vllm_share_gib:
            return (f"vLLM's share ({self.vllm_share_gib:.0f} GiB per GPU) cannot hold its weights "
                    f"({self.vllm_weights_gib:.0f} GiB per GPU) and a KV cache")
        return None


def estimate_memory(shape: ModelShape, spec, num_gpus: float, gpu_gib: float, sequences: int) -> MemoryEstimate:
    """Per-GPU memory of an agent whose largest forward pass holds `sequences` sequences of
    `spec.max_length` tokens (a DPO-family batch of b pairs: 2b), with a vLLM engine if its backend
    is vllm."""
    n = max(1.0, float(num_gpus))
    width = BYTES_PER_PARAM.get(spec.dtype, 4)
    weights = shape.params * width
    tokens = sequences * spec.max_length
    activations = tokens * (34 * shape.hidden * shape.layers * width / 2 + 4 * shape.vocab)
    vllm = spec.backend == "vllm"
    share = spec.vllm_gpu_memory_utilization * gpu_gib if vllm else 0.0
    return MemoryEstimate(weights_gib=weights / n / GIB, activations_gib=activations / n / GIB,
                          vllm_share_gib=share, vllm_weights_gib=weights / n / GIB if vllm else 0.0, gpu_gib=gpu_gib)


def vllm_available() -> bool:
    """Whether the vllm extra is installed (found, not imported: vllm pulls CUDA)."""
    return importlib.util.find_spec("vllm") is not None
