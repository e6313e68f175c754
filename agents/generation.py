"""Generation backends: transformers `generate` (default, any device) and vLLM (optional, GPU).

The Agent trains with transformers + peft either way; the backend only decides who decodes. With
vLLM the base weights load once into the engine and every trained adapter is served as a LoRA
request (a fresh id per saved version), so training takes effect without reloading the base.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Protocol

import torch

from agents.config import SamplingConfig
from agents.errors import AgentError


class GenerationBackend(Protocol):
    def generate(self, agent, prompt_texts: list[str], sampling: SamplingConfig, adapter: str | None) -> list[str]:
        ...

    def adapter_updated(self, agent, adapter: str) -> None:
        ...

    def release(self) -> None:
        """Free what the backend holds on the GPU before the agent computes with transformers."""
        ...


class HFBackend:
    """Batched `model.generate` with left padding, using the active peft adapter."""

    def generate(self, agent, prompt_texts, sampling, adapter):
        tokenizer, model = agent.tokenizer, agent.model
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        outputs: list[str] = [""] * len(prompt_texts)
        order = sorted(range(len(prompt_texts)), key=lambda i: len(prompt_texts[i]))
        for start in range(0, len(order), sampling.batch_size):
            idx = order[start : start + sampling.batch_size]
            ids = [agent.generation_prompt_ids(prompt_texts[i], sampling.max_new_tokens) for i in idx]
            width = max(len(x) for x in ids)
            input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for row, seq in enumerate(ids):  # left padding: every prompt ends where generation starts
                input_ids[row, width - len(seq) :] = torch.tensor(seq)
                mask[row, width - len(seq) :] = 1
            kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id)
            if sampling.temperature > 0:
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                              top_k=sampling.top_k or None)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if agent.sharded:  # every rank decodes the same batch in lockstep (its layers gather weights per step)
                kwargs["synced_gpus"] = True
            with torch.no_grad(), agent._inference_context(), agent.adapter_context(adapter):
                out = model.generate(input_ids=input_ids.to(agent.device), attention_mask=mask.to(agent.device), **kwargs)
            new_tokens = out[:, width:].cpu()
            for row, i in enumerate(idx):
                outputs[i] = tokenizer.decode(new_tokens[row], skip_special_tokens=True)
        return outputs

    def adapter_updated(self, agent, adapter):
        pass

    def release(self):
        pass


class VLLMBackend:
    """vLLM engine inside the agent's actor; trained adapters are served as LoRA requests.

    Where the engine runs and why is `agents.gpu_layout.vllm_engine_args`. Its context holds the
    longest kept prompt plus the agent's longest answer (`max_new_tokens`); prompts are cut from the
    left to that budget here, as on the HF backend and in training. With `vllm_sleep` the engine
    sleeps (level 1: weights to CPU memory, KV cache freed) whenever the agent computes with
    transformers on the same GPUs, and wakes for the next generation."""

    def __init__(self, model_path: str, spec, max_new_tokens: int = 0):
        from agents.gpu_layout import vllm_available, vllm_engine_args

        if not vllm_available():
            raise RuntimeError(
                "model.backend=vllm but vllm is not installed; install the extra: pip install '.[vllm]'"
            )
        if not torch.cuda.is_available():
            raise RuntimeError("model.backend=vllm needs a CUDA GPU; use backend=hf on CPU")
        from vllm import LLM  # lazy: vllm is an optional extra

        # the actor sees only its own GPUs (Ray sets CUDA_VISIBLE_DEVICES): tensor-parallel over all of them
        self.engine_args = vllm_engine_args(model_path, spec, torch.cuda.device_count(), max_new_tokens)
        self.max_new_tokens = max_new_tokens or spec.max_length // 2
        self._llm = LLM(**self.engine_args)
        self._sleeps = bool(self.engine_args.get("enable_sleep_mode"))
        self._asleep = False
        self._adapter_dirs = Path(tempfile.mkdtemp(prefix="vllm-lora-"))
        self._versions: dict[str, int] = {}
        self._next_id = 1

    def release(self) -> None:
        """Free the engine's GPU memory before the agent trains or scores on the same GPUs."""
        if self._sleeps and not self._asleep:
            self._llm.sleep(level=1)
            self._asleep = True

    def _wake(self) -> None:
        if self._asleep:
            self._llm.wake_up()
            self._asleep = False

    def adapter_updated(self, agent, adapter):
        """Write the adapter's new weights and give it a fresh LoRA id so vLLM loads them (a reused
        id would serve the version vLLM cached: the stale-adapter failure)."""
        path = self._adapter_dirs / f"{adapter}-{self._next_id}"
        agent.save_adapter(adapter, path)
        self._versions[adapter] = self._next_id
        self._next_id += 1

    def generate(self, agent, prompt_texts, sampling, adapter):
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        if sampling.max_new_tokens > self.max_new_tokens:
            raise AgentError(f"{agent.name}: max_new_tokens={sampling.max_new_tokens} exceeds the "
                             f"{self.max_new_tokens} the vLLM engine's context was built for")
        name = adapter or agent.active_adapter
        if name not in self._versions:
            self.adapter_updated(agent, name)
        version = self._versions[name]
        request = LoRARequest(f"{name}-{version}", version, str(self._adapter_dirs / f"{name}-{version}"))
        params = SamplingParams(
            temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or -1,
            max_tokens=sampling.max_new_tokens, seed=sampling.seed,
        )
        prompts = [{"prompt_token_ids": agent.generation_prompt_ids(text, sampling.max_new_tokens)}
                   for text in prompt_texts]
        self._wake()
        results = self._llm.generate(prompts, params, lora_request=request, use_tqdm=False)
        return [r.outputs[0].text for r in results]


def make_backend(name: str, model_path: str, spec, max_new_tokens: int = 0) -> GenerationBackend:
    if name == "hf":
        return HFBackend()
    if name == "vllm":
        return VLLMBackend(model_path, spec, max_new_tokens)
    raise ValueError(f"model.backend={name!r}: choose hf or vllm")
