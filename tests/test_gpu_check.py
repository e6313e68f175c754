"""benchmarks/gpu_check.py stays runnable: its CPU dry run passes every check, and it refuses clearly
where no GPU is (the GPU figures themselves come from running it on a GPU machine)."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_check


def test_dry_run_on_cpu_passes_every_check(tmp_path):
    out = tmp_path / "gpu_check.json"
    rc = gpu_check.main(["--device", "cpu", "--hidden", "128", "--layers", "2", "--pairs", "16", "--new-tokens", "8",
                         "--output", str(out)])
    result = json.loads(out.read_text())
    checks = result["checks"]
    assert set(checks) == {"logps_cpu_float32_vs_cpu_float32", "generation_returns_answers", "training_updates_adapter",
                           "token_budget_scoring", "new_adapter_version_takes_effect", "fsdp2_one_rank_equals_plain_agent"}
    fsdp = checks["fsdp2_one_rank_equals_plain_agent"]
    assert fsdp["backend"] == "gloo" and fsdp["adapter_update"] > 0 and fsdp["adapter_difference"] <= 1e-5
    assert checks["token_budget_scoring"]["finite"] and checks["token_budget_scoring"]["vocab"] == 152064
    assert checks["new_adapter_version_takes_effect"]["answers_changed"] > 0
    # the figures themselves, not only the tool's own verdict
    assert checks["logps_cpu_float32_vs_cpu_float32"]["max_abs_diff"] <= gpu_check.FLOAT32_TOL
    assert checks["generation_returns_answers"]["answers"] == 16
    assert checks["training_updates_adapter"]["max_weight_change"] > 0 and checks["training_updates_adapter"]["losses_finite"]
    assert rc == 0 and result["ok"]
    assert all(v > 0 for k, v in result["throughput"].items() if k.endswith("tokens_per_s"))


def test_bf16_comparison_reports_relative_difference_and_pair_order(tmp_path):
    out = tmp_path / "gpu_check.json"
    gpu_check.main(["--device", "cpu", "--dtype", "bfloat16", "--hidden", "128", "--layers", "2", "--pairs", "16",
                    "--new-tokens", "4", "--output", str(out)])
    check = json.loads(out.read_text())["checks"]["logps_cpu_bfloat16_vs_cpu_float32"]
    assert 0 < check["max_rel_diff"] <= gpu_check.BF16_REL_TOL and check["pair_order_agreement"] >= gpu_check.ORDER_AGREEMENT


def test_a_model_that_differs_from_the_reference_fails_the_check(tmp_path, monkeypatch):
    """The comparison can fail: the model under check (the second agent built; the first is the CPU
    float32 reference) gets its base weights perturbed, and the log-prob check and the tool say FAIL."""
    built = []
    real = gpu_check.make_agent

    def perturbed(*args, **kwargs):
        agent = real(*args, **kwargs)
        built.append(agent)
        if len(built) == 2:
            torch.manual_seed(0)
            with torch.no_grad():
                for name, param in agent.model.named_parameters():
                    if "lora_" not in name:
                        param.add_(0.05 * torch.randn_like(param))
        return agent

    monkeypatch.setattr(gpu_check, "make_agent", perturbed)
    out = tmp_path / "gpu_check.json"
    rc = gpu_check.main(["--device", "cpu", "--hidden", "128", "--layers", "2", "--pairs", "16", "--new-tokens", "4",
                         "--output", str(out)])
    result = json.loads(out.read_text())
    check = result["checks"]["logps_cpu_float32_vs_cpu_float32"]
    assert check["max_abs_diff"] > gpu_check.FLOAT32_TOL and not check["ok"]
    assert rc == 1 and not result["ok"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so(tmp_path, capsys):
    assert gpu_check.main(["--output", str(tmp_path / "x.json")]) == 1
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
