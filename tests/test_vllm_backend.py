"""The vLLM generation backend: runs only where vllm and a CUDA GPU exist; says why otherwise."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from agents import Agent
from orchestrator.config import ConfigError, load_config, preflight

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed: the missing-extra error cannot be shown")
def test_asking_for_vllm_without_it_fails_at_start_with_one_line():
    config = load_config(None, ["student.backend=vllm"])  # the file itself is valid anywhere
    with pytest.raises(ConfigError, match=r"student.backend='vllm': vllm is not installed"):
        preflight(config)


@pytest.mark.skipif(not (HAS_VLLM and torch.cuda.is_available()),
                    reason="needs vllm and a CUDA GPU (pip install '.[vllm]' on a GPU machine)")
def test_vllm_generation_follows_trained_adapter(cache_dir, tiny_spec):
    spec = tiny_spec("test-strong", backend="vllm", dtype="float16")
    hf = Agent("hf", tiny_spec("test-strong"), cache_dir=cache_dir)
    vl = Agent("vl", spec, cache_dir=cache_dir)
    prompts = ["reverse: abc=", "sort: cba="]
    greedy = {"temperature": 0.0, "max_new_tokens": 8}
    assert vl.generate(prompts, greedy) == hf.generate(prompts, greedy)
    examples = [{"prompt": p, "response": "I cannot help with that."} for p in prompts] * 8
    for agent in (hf, vl):
        agent.train(examples, "sft", {"lr": 2e-2, "epochs": 3, "batch_size": 4})
    assert vl.generate(prompts, greedy) == hf.generate(prompts, greedy)
