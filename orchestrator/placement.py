"""Gang placement: reserve every agent's resources at once, or fail fast saying what is missing.

Without this, an agent actor asking for a GPU the cluster does not have waits forever. A placement
group per batch of agents (all agents at setup, one per teacher added later) is either granted
within `ray.placement_timeout_s` or removed, with an error that names what was asked and what the
cluster has. Each agent is then pinned to its own bundle.
"""
from __future__ import annotations

from typing import Any

import ray
from ray.util.placement_group import get_current_placement_group, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from tasks.errors import BadInput


class PlacementError(BadInput, RuntimeError):
    """The cluster cannot fit the requested agents."""


def bundle(resources: dict) -> dict[str, float]:
    """One actor's placement bundle from its `num_cpus` / `num_gpus` and custom node resources."""
    wanted = {"CPU": float(resources.get("num_cpus", 0.0)), "GPU": float(resources.get("num_gpus", 0.0)),
              **{name: float(amount) for name, amount in (resources.get("custom") or {}).items()}}
    wanted = {k: v for k, v in wanted.items() if v > 0}
    return wanted or {"CPU": 0.01}  # a bundle must reserve something


def reserve(agents: dict[str, dict], timeout_s: float, strategy: str = "PACK") -> tuple[Any, dict[str, dict]]:
    """Reserve one bundle per agent; return the group and each agent's resources with its strategy.

    Inside a placement group already (a sweep trial: Tune reserved the whole run's bundles, the
    trial process holding bundle 0), the agents take that group's next bundles instead, and the
    returned group is None (it is not this run's to remove)."""
    current = get_current_placement_group()
    if current is not None:
        return None, _place_in(current, agents)
    names = list(agents)
    bundles = [bundle(agents[n]) for n in names]
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
            f"the cluster has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU{_custom_note(bundles, have)} "
            f"on {len([n for n in ray.nodes() if n.get('Alive')])} nodes, placement strategy {strategy}; "
            f"lower resources.*.num_gpus / num_cpus, relax placement.strategy or add nodes (waited {timeout_s:g}s)"
        )
    placed = {}
    for index, name in enumerate(names):
        placed[name] = dict(agents[name], scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=index))
    return group, placed


def _custom_note(bundles: list[dict[str, float]], have: dict[str, float]) -> str:
    """', node resource x: need 1, have 0' for each custom resource the bundles ask for."""
    names = sorted({k for b in bundles for k in b} - {"CPU", "GPU"})
    return "".join(f", node resource {k}: need {sum(b.get(k, 0.0) for b in bundles):g}, have {have.get(k, 0):g}"
                   for k in names)


_next_bundle: dict[str, int] = {}  # placement group id -> next free bundle (0 is the caller's own)


def _place_in(group: Any, agents: dict[str, dict]) -> dict[str, dict]:
    key = group.id.hex()
    placed = {}
    for name, resources in agents.items():
        index = _next_bundle.get(key, 1)
        if index >= group.bundle_count:
            raise PlacementError(f"agent {name}: the enclosing placement group has {group.bundle_count} bundles and all are "
                                 f"taken; size it for every agent of the run (one bundle each, after the caller's)")
        _next_bundle[key] = index + 1
        placed[name] = dict(resources, scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=index))
    return placed
