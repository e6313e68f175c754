"""Python entry points: connect to Ray and run a whole configuration.

`run(config)` is what `python -m orchestrator.main` does, minus argument parsing: it works the same
from a notebook, a Ray client session or a job submitted with `ray job submit`.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import ray

from orchestrator.config import RunConfig, preflight

log = logging.getLogger("orchestrator")


def connect(config: RunConfig) -> bool:
    """Attach to the cluster in `ray.address` / RAY_ADDRESS, else start a local Ray on 127.0.0.1.

    Returns True when this call started Ray (and so should shut it down)."""
    if ray.is_initialized():
        return False
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=config.ray.namespace, log_to_driver=True)
        return True
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # a Ray started here is private to this process and bound to loopback: no token needed
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        namespace=config.ray.namespace,
        include_dashboard=config.ray.include_dashboard,
        dashboard_host=config.ray.dashboard_host,
        num_cpus=os.cpu_count(),
        log_to_driver=True,
    )
    return True


def orchestrator_name(run_dir: str) -> str:
    return f"orchestrator:{os.path.basename(os.path.normpath(run_dir))}"


def create_orchestrator(config: RunConfig, resume_dir: str | None = None) -> Any:
    """Start the named Orchestrator actor for `config` and wait until it is up."""
    from orchestrator.actor import Orchestrator
    from orchestrator.run_dir import default_output_dir

    if resume_dir is None and not config.output_dir:
        config.output_dir = default_output_dir()
    run_dir = resume_dir or config.output_dir
    handle = Orchestrator.options(
        name=orchestrator_name(run_dir), namespace=config.ray.namespace, num_cpus=config.resources.orchestrator_cpus,
        max_concurrency=4,  # progress()/summary() answer while a round runs
    ).remote(config.to_dict(), resume_dir)
    ray.get(handle.ready.remote())
    return handle


def follow(handle: Any, ref: Any, show: bool = True, poll_s: float = 0.5) -> Any:
    """Wait for `ref` (a call on the Orchestrator) while drawing a tqdm bar per stage on this side.

    Bars are drawn by the driver from `progress()`: output from inside actors would arrive through
    Ray's log forwarding, interleaved and without carriage returns."""
    if not show:
        return ray.get(ref)
    from tqdm import tqdm

    bar, seen = None, None
    try:
        while True:
            ready, _ = ray.wait([ref], timeout=poll_s)
            try:
                info = ray.get(handle.progress.remote(), timeout=10)["stage_progress"]
            except Exception:  # noqa: BLE001 - progress is cosmetic; the result below is not
                info = None
            if info and info["stage"] and (info["count"], info["stage"]) != seen:
                if bar is not None:
                    bar.close()
                seen = (info["count"], info["stage"])
                bar = tqdm(total=info["total"], desc=f"{info['stage']:<24}", unit="agent", leave=False)
            if bar is not None and info and (info["count"], info["stage"]) == seen:
                bar.n = info["done"]
                bar.refresh()
            if ready:
                return ray.get(ref)
    finally:
        if bar is not None:
            bar.close()


def _terminate_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(config: RunConfig, resume_dir: str | None = None, sigterm_as_interrupt: bool = False) -> dict:
    """Set up, run every round and return the summary dict (DESIGN.md schema).

    `sigterm_as_interrupt` (the CLI sets it): SIGTERM, e.g. a scheduler stopping the job, unwinds
    like Ctrl-C, so Ray shuts down cleanly and the last committed round stays resumable. It is set
    after connecting because `ray.init` installs a SIGTERM handler of its own."""
    preflight(config)
    started_ray = connect(config)
    if sigterm_as_interrupt:
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    handle = None
    try:
        handle = create_orchestrator(config, resume_dir)
        start = time.perf_counter()
        summary = follow(handle, handle.run.remote(), show=config.progress)
        summary["total_wall_s"] = round(time.perf_counter() - start, 2)
        return summary
    finally:
        if handle is not None:
            try:
                ray.get(handle.shutdown.remote(), timeout=60)
            except Exception:  # noqa: BLE001 - best effort: actors die with the job anyway
                pass
            ray.kill(handle)
        if started_ray:
            ray.shutdown()
