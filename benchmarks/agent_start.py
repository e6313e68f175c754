"""What starting agent actors costs: plain Ray workers against forks of a warm zygote (agents.prefork).

Each mode starts its own local Ray, then N agent actors at once (a tiny model each), and waits until
every one has loaded its model. Measured: wall seconds to that point and the CPU seconds the whole
machine spent meanwhile (busy jiffies of all cores in /proc/stat), so the forked figure includes
the zygote's own imports and Ray's per-worker set-up. Run it on an otherwise idle machine.

Usage: python benchmarks/agent_start.py [--agents 8]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import offline_env, write_result  # noqa: E402


def busy_cpu_s() -> float:
    """CPU seconds all cores have spent busy since boot (user, nice, system, irq, softirq, steal)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def start_agents(count: int, prefork: bool, cache_dir: str | None) -> dict:
    import ray

    from agents.actor import AgentActor
    from agents.prefork import command

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, namespace="w2s-bench")
    try:
        time.sleep(5)  # Ray's own start-up settles before the clock starts
        options = {"num_cpus": 0.1, **({"runtime_env": {"py_executable": command()}} if prefork else {})}
        spec = {"name_or_path": "tiny:test", "max_length": 48}
        cpu, start = busy_cpu_s(), time.perf_counter()
        actors = [AgentActor.options(**options).remote(f"agent_{i}", spec, cache_dir) for i in range(count)]
        infos = ray.get([a.info.remote() for a in actors], timeout=600)
        wall, cpu = time.perf_counter() - start, busy_cpu_s() - cpu
        assert all(info["forked"] == prefork for info in infos), "agents did not start the way asked"
        for actor in actors:
            ray.kill(actor)
    finally:
        ray.shutdown()
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cpu_s_per_agent": round(cpu / count, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--cache-dir", default=os.environ.get("W2S_CACHE_DIR"))
    args = parser.parse_args()
    offline_env()
    from agents.tiny import tiny_model_path

    tiny_model_path("test", 0, args.cache_dir)  # built before either clock starts
    plain = start_agents(args.agents, False, args.cache_dir)
    forked = start_agents(args.agents, True, args.cache_dir)
    data = {"agents": args.agents, "model": "tiny:test", "plain": plain, "forked": forked,
            "cpu_ratio": round(plain["cpu_s"] / forked["cpu_s"], 2), "wall_ratio": round(plain["wall_s"] / forked["wall_s"], 2)}
    print(write_result("agent_start", data))
    print(data)


if __name__ == "__main__":
    main()
