"""Gang placement: reserve every agent's resources at once, or fail fast saying what is missing.

Without this, an agent actor asking for a GPU the cluster does not have waits forever. A placement
group per batch of agents (all agents at setup, one per teacher added later) is either granted
within `ray.placement_timeout_s` or removed, with an error that names what was asked and what the
cluster has. Each agent is then pinned to its own bundle.
"""
from __future__ import annotations

from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


class PlacementError(RuntimeError):
    """The cluster cannot fit the requested agents."""


def _bundle(resources: dict) -> dict[str, float]:
    bundle = {"CPU": float(resources.get("num_cpus", 0.0)), "GPU": float(resources.get("num_gpus", 0.0))}
    bundle = {k: v for k, v in bundle.items() if v > 0}
    return bundle or {"CPU": 0.01}  # a bundle must reserve something


def reserve(agents: dict[str, dict], timeout_s: float, strategy: str = "PACK") -> tuple[Any, dict[str, dict]]:
    """Reserve one bundle per agent; return the group and each agent's resources with its strategy."""
    names = list(agents)
    bundles = [_bundle(agents[n]) for n in names]
    group = placement_group(bundles, strategy=strategy)
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(group)
        need_cpu = sum(b.get("CPU", 0.0) for b in bundles)
        need_gpu = sum(b.get("GPU", 0.0) for b in bundles)
        have = ray.cluster_resources()
        raise PlacementError(
            f"the cluster cannot fit {len(names)} agents ({', '.join(names)}): they need {need_cpu:g} CPU and "
            f"{need_gpu:g} GPU in total (largest single agent {max(bundles, key=lambda b: (b.get('GPU', 0), b.get('CPU', 0)))}), "
            f"the cluster has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU; "
            f"lower resources.*.num_gpus / num_cpus or add nodes (waited {timeout_s:g}s)"
        )
    placed = {}
    for index, name in enumerate(names):
        placed[name] = dict(agents[name], scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=index))
    return group, placed
