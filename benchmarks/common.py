"""Shared helpers for benchmark scripts: one local Ray per script, offline env, JSON results."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def offline_env() -> None:
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def start_ray(num_cpus: int | None = None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 namespace="w2s-bench")


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    from orchestrator.sweep_report import machine

    data = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=2))
    return path
