"""The vLLM path's assumptions, executable without a GPU or vllm.

Each constraint vLLM enforces when an engine starts is mirrored here and checked against the
arguments the project builds (agents.gpu_layout) and the way `VLLMBackend` drives the engine (a
recording stand-in for `vllm.LLM`): one GPU per bundle under Ray's executor, a context that holds
the longest kept prompt plus the answer, a LoRA rank vLLM accepts, a fresh LoRA id per adapter
version, prompts cut before the engine sees them, the engine asleep while transformers computes on
the same GPUs. Where vllm is importable, its own `EngineArgs` validates the arguments too.
"""
from __future__ import annotations

import importlib.util
import sys
import types

import pytest

from agents.config import LoraConfig, ModelSpec, SamplingConfig
from agents.gpu_layout import (VLLM_LORA_RANKS, ModelShape, engine_placement_problem, generation_context, prompt_budget,
                               vllm_engine_args, vllm_executor_backend)

HAS_VLLM = importlib.util.find_spec("vllm") is not None
SPEC = ModelSpec(name_or_path="m", dtype="bfloat16", max_length=1024, vllm_gpu_memory_utilization=0.35, lora=LoraConfig(r=4))
LLAMA_70B = ModelShape(hidden=8192, layers=80, intermediate=28672, vocab=32000, heads=64, kv_heads=8, tied_embeddings=False)


def test_engine_arguments_follow_the_agent():
    assert vllm_engine_args("/models/m", SPEC, num_gpus=1, max_new_tokens=512) == {
        "model": "/models/m", "tensor_parallel_size": 1, "enable_lora": True, "max_lora_rank": 8, "dtype": "bfloat16",
        "max_model_len": 1024, "gpu_memory_utilization": 0.35, "trust_remote_code": False, "enable_sleep_mode": True}
    assert vllm_engine_args("m", SPEC, num_gpus=0.5)["tensor_parallel_size"] == 1
    with pytest.raises(ValueError, match="whole number"):
        vllm_engine_args("m", SPEC, num_gpus=1.5)


@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_tensor_parallel_engine_never_uses_the_ray_executor_in_a_multi_gpu_bundle(gpus):
    args = vllm_engine_args("m", SPEC, num_gpus=gpus, max_new_tokens=512)
    assert args["tensor_parallel_size"] == gpus and args["distributed_executor_backend"] == "mp"
    assert engine_placement_problem(args, bundle_gpus=gpus, shape=LLAMA_70B) is None
    # what the first GPU run would have met: vLLM picks Ray inside a placement group, and Ray's
    # executor refuses a bundle of several GPUs (vllm/v1/executor/ray_utils.py)
    plain = {k: v for k, v in args.items() if k != "distributed_executor_backend"}
    assert vllm_executor_backend(plain, in_placement_group=True) == "ray"
    assert "one GPU per placement-group bundle" in engine_placement_problem(plain, bundle_gpus=gpus)


def test_placement_problems_are_named():
    one = vllm_engine_args("m", SPEC, num_gpus=1)
    assert vllm_executor_backend(one, in_placement_group=True) == "uni"
    assert "exceeds the actor's 2 GPU" in engine_placement_problem({**one, "tensor_parallel_size": 4,
                                                                    "distributed_executor_backend": "mp"}, 2)
    assert "max_lora_rank=12" in engine_placement_problem({**one, "max_lora_rank": 12}, 1)
    shape = ModelShape(hidden=1536, layers=28, intermediate=8960, vocab=151936, heads=12, kv_heads=2, tied_embeddings=True)
    assert "12 attention heads do not split over tensor_parallel_size=8" in engine_placement_problem(
        vllm_engine_args("m", SPEC, num_gpus=8), 8, shape)
    assert all(vllm_engine_args("m", ModelSpec(lora=LoraConfig(r=r)), 1)["max_lora_rank"] in VLLM_LORA_RANKS
               for r in (1, 8, 9, 100, 512))


@pytest.mark.parametrize("max_length, new", [(1024, 512), (1024, 32), (1024, 900), (4096, 2048), (64, 64)])
def test_context_holds_the_longest_kept_prompt_and_the_answer(max_length, new):
    spec = ModelSpec(max_length=max_length)
    context = vllm_engine_args("m", spec, 1, max_new_tokens=new)["max_model_len"]
    assert context == generation_context(max_length, new) == prompt_budget(max_length, new) + new
    assert context >= max_length  # training's window always fits
    assert prompt_budget(max_length, new) >= max_length // 2  # as training: never below half the window


# ------------------------------------------------------------------ the backend against a recording engine
class RecordingLLM:
    """Stands in for `vllm.LLM`: records what the backend asks of it."""

    instances: list["RecordingLLM"] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls: list[tuple] = []
        RecordingLLM.instances.append(self)

    def sleep(self, level=1):
        self.calls.append(("sleep", level))

    def wake_up(self):
        self.calls.append(("wake_up",))

    def generate(self, prompts, params, lora_request=None, use_tqdm=True):
        context = self.kwargs["max_model_len"]
        for prompt in prompts:  # what vLLM does with a prompt longer than its context: the whole call fails
            if len(prompt["prompt_token_ids"]) + params.max_tokens > context:
                raise ValueError("prompt longer than max_model_len")
        self.calls.append(("generate", [len(p["prompt_token_ids"]) for p in prompts], lora_request))
        out = types.SimpleNamespace(text="ok")
        return [types.SimpleNamespace(outputs=[out]) for _ in prompts]


@pytest.fixture()
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = RecordingLLM
    vllm.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, lora_id, path: types.SimpleNamespace(name=name, id=lora_id, path=path)
    for name, module in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr("agents.gpu_layout.vllm_available", lambda: True)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    RecordingLLM.instances.clear()
    return RecordingLLM


def test_backend_cuts_prompts_versions_adapters_and_sleeps_around_training(fake_vllm, cache_dir, tiny_spec):
    from agents import Agent

    agent = Agent("s", tiny_spec(backend="vllm", device="cpu", max_length=64), cache_dir=cache_dir, max_new_tokens=16)
    (engine,) = fake_vllm.instances
    assert engine.kwargs["max_model_len"] == generation_context(64, 16) == 64
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=16)
    long_prompt = "reverse: " + "abcdefgh" * 20 + "="
    agent.generate(["sort: ba=", long_prompt], greedy)
    (_, lengths, first), = [c for c in engine.calls if c[0] == "generate"]
    assert max(lengths) == prompt_budget(64, 16) and agent.stats["truncated_generation_prompts"] == 1
    agent.train([{"prompt": "sort: ba=", "response": "ab"}] * 4, "sft", {"lr": 1e-3, "batch_size": 2})
    agent.generate(["sort: ba="], greedy)
    agent.logprobs(["sort: ba="], ["ab"])
    agent.generate(["sort: ba="], greedy)
    kinds = [c[0] for c in engine.calls]
    # asleep while transformers trains and scores, awake for every generation after it
    assert kinds == ["generate", "sleep", "wake_up", "generate", "sleep", "wake_up", "generate"], kinds
    requests = [c[2] for c in engine.calls if c[0] == "generate"]
    assert requests[1].id != first.id and requests[1].path != first.path  # a new version, a fresh id
    assert requests[2].id == requests[1].id  # scoring changed nothing: the same version
    with pytest.raises(Exception, match="max_new_tokens=17 exceeds the 16"):
        agent.generate(["sort: ba="], SamplingConfig(max_new_tokens=17))


def test_hf_backend_cuts_prompts_the_same_way(cache_dir, tiny_spec):
    from agents import Agent

    agent = Agent("s", tiny_spec(max_length=64), cache_dir=cache_dir)
    answers = agent.generate(["reverse: " + "abcdefgh" * 20 + "=", "sort: ba="], SamplingConfig(max_new_tokens=16))
    assert len(answers) == 2 and agent.stats["truncated_generation_prompts"] == 1


@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed (pip install '.[vllm]'): its EngineArgs cannot check ours")
def test_vllm_accepts_the_engine_arguments():
    from vllm.engine.arg_utils import EngineArgs

    for gpus in (1, 8):
        args = vllm_engine_args("facebook/opt-125m", SPEC, gpus, max_new_tokens=512)
        engine_args = EngineArgs(**args)
        assert engine_args.tensor_parallel_size == gpus and engine_args.max_model_len == args["max_model_len"]


# ------------------------------------------------------------------ the paper configs against the contract
PAPER_SHAPES = {  # config.json fields of the paper configs' vLLM models (public model cards)
    "meta-llama/Llama-2-70b-hf": LLAMA_70B,
    "meta-llama/Llama-2-7b-hf": ModelShape(hidden=4096, layers=32, intermediate=11008, vocab=32000, heads=32,
                                           kv_heads=32, tied_embeddings=False),
    "mistralai/Mistral-7B-v0.1": ModelShape(hidden=4096, layers=32, intermediate=14336, vocab=32000, heads=32,
                                            kv_heads=8, tied_embeddings=False),
    "meta-llama/Meta-Llama-3-8B": ModelShape(hidden=4096, layers=32, intermediate=14336, vocab=128256, heads=32,
                                             kv_heads=8, tied_embeddings=False),
}


@pytest.mark.parametrize("name", ["macpo_hh_helpful", "macpo_hh_harmless", "macpo_pku_saferlhf", "wspo_hh_rlhf",
                                  "wspo_ultrafeedback"])
def test_paper_configs_pass_the_engine_contract(name):
    from orchestrator.config import load_config, max_new_tokens

    config = load_config(f"configs/{name}.yaml")
    agents = [(config.student, config.resources.student)] + [(s, config.resources.teacher) for s in config.teachers.specs]
    engines = 0
    for spec, resources in agents:
        if spec.backend != "vllm":
            continue
        engines += 1
        args = vllm_engine_args(spec.name_or_path, spec, resources.num_gpus, max_new_tokens(config))
        assert engine_placement_problem(args, resources.num_gpus, PAPER_SHAPES[spec.name_or_path]) is None
        assert args["max_model_len"] >= prompt_budget(spec.max_length, max_new_tokens(config)) + max_new_tokens(config)
        assert args["enable_sleep_mode"] and args["max_lora_rank"] >= spec.lora.r
    # MACPO: each teacher's engine (the 8-rank FSDP2 student decodes with transformers); WSPO
    # generates only test answers: transformers
    assert engines == (3 if name.startswith("macpo") else 0)
