"""The GPU layout, pure and on CPU: vLLM's engine arguments and the memory preflight that refuses a
paper config whose models cannot fit their GPUs (from config.json stand-ins of the real models)."""
from __future__ import annotations

import json

import pytest

from agents.gpu_layout import ModelShape, vllm_lora_rank
from orchestrator.config import ConfigError, check_gpu_memory, load_config

# config.json fields of the paper's models (public model cards)
SHAPES = {
    "llama2-70b": {"hidden_size": 8192, "num_hidden_layers": 80, "intermediate_size": 28672, "vocab_size": 32000,
                   "num_attention_heads": 64, "num_key_value_heads": 8},
    "llama2-7b": {"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 11008, "vocab_size": 32000,
                  "num_attention_heads": 32, "num_key_value_heads": 32},
    "mistral-7b": {"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336, "vocab_size": 32000,
                   "num_attention_heads": 32, "num_key_value_heads": 8},
    "llama3-8b": {"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336, "vocab_size": 128256,
                  "num_attention_heads": 32, "num_key_value_heads": 8},
}


def test_parameter_counts_match_the_model_cards():
    assert ModelShape.from_config(SHAPES["llama2-70b"]).params / 1e9 == pytest.approx(69.0, abs=0.1)
    assert ModelShape.from_config(SHAPES["llama2-7b"]).params / 1e9 == pytest.approx(6.74, abs=0.01)
    assert ModelShape.from_config(SHAPES["llama3-8b"]).params / 1e9 == pytest.approx(8.03, abs=0.01)


@pytest.mark.parametrize("r, rank", [(1, 8), (4, 8), (8, 8), (9, 16), (64, 64), (300, 320)])
def test_lora_rank_rounds_up_to_one_vllm_accepts(r, rank):
    assert vllm_lora_rank(r) == rank


@pytest.fixture()
def stand_ins(tmp_path):
    """Directories holding only the paper models' config.json (no weights: the check reads shapes)."""
    out = {}
    for name, shape in SHAPES.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(shape))
        out[name] = str(tmp_path / name)
    return out


def paper_config(name, stand_ins, *overrides):
    teachers = ["llama2-7b", "mistral-7b", "llama3-8b"]
    return load_config(f"configs/{name}.yaml", [f"student.name_or_path={stand_ins['llama2-70b']}"] + [
        f"teachers.specs.{i}.name_or_path={stand_ins[t]}" for i, t in enumerate(teachers)] + list(overrides))


@pytest.mark.parametrize("name", ["macpo_hh_helpful", "macpo_hh_harmless", "macpo_pku_saferlhf"])
def test_paper_layouts_fit_and_the_old_one_is_refused(name, stand_ins):
    assert check_gpu_memory(paper_config(name, stand_ins)) == []
    # an older layout: the 70B student as one actor on 4 GPUs (device_map), its training copy beside vLLM's
    old = ["resources.student.ranks=1", "resources.student.num_gpus=4", "student.device_map=auto", "student.backend=vllm",
           "student.vllm_gpu_memory_utilization=0.35", "student.gradient_checkpointing=false"]
    with pytest.raises(ConfigError, match=r"^student: .*llama2-70b on 4 x 80 GiB GPUs \(resources.student[;)]"):
        check_gpu_memory(paper_config(name, stand_ins, *old))
    # FSDP2 ranks too few for the weights: the error names the rank count
    with pytest.raises(ConfigError, match=r"^student: .*llama2-70b on 2 x 80 GiB GPUs as 2 FSDP ranks \(resources.student"):
        check_gpu_memory(paper_config(name, stand_ins, "resources.student.num_gpus=2", "resources.student.ranks=2"))
    # whole batches of 16 pairs in one forward pass cannot fit a 7B teacher's GPU
    with pytest.raises(ConfigError, match=r"^teachers.specs.0: .*llama2-7b on 1 x 80 GiB GPUs .*activations"):
        check_gpu_memory(paper_config(name, stand_ins, "train.teacher_macpo.batch_size=16"))


def test_unreachable_config_json_skips_with_a_name(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_config("configs/macpo_pku_saferlhf.yaml")  # hub ids, nothing cached offline
    assert check_gpu_memory(config) == ["student", "teachers.specs.0", "teachers.specs.1", "teachers.specs.2"]
    assert check_gpu_memory(load_config(None)) == []  # CPU runs (no GPUs) are not checked
