"""What streaming per-step training metrics costs: the same SFT call through two AgentActors of the
default student, one sending every optimizer step's record to a StepLog (as a run does) and one
not, interleaved, with batches of 2 so that steps are as short (and the per-step cost as visible)
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

REPEATS = 7


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
    for _ in range(REPEATS):
        for name, actor in actors.items():  # one at a time: each has the cores to itself
            start = time.perf_counter()
            metrics = ray.get(actor.call.remote("train", sft, "sft", config))[0]
            seconds[name].append(time.perf_counter() - start)
            steps = metrics["steps"]
    records, dropped = ray.get(step_log.drain.remote())
    median = {name: statistics.median(values) for name, values in seconds.items()}
    data = {"examples": len(sft), "batch_size": config["batch_size"], "steps_per_call": steps, "repeats": REPEATS,
            "seconds": seconds, "median_s": median, "records_received": len(records), "records_dropped": dropped,
            "records_expected": REPEATS * steps,
            "ms_per_step": {name: 1000 * m / steps for name, m in median.items()},
            "overhead": median["with step metrics"] / median["without"] - 1}
    print(f"{steps} steps per call; median {median['without']:.2f}s without, {median['with step metrics']:.2f}s with "
          f"step metrics: overhead {100 * data['overhead']:+.1f}%; {len(records)} of {REPEATS * steps} records received")
    print(f"wrote {write_result('step_metrics_overhead', data)}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
