"""The shipped tiny bases: pinned bytes, used by every config and test, drift caught, seeds honest."""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents import tiny
from orchestrator import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_every_shipped_base_matches_its_pinned_sha256():
    on_disk = {p.name for p in tiny.BASES_DIR.iterdir() if p.is_dir()}
    assert on_disk == set(tiny.SHIPPED_SHA256), "a base directory without a pinned sha256, or a pin without files"
    for name, digest in tiny.SHIPPED_SHA256.items():
        assert tiny.directory_sha256(tiny.BASES_DIR / name) == digest, name


@pytest.mark.parametrize("config", ["default.yaml", "wspo_default.yaml"])
def test_cpu_configs_use_only_shipped_bases(config):
    cfg = load_config(ROOT / "configs" / config, [])
    for spec in [cfg.student, *cfg.teachers.resolved(), *load_config(ROOT / "configs" / config, ["teachers.count=6"]).teachers.resolved()]:
        preset = spec.name_or_path.split(":", 1)[1]
        assert tiny.base_dir_name(preset, spec.seed) in tiny.SHIPPED_SHA256, spec


def test_test_bases_are_shipped():
    from tests.conftest import TINY_RUN

    cfg = load_config(None, [*TINY_RUN, "teachers.count=3"])
    for spec in [cfg.student, *cfg.teachers.resolved()]:
        assert tiny.base_dir_name(spec.name_or_path.split(":", 1)[1], spec.seed) in tiny.SHIPPED_SHA256
    assert tiny.tiny_model_path("test", 0) == tiny.BASES_DIR / "tiny-test-seed0"


def test_a_changed_byte_is_refused_not_loaded(tmp_path, monkeypatch):
    copy = tmp_path / "bases"
    shutil.copytree(tiny.BASES_DIR / "tiny-test-seed0", copy / "tiny-test-seed0")
    weights = copy / "tiny-test-seed0" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(tiny, "BASES_DIR", copy)
    tiny.verified_shipped_base.cache_clear()
    try:
        with pytest.raises(tiny.ShippedBaseError, match="tiny-test-seed0 does not match its pinned sha256"):
            tiny.tiny_model_path("test", 0)
    finally:
        tiny.verified_shipped_base.cache_clear()


def test_verify_command():
    out = subprocess.run([sys.executable, "-m", "agents.tiny", "--verify"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    n = len(tiny.SHIPPED_SHA256)
    assert f"{n} of {n} shipped bases match" in out.stdout


def test_unshipped_base_is_built_here_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="agents.tiny"):
        path = tiny.tiny_model_path("test", 99, tmp_path)
    assert path.parent == tmp_path and (path / "model.safetensors").is_file()
    assert "reproduce only on this machine" in caplog.text


def test_run_seed_varies_lora_init_not_the_base(tiny_spec):
    from agents import Agent

    a0, a0_again, a1 = (Agent("student", tiny_spec(), seed=s) for s in (0, 0, 1))
    base = {k: v for k, v in a0.model.named_parameters() if "lora_" not in k}
    other_base = dict(a1.model.named_parameters())
    assert all(torch.equal(v, other_base[k]) for k, v in base.items())  # same base for every run seed
    w0, w0_again, w1 = (a.adapter_weights() for a in (a0, a0_again, a1))
    assert all(torch.equal(w0[k], w0_again[k]) for k in w0)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if "lora_A" in k)
