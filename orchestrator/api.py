"""Python entry points: connect to Ray and run a whole configuration.

`run(config)` is what `python -m orchestrator.main` does, minus argument parsing: it works the same
from a notebook, a Ray client session or a job submitted with `ray job submit`.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

import ray

from orchestrator.config import RunConfig, preflight
from orchestrator.run_dir import round_line

log = logging.getLogger("orchestrator")


def connect(config: RunConfig, log_to_driver: bool = True) -> bool:
    """Attach to the cluster in `ray.address` / RAY_ADDRESS, else start a local Ray on 127.0.0.1.

    Ray's token authentication stays on: a local Ray started here takes the token from
    RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (Ray writes one there on the first
    local start), and a cluster is reached with the same token. Binding to loopback is not enough:
    Ray's GCS and raylet listen on every interface whatever the node address, so the token is what
    keeps other users of the network out.

    Returns True when this call started Ray (and so should shut it down). A sweep passes
    `log_to_driver=False`: the actors of many trials would interleave in its output."""
    if ray.is_initialized():
        return False
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=config.ray.namespace, log_to_driver=log_to_driver)
        return True
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        log.warning("RAY_AUTH_MODE=%s: this Ray runs without token authentication; anyone who reaches its "
                    "ports can run code as you", os.environ["RAY_AUTH_MODE"])
    ray.init(
        namespace=config.ray.namespace,
        _node_ip_address="127.0.0.1",
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
    ).remote(config.to_dict(), resume_dir)
    ray.get(handle.ready.remote())
    return handle


def follow(handle: Any, ref: Any, show: bool = True, poll_s: float = 0.5) -> Any:
    """Wait for `ref` (a call on the Orchestrator), printing a line per finished round and, with
    `show`, one line per finished stage with its time, plus a tqdm bar for the running stage on a
    terminal only (in `ray job logs` or CI a redrawn bar would leave a line every poll).

    Both are drawn by the driver from `progress()`: output from inside actors arrives through Ray's
    log forwarding, interleaved, without carriage returns, and possibly after a short job's driver
    has exited (so its job logs would miss it)."""
    printer = ProgressPrinter(show=show, bars=sys.stdout.isatty())
    try:
        while True:
            ready, _ = ray.wait([ref], timeout=poll_s)
            try:
                info = ray.get(handle.progress.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - progress is cosmetic; the result below is not
                info = None
            if info:
                printer.update(info)
            if ready:
                result = ray.get(ref)
                # rounds that finished between two polls: a run's summary holds every round
                for record in result.get("rounds", []) if isinstance(result, dict) else []:
                    printer.round(record["round"], round_line(record))
                return result
    finally:
        printer.close()


class ProgressPrinter:
    """Turns successive `progress()` answers into output: every finished round and stage once, and
    with `bars` a live bar for the running stage."""

    STEP_LINE_S = 30.0  # without a terminal: a line on the running stage's steps at most this often

    def __init__(self, show: bool, bars: bool):
        self.show, self.bars = show, bars
        self.bar, self.seen, self.printed_round, self.printed_stage = None, None, -1, 0
        self.step_line_at, self.step_text = float("-inf"), ""

    def update(self, info: dict) -> None:
        if self.show:
            for count, line in info.get("stage_lines", []):
                if count > self.printed_stage:
                    self.printed_stage = count
                    self.write(line)
        last = info.get("last_round")
        if last:
            self.round(last["round"], last["line"])
        stage = info.get("stage_progress") if self.show and self.bars else None
        if stage and stage["stage"] and (stage["count"], stage["stage"]) != self.seen:
            if self.bar is not None:
                self.bar.close()
            self.seen = (stage["count"], stage["stage"])
            self.bar = _new_bar(stage)
        if self.bar is not None and stage and (stage["count"], stage["stage"]) == self.seen:
            self.bar.n = stage["done"]
            if stage.get("steps"):
                self.bar.set_postfix_str(steps_text(stage["steps"]), refresh=False)
            self.bar.refresh()
        running = info.get("stage_progress") or {}
        if self.show and not self.bars and running.get("steps"):  # job logs: a periodic line inside long stages
            text, now = steps_text(running["steps"]), time.monotonic()
            if text != self.step_text and now - self.step_line_at >= self.STEP_LINE_S:
                self.step_line_at, self.step_text = now, text
                self.write(f"  {running.get('stage')}: {text}")

    def round(self, index: int, line: str) -> None:
        if index > self.printed_round:
            self.printed_round = index
            self.write(line)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def steps_text(steps: dict[str, dict]) -> str:
    """'student step 12/40 loss 0.531 eta 30s, teacher_0 ...' for the agents training now."""
    parts = []
    for agent, s in sorted(steps.items()):
        part = f"{agent} step {s['step']}/{s['total']}"
        if isinstance(s.get("loss"), (int, float)):
            part += f" loss {s['loss']:.3f}"
        if s.get("eta_s") is not None and s["step"] < s["total"]:
            part += f" eta {s['eta_s']:.0f}s"
        parts.append(part)
    return ", ".join(parts)


def _new_bar(stage: dict):
    from tqdm import tqdm

    return tqdm(total=stage["total"], desc=f"{stage['stage']:<24}", unit="agent", leave=False)


def _terminate_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(config: RunConfig, resume_dir: str | None = None, sigterm_as_interrupt: bool = False) -> dict:
    """Set up, run every round and return the summary dict (schema in docs/architecture.md).

    `sigterm_as_interrupt` (the CLI sets it): SIGTERM, e.g. a scheduler stopping the job, unwinds
    like Ctrl-C, so Ray shuts down cleanly and the last committed round stays resumable. It is set
    after connecting because `ray.init` installs a SIGTERM handler of its own."""
    preflight(config)  # the storage is configured and probed before the output directory is read
    if resume_dir is None:
        from orchestrator.run_dir import check_fresh_output_dir, ensure_output_dir

        ensure_output_dir(config)
        check_fresh_output_dir(config)  # never into an earlier run's directory
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
