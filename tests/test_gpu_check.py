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
    assert rc == 0 and result["ok"]
    assert set(result["checks"]) == {"logps_cpu_float32_vs_cpu_float32", "generation_returns_answers",
                                     "training_updates_adapter"}
    assert result["checks"]["training_updates_adapter"]["max_weight_change"] > 0
    assert all(v > 0 for k, v in result["throughput"].items() if k.endswith("tokens_per_s"))


def test_bf16_comparison_reports_relative_difference_and_pair_order(tmp_path):
    out = tmp_path / "gpu_check.json"
    gpu_check.main(["--device", "cpu", "--dtype", "bfloat16", "--hidden", "128", "--layers", "2", "--pairs", "16",
                    "--new-tokens", "4", "--output", str(out)])
    check = json.loads(out.read_text())["checks"]["logps_cpu_bfloat16_vs_cpu_float32"]
    assert 0 < check["max_rel_diff"] <= gpu_check.BF16_REL_TOL and check["pair_order_agreement"] >= gpu_check.ORDER_AGREEMENT


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so(tmp_path, capsys):
    assert gpu_check.main(["--output", str(tmp_path / "x.json")]) == 1
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
