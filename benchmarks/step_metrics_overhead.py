"""What streaming per-step training metrics costs: the same SFT call through two AgentActors of the
default student, one sending every optimizer step's record to a StepLog (as a run does) and one
not, interleaved (order alternating), with batches of 2 so that steps are as short (and the per-step cost as visible)
as the default world makes them.

    python benchmarks/step_metrics_overhead.py     # writes results/step_metrics_overhead.json
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.actor_overhead import workload  # noqa: E402
from benchmarks.common import offline_env, start_ray, write_result  # noqa: E402

REPEATS = 15


def time_in_sink(sft: list[dict], spec: dict, config: dict, step_log) -> float:
    """The direct measure, free of the machine's noise: in this process, the time a train call spends
    inside its step sink (buffering, and the batched sends), as a share of the call (median of 3)."""
    import ray
    import torch

    from agents import Agent
    from agents.actor import StepSender

    torch.set_num_threads(1)
    agent = Agent("direct", spec, seed=0)
    sender = StepSender(step_log, "direct")
    spent = [0.0]

    def timed(record: dict) -> None:
        start = time.perf_counter()
        sender(record)
        spent[0] += time.perf_counter() - start

    agent.step_sink = timed
    shares = []
    for _ in range(3):
        spent[0] = 0.0
        seconds = agent.train(sft, "sft", config)["seconds"]
        start = time.perf_counter()
        sender.flush()
        shares.append((spent[0] + time.perf_counter() - start) / seconds)
    ray.get(step_log.drain.remote())
    return statistics.median(shares)


def main() -> int:
    offline_env()
    import ray

    from agents import AgentActor
    from orchestrator.step_log import StepLog

    start_ray(2)
    _, sft = workload(128)
    spec = {"name_or_path": "tiny:strong", "max_length": 64}
    config = {"lr": 1e-3, "batch_size": 2, "epochs": 1}
    step_log = StepLog.remote()
    actors = {"with step metrics": AgentActor.options(num_cpus=0.5).remote("a", spec, None, 1, 0, None, 0, "normal", 0, step_log),
              "without": AgentActor.options(num_cpus=0.5).remote("b", spec, None, 1, 0, None, 0, "normal", 0, None)}
    for actor in actors.values():  # load and warm up
        ray.get(actor.call.remote("train", sft[:8], "sft", config))
    ray.get(step_log.drain.remote())
    seconds: dict[str, list[float]] = {name: [] for name in actors}
    steps = 0
    for repeat in range(REPEATS):
        order = list(actors.items()) if repeat % 2 == 0 else list(actors.items())[::-1]  # alternate who goes first
        for name, actor in order:  # one at a time: each has the cores to itself
            start = time.perf_counter()
            metrics = ray.get(actor.call.remote("train", sft, "sft", config))[0]
            seconds[name].append(time.perf_counter() - start)
            steps = metrics["steps"]
    records, dropped = ray.get(step_log.drain.remote())
    sink_share = time_in_sink(sft, spec, config, step_log)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    data = {"examples": len(sft), "batch_size": config["batch_size"], "steps_per_call": steps, "repeats": REPEATS,
            "seconds": seconds, "median_s": median, "records_received": len(records), "records_dropped": dropped,
            "records_expected": REPEATS * steps,
            "ms_per_step": {name: 1000 * m / steps for name, m in median.items()},
            # paired: each repeat's two calls ran back to back, so their ratio cancels slow drifts of the machine
            "paired_ratios": [w / o for w, o in zip(seconds["with step metrics"], seconds["without"])],
            "overhead": statistics.median(w / o for w, o in zip(seconds["with step metrics"], seconds["without"])) - 1,
            "call_spread_s": {name: [min(v), max(v)] for name, v in seconds.items()},
            "sink_share_of_train": sink_share}
    print(f"{steps} steps per call; median {median['without']:.2f}s without, {median['with step metrics']:.2f}s with "
          f"step metrics: overhead {100 * data['overhead']:+.1f}%; {len(records)} of {REPEATS * steps} records received; "
          f"time inside the step sink {100 * sink_share:.3f}% of training")
    print(f"wrote {write_result('step_metrics_overhead', data)}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
