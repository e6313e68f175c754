"""Where an agent's model goes on its GPUs: vLLM's engine arguments and a memory estimate.

Pure functions of the agent's spec, its GPUs and the model's `config.json` (no torch, no vllm), so
both are tested on CPU and the orchestrator can refuse a layout that cannot fit before any actor
starts a 70B download.

Memory model, per GPU of one agent (bf16 weights, LoRA, one process sharding layers with
`device_map` over `num_gpus` GPUs, a vLLM engine with tensor parallelism over the same GPUs):

    training weights / n  +  max(activations of one micro-batch, one scoring pass) / n
                          +  vLLM's share x GPU memory                                  <=  GPU memory
    vLLM weights / n  <=  (1 - KV_CACHE_MIN) x vLLM's share x GPU memory

With `vllm_sleep` (the default) the engine frees its share while the agent trains and scores, so
the share and the compute are a max, not a sum. Activations follow Korthikanti et al. 2022 without
recomputation, with the MLP from its real shape (`activation_bytes_per_token`); a DPO-family stage
runs chosen and rejected together. It is an estimate meant to refuse what cannot fit, not to
promise that what passes fits.
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


def prompt_budget(max_length: int, max_new_tokens: int) -> int:
    """Prompt tokens a generation keeps: what training keeps of a prompt before an answer of
    `max_new_tokens` tokens (the prompt is cut from the left, never below half of `max_length`)."""
    return max(max_length // 2, max_length - max_new_tokens)


def generation_context(max_length: int, max_new_tokens: int) -> int:
    """The engine's context (vLLM's `max_model_len`): the longest kept prompt plus the answer, so
    no prompt of any length aborts a batched `generate` and no answer budget is cut."""
    return prompt_budget(max_length, max_new_tokens) + max_new_tokens


def tensor_parallel_size(num_gpus: float) -> int:
    """vLLM tensor-parallel workers of an agent holding `num_gpus` GPUs: one per whole GPU; a share
    of one GPU (<= 1) runs one worker. Tensor parallelism over a fraction of GPUs does not exist."""
    if num_gpus <= 1:
        return 1
    if float(num_gpus) != int(num_gpus):
        raise ValueError(f"num_gpus={num_gpus:g}: a vLLM engine over several GPUs needs a whole number of them")
    return int(num_gpus)


def vllm_engine_args(model_path: str, spec, num_gpus: float, max_new_tokens: int = 0) -> dict:
    """Keyword arguments of `vllm.LLM` for an agent whose actor holds `num_gpus` GPUs and whose
    longest answer is `max_new_tokens` tokens (0: half of `max_length`).

    Placement: the engine runs inside the agent's actor, on the GPUs Ray gave it
    (CUDA_VISIBLE_DEVICES). With tensor parallelism inside a Ray placement group, vLLM would pick
    its Ray executor (vllm/config/parallel.py, `ParallelConfig.__post_init__`), which needs one GPU
    per bundle (vllm/v1/executor/ray_utils.py, `initialize_ray_cluster`: "Placement group bundle
    cannot have more than 1 GPU"); the agent's bundle holds all its GPUs. So an engine over several
    GPUs names the multiprocessing executor, whose workers are the actor's child processes on the
    actor's node and GPUs, which is valid because one agent's GPUs are one bundle on one node.
    `enable_sleep_mode` lets the agent free the engine's memory while it trains and scores with
    transformers on the same GPUs (`VLLMBackend.release`), as verl and OpenRLHF colocate."""
    tp = tensor_parallel_size(num_gpus)
    args = {
        "model": model_path,
        "tensor_parallel_size": tp,
        "enable_lora": True,
        "max_lora_rank": vllm_lora_rank(spec.lora.r),
        "dtype": spec.dtype,
        "max_model_len": generation_context(spec.max_length, max_new_tokens or spec.max_length // 2),
        "gpu_memory_utilization": spec.vllm_gpu_memory_utilization,
        "trust_remote_code": spec.trust_remote_code,
        "enable_sleep_mode": bool(spec.vllm_sleep),
    }
    if tp > 1:
        args["distributed_executor_backend"] = "mp"
    return args


def vllm_executor_backend(engine_args: dict, in_placement_group: bool) -> str:
    """The executor vLLM picks for these arguments (mirrors `ParallelConfig.__post_init__` for
    CUDA, one node): the named one; else `uni` for one worker; `ray` inside a placement group; `mp`."""
    if engine_args.get("distributed_executor_backend"):
        return engine_args["distributed_executor_backend"]
    if engine_args.get("tensor_parallel_size", 1) * engine_args.get("pipeline_parallel_size", 1) <= 1:
        return "uni"
    return "ray" if in_placement_group else "mp"


def engine_placement_problem(engine_args: dict, bundle_gpus: float, shape: "ModelShape | None" = None) -> str | None:
    """Why an engine with these arguments cannot start in an actor whose placement-group bundle
    holds `bundle_gpus` GPUs (None if it can): the constraints vLLM enforces at start, checked
    before any model loads."""
    tp = engine_args.get("tensor_parallel_size", 1)
    backend = vllm_executor_backend(engine_args, in_placement_group=True)
    if backend == "ray" and bundle_gpus > 1:  # vllm/v1/executor/ray_utils.py initialize_ray_cluster
        return f"vLLM's Ray executor needs one GPU per placement-group bundle, the agent's bundle has {bundle_gpus:g}"
    if backend in ("mp", "uni") and tp > max(1, bundle_gpus):  # the workers see only the actor's GPUs
        return f"tensor_parallel_size={tp} exceeds the actor's {bundle_gpus:g} GPU(s)"
    if engine_args.get("max_lora_rank") not in VLLM_LORA_RANKS:  # vllm/config/lora.py LoRAConfig
        return f"max_lora_rank={engine_args.get('max_lora_rank')} is not one of vLLM's {VLLM_LORA_RANKS}"
    if shape is not None and shape.heads % tp:  # vllm/config/model.py verify_with_parallel_config
        return f"{shape.heads} attention heads do not split over tensor_parallel_size={tp}"
    return None


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
    activations_gib: float  # one training micro-batch, per GPU
    scoring_gib: float  # one scoring pass of `score_token_budget` tokens, per GPU
    vllm_share_gib: float  # what the engine reserves while awake, per GPU
    vllm_weights_gib: float  # the engine's copy, per GPU
    gpu_gib: float
    vllm_sleeps: bool = False  # the engine frees its share while the agent trains and scores

    @property
    def total_gib(self) -> float:
        compute = max(self.activations_gib, self.scoring_gib)
        if self.vllm_sleeps:  # awake only while generating, when nothing else computes
            return self.weights_gib + max(compute, self.vllm_share_gib)
        return self.weights_gib + compute + self.vllm_share_gib

    def problem(self) -> str | None:
        """Why it cannot fit, or None."""
        if self.total_gib > self.gpu_gib:
            return (f"needs ~{self.total_gib:.0f} GiB per GPU (weights {self.weights_gib:.0f} + activations "
                    f"{self.activations_gib:.0f} or scoring {self.scoring_gib:.0f}, "
                    f"{'or' if self.vllm_sleeps else '+'} vLLM share {self.vllm_share_gib:.0f}) of {self.gpu_gib:.0f}")
        if self.vllm_weights_gib > (1 - KV_CACHE_MIN) * self.vllm_share_gib:
            return (f"vLLM's share ({self.vllm_share_gib:.0f} GiB per GPU) cannot hold its weights "
                    f"({self.vllm_weights_gib:.0f} GiB per GPU) and a KV cache")
        return None


def activation_bytes_per_token(shape: ModelShape, width: int, checkpointing: bool = False) -> float:
    """Stored activations of one training token over all layers, without recomputation.

    Per layer, in 16-bit units of the hidden size h (Korthikanti et al. 2022): attention 11h and the
    two norms 4h; the MLP from its real shape instead of their 4h-GeLU constant: its input 2h and a
    gated (SwiGLU) MLP's four intermediate-wide tensors (gate, up, activation, product: 8 x
    intermediate), so Llama's 3.5h-wide MLP costs what it costs. Plus the logits: 16-bit, their
    float32 copy and its log-softmax (10 bytes per vocabulary entry).

    With `checkpointing` (spec.gradient_checkpointing) each layer keeps only its input, and one
    layer's activations exist at a time, recomputed in backward."""
    per_layer = (17 * shape.hidden + 8 * shape.intermediate) * width / 2
    if checkpointing:
        return shape.layers * shape.hidden * width + per_layer + 10 * shape.vocab
    return shape.layers * per_layer + 10 * shape.vocab


def scoring_bytes(shape: ModelShape, width: int, tokens: int) -> float:
    """Peak of one scoring pass (no gradients, agents.scoring): a layer's working set for `tokens`
    tokens (hidden states in and out, attention's q/k/v, the MLP's gate and up), the gathered hidden
    states, and one chunk of float32 logits with its log-softmax."""
    from agents.scoring import LOGIT_CHUNK_TOKENS

    working = tokens * (6 * shape.hidden + 2 * shape.intermediate) * width
    return working + min(tokens, LOGIT_CHUNK_TOKENS) * shape.vocab * 8


def estimate_memory(shape: ModelShape, spec, num_gpus: float, gpu_gib: float, sequences: int, ranks: int = 1) -> MemoryEstimate:
    """Per-GPU memory of an agent whose largest training forward pass holds `sequences` sequences of
    `spec.max_length` tokens (a DPO-family batch of b pairs: 2b), whose scoring passes hold
    `spec.score_token_budget` tokens, with a vLLM engine if its backend is vllm.

    `ranks` > 1: FSDP2 ranks, one GPU each (agents.sharding). Per rank: its shard of the weights,
    plus two decoder layers gathered at once (the one computing and the one prefetched) and the
    root's parameters (embeddings, LM head) held whole around generation and scoring; its share of
    a training batch's sequences through every layer; a whole scoring pass (every rank scores every
    batch in lockstep). LoRA weights and their AdamW state are a few MB and not counted."""
    width = BYTES_PER_PARAM.get(spec.dtype, 4)
    checkpointing = bool(getattr(spec, "gradient_checkpointing", False))
    if ranks > 1:
        root = shape.vocab * shape.hidden * (1 if shape.tied_embeddings else 2)  # embeddings and LM head
        layer = (shape.params - root) / shape.layers
        weights = shape.params * width / ranks + (2 * layer + root) * width
        activations = -(-sequences // ranks) * spec.max_length * activation_bytes_per_token(shape, width, checkpointing)
        return MemoryEstimate(weights_gib=weights / GIB, activations_gib=activations / GIB,
                              scoring_gib=scoring_bytes(shape, width, spec.score_token_budget) / GIB,
                              vllm_share_gib=0.0, vllm_weights_gib=0.0, gpu_gib=gpu_gib)
    n = max(1.0, float(num_gpus))
    weights = shape.params * width
    activations = sequences * spec.max_length * activation_bytes_per_token(shape, width, checkpointing)
    scoring = scoring_bytes(shape, width, spec.score_token_budget)
    vllm = spec.backend == "vllm"
    share = spec.vllm_gpu_memory_utilization * gpu_gib if vllm else 0.0
    return MemoryEstimate(weights_gib=weights / n / GIB, activations_gib=activations / n / GIB,
                          scoring_gib=scoring / n / GIB, vllm_share_gib=share,
                          vllm_weights_gib=weights / n / GIB if vllm else 0.0, gpu_gib=gpu_gib,
                          vllm_sleeps=vllm and bool(spec.vllm_sleep))


def visible_gpu_gib() -> float | None:
    """Memory of the first GPU this machine shows (nvidia-smi, so the orchestrator never imports
    torch), or None where none is visible."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.split()
        return float(out[0]) / 1024 if out else None  # MiB
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def vllm_available() -> bool:
    """Whether the vllm extra is installed (found, not imported: vllm pulls CUDA)."""
    return importlib.util.find_spec("vllm") is not None
