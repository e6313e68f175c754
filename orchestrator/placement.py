"""Gang placement: reserve every agent's resources at once, or fail fast saying what is missing.

Without this, an agent actor asking for a GPU the cluster does not have waits forever. A placement
group per batch of agents (all agents at setup, one per teacher added later) is either granted
within `ray.placement_timeout_s` or removed, with an error that names what was asked and what the
cluster has. Each agent is then pinned to its own bundle. A sharded agent (`ranks` > 1) gets a
group of its own, one bundle per rank holding `num_gpus / ranks` and `num_cpus / ranks`, placed by
its `rank_placement` (PACK keeps an agent's ranks on one node where they fit).
"""
from __future__ import annotations

from typing import Any

import ray
from ray.util.placement_group import get_current_placement_group, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from tasks.errors import BadInput


class PlacementError(BadInput, RuntimeError):
    """The cluster cannot fit the requested agents."""


def ranks_of(resources: dict) -> int:
    return max(1, int(resources.get("ranks", 1)))


def rank_resources(resources: dict) -> dict:
    """One actor's resources: the agent's own, or one rank's share of them for a sharded agent
    (`num_cpus`, `num_gpus` and custom node resources divided by `ranks`)."""
    ranks = ranks_of(resources)
    if ranks == 1:
        return dict(resources)
    share = {key: float(resources[key]) / ranks for key in ("num_cpus", "num_gpus") if key in resources}
    # ranks=1: a rank's share is one actor's resources (dividing it again changes nothing)
    return dict(resources, **share, custom={k: float(v) / ranks for k, v in (resources.get("custom") or {}).items()}, ranks=1)


def bundle(resources: dict) -> dict[str, float]:
    """One actor's placement bundle from its `num_cpus` / `num_gpus` and custom node resources
    (a rank's share of them for a sharded agent)."""
    share = rank_resources(resources)
    wanted = {"CPU": float(share.get("num_cpus", 0.0)), "GPU": float(share.get("num_gpus", 0.0)),
              **{name: float(amount) for name, amount in (share.get("custom") or {}).items()}}
    wanted = {k: v for k, v in wanted.items() if v > 0}
    return wanted or {"CPU": 0.01}  # a bundle must reserve something


def reserve(agents: dict[str, dict], timeout_s: float, strategy: str = "PACK") -> tuple[list[Any], dict[str, Any]]:
    """Reserve one bundle per agent (per rank for a sharded agent); return the groups made and each
    agent's resources with its scheduling strategy: a dict, or a list of one per rank for a sharded
    agent.

    Inside a placement group already (a sweep trial: Tune reserved the whole run's bundles, the
    trial process holding bundle 0), the agents take that group's next bundles instead, and no
    group is returned (it is not this run's to remove)."""
    current = get_current_placement_group()
    if current is not None:
        return [], _place_in(current, agents)
    single = {n: r for n, r in agents.items() if ranks_of(r) == 1}
    groups: list[Any] = []
    placed: dict[str, Any] = {}
    try:
        if single:
            group, placed_single = _reserve_group(single, timeout_s, strategy)
            groups.append(group)
            placed.update(placed_single)
        for name, resources in agents.items():
            if ranks_of(resources) > 1:
                placed[name] = _reserve_ranks(name, resources, timeout_s, groups)
    except PlacementError:
        for group in groups:
            remove_placement_group(group)
        raise
    return groups, {n: placed[n] for n in agents}


def _reserve_ranks(name: str, resources: dict, timeout_s: float, groups: list) -> list[dict]:
    """A sharded agent's own group: one bundle per rank, spread by its `rank_placement`."""
    ranks = ranks_of(resources)
    wanted = bundle(resources)
    strategy = resources.get("rank_placement", "PACK")
    group = placement_group([dict(wanted) for _ in range(ranks)], strategy=strategy)
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(group)
        have = ray.cluster_resources()
        raise PlacementError(
            f"the cluster cannot fit agent {name} as {ranks} ranks of {wanted} each (rank_placement {strategy}): it has "
            f"{have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU on {len([n for n in ray.nodes() if n.get('Alive')])} "
            f"nodes; lower its ranks or resources, relax rank_placement or add nodes (waited {timeout_s:g}s)")
    groups.append(group)
    return [dict(rank_resources(resources), scheduling_strategy=PlacementGroupSchedulingStrategy(
        placement_group=group, placement_group_bundle_index=rank)) for rank in range(ranks)]


def _reserve_group(agents: dict[str, dict], timeout_s: float, strategy: str) -> tuple[Any, dict[str, dict]]:
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


def _place_in(group: Any, agents: dict[str, dict]) -> dict[str, Any]:
    key = group.id.hex()
    placed: dict[str, Any] = {}
    for name, resources in agents.items():
        ranks = []
        for _ in range(ranks_of(resources)):
            index = _next_bundle.get(key, 1)
            if index >= group.bundle_count:
                raise PlacementError(f"agent {name}: the enclosing placement group has {group.bundle_count} bundles and all are "
                                     f"taken; size it for every agent of the run (one bundle per agent rank, after the caller's)")
            _next_bundle[key] = index + 1
            ranks.append(dict(rank_resources(resources), scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=index)))
        placed[name] = ranks if len(ranks) > 1 else ranks[0]
    return placed
