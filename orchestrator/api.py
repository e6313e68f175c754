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
from orchestrator.run_dir import round_line

log = logging.getLogger("orchestrator")


def connect(config: RunConfig, log_to_driver: bool = True) -> bool:
    """Attach to the cluster in `ray.address` / RAY_ADDRESS, else start a local Ray on 127.0.0.1.

    Returns True when this call started Ray (and so should shut it down). A sweep passes
    `log_to_driver=False`: the actors of many trials would interleave in its output."""
    if ray.is_initialized():
        return False
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=config.ray.namespace, log_to_driver=log_to_driver)
        return True
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # a Ray started here is private to this process and bound to loopback: no token needed
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        namespace=config.ray.namespace,
        include_dashboard=config.ray.include_dashboard,
        dashboard_host=config.ray.dashboard_host,
        num_cpus=os.cpu_count(),
        log_to_driver=log_to_driver,
    )
    return True


def orchestrator_name(run_dir: str) -> str:
    return f"orchestrator:{os.path.basename(os.path.normpath(run_dir))}"


def create_orchestrator(config: RunConfig, resume_dir: str | None = None) -> Any:
    """Start the named Orchestrator actor for `config` and wait until it is up."""
    from orchestrator.actor import Orchestrator
    from orchestrator.run_dir import ensure_output_dir

    run_dir = resume_dir or ensure_output_dir(config)
    handle = Orchestrator.options(
        name=orchestrator_name(run_dir), namespace=config.ray.namespace, num_cpus=config.resources.orchestrator_cpus,
        max_concurrency=4,  # progress()/summary() answer while a round runs
    ).remote(config.to_dict(), resume_dir)
    ray.get(handle.ready.remote())
    return handle


def follow(handle: Any, ref: Any, show: bool = True, poll_s: float = 0.5) -> Any:
    """Wait for `ref` (a call on the Orchestrator), printing a line per finished round and, with
    `show`, drawing a tqdm bar per stage.

    Both are drawn by the driver from `progress()`: output from inside actors arrives through Ray's
    log forwarding, interleaved, without carriage returns, and possibly after a short job's driver
    has exited (so its job logs would miss it)."""
    bar, seen, printed = None, None, -1
    try:
        while True:
            ready, _ = ray.wait([ref], timeout=poll_s)
            try:
                info = ray.get(handle.progress.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - progress is cosmetic; the result below is not
                info = None
            last = info["last_round"] if info else None
            if last and last["round"] > printed:
                printed = last["round"]
                _write_line(last["line"], bar)
            stage = info["stage_progress"] if info and show else None
            if stage and stage["stage"] and (stage["count"], stage["stage"]) != seen:
                if bar is not None:
                    bar.close()
                seen = (stage["count"], stage["stage"])
                bar = _new_bar(stage)
            if bar is not None and stage and (stage["count"], stage["stage"]) == seen:
                bar.n = stage["done"]
                bar.refresh()
            if ready:
                result = ray.get(ref)
                # rounds that finished between two polls: a run's summary holds every round
                for record in result.get("rounds", []) if isinstance(result, dict) else []:
                    if record["round"] > printed:
                        printed = record["round"]
                        _write_line(round_line(record), bar)
                return result
    finally:
        if bar is not None:
            bar.close()


def _new_bar(stage: dict):
    from tqdm import tqdm

    return tqdm(total=stage["total"], desc=f"{stage['stage']:<24}", unit="agent", leave=False)


def _write_line(line: str, bar: Any) -> None:
    if bar is not None:
        bar.write(line)
    else:
        print(line, flush=True)


def _terminate_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(config: RunConfig, resume_dir: str | None = None, sigterm_as_interrupt: bool = False) -> dict:
    """Set up, run every round and return the summary dict (schema in docs/architecture.md).

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
