"""Shared fixtures: offline mode, a per-session cache of tiny test bases, one Ray cluster."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(1)

TEST_LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "o_proj"]}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """Tiny bases for tests: the shared cache when set (CI builds them once), else a temp dir."""
    return os.environ.get("W2S_CACHE_DIR") or str(tmp_path_factory.mktemp("w2s-cache"))


@pytest.fixture(scope="session")
def tiny_spec():
    def make(preset: str = "test", seed: int = 0, **overrides):
        spec = {"name_or_path": f"tiny:{preset}", "template": "plain", "max_length": 48, "seed": seed,
                "lora": dict(TEST_LORA)}
        spec.update(overrides)
        return spec

    return make


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session (integration tests only)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, namespace="w2s-tests", log_to_driver=False)
    yield ray
    ray.shutdown()


# A whole run at test size: tiny bases that build in seconds, a handful of examples per split.
TINY_RUN = [
    "student.name_or_path=tiny:test-strong", "student.max_length=48",
    'teachers.specs=[{name_or_path: "tiny:test", max_length: 48, seed: 1}]',
    "task.n_labelled=24", "task.n_unlabelled=24", "task.n_test=24",
    "sampling.max_new_tokens=26", "eval_sampling.max_new_tokens=26", "progress=false",
    "resources.student.num_cpus=0.25", "resources.teacher.num_cpus=0.25",
]
