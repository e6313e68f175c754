"""FSDP2 for one agent spread over N ranks: process group, sharding, and the few collectives the
Agent needs (full adapter tensors for a checkpoint, sums for metrics, lockstep flags).

A sharded agent is still one agent: every rank holds the same peft model, sharded by
`torch.distributed.fsdp.fully_shard` over its decoder layers and then its root (as verl's and
SkyRL's FSDP2 workers do), and receives the same calls. Training splits each batch over the ranks;
each rank's loss is its share's mean scaled by share / batch x ranks and FSDP averages gradients
over the ranks, so N ranks compute the update one rank computes. Generation and scoring run on every rank in lockstep: the
layers all-gather their weights as they run, so memory stays sharded.

Pitfalls handled here: the device mesh is built for the device actually used (a gloo group with
GPUs visible would move CPU parameters to CUDA, pytorch #132471), and HF `generate` calls the
embedding outside the root's forward, so the root is unsharded around it.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import socket
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch


@dataclass(frozen=True)
class RankInfo:
    """Where one rank stands in its agent's group, and how it reaches rank 0."""

    rank: int
    world_size: int
    master_addr: str
    master_port: int
    local_rank: int = 0
    timeout_s: float = 1800.0  # a collective waiting longer for a peer fails instead of hanging


def rendezvous_address() -> tuple[str, int]:
    """This node's address and a free TCP port: rank 0 reports them, the other ranks join there."""
    try:
        import ray

        address = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - outside Ray (tests, plain torch): loopback
        address = "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return address, sock.getsockname()[1]


def init_distributed(info: RankInfo, device: torch.device):
    """Join the agent's process group (`nccl` on GPUs, `gloo` on CPU) and return a 1-D device mesh
    for `device`'s type. Sets the standard variables (MASTER_ADDR, RANK, ...) for libraries that
    read them."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    os.environ.update(MASTER_ADDR=info.master_addr, MASTER_PORT=str(info.master_port), RANK=str(info.rank),
                      WORLD_SIZE=str(info.world_size), LOCAL_RANK=str(info.local_rank))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method=f"tcp://{info.master_addr}:{info.master_port}",
                                rank=info.rank, world_size=info.world_size,
                                timeout=datetime.timedelta(seconds=info.timeout_s))
    return init_device_mesh(device.type, (info.world_size,))


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of transformer blocks: its longest ModuleList (model.layers, h, ...)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no layer list to shard")
    return max(lists, key=len)


def shard(model: torch.nn.Module, mesh, device: torch.device) -> None:
    """FSDP2 over each decoder layer, then the root. FSDP averages gradients over the ranks (a
    plain sum would need PREMUL_SUM, which gloo lacks), so each rank's loss carries a factor of
    the rank count (Agent._batch_loss). On GPU, bf16 compute with fp32 gradient reduction."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if device.type == "cuda" else MixedPrecisionPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def receive_from_rank0(model: torch.nn.Module, full_state: dict[str, torch.Tensor], device: torch.device,
                       on_meta: bool) -> None:
    """After `shard`: every rank's shards of rank 0's weights, broadcast from rank 0 (its full state
    dict; the others pass {} and hold the model on the meta device until now), then every buffer
    (a rotary embedding's frequencies are not in the state dict). So a 70B student is read from disk
    once per agent, not once per rank, and no rank but rank 0 ever holds the whole model."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if on_meta:
        model.to_empty(device=device)
    set_model_state_dict(model, full_state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    with torch.no_grad():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def full_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each DTensor shard gathered to its full tensor (a collective: every rank calls it, same order)."""
    from torch.distributed.tensor import DTensor

    return {k: (v.full_tensor() if isinstance(v, DTensor) else v) for k, v in state.items()}


def copy_full_into(param: torch.nn.Parameter, full: torch.Tensor) -> None:
    """Write a full tensor into a (possibly sharded) parameter: each rank keeps its own shard."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        if isinstance(param, DTensor):
            param.copy_(distribute_tensor(full.to(param.device, param.dtype), param.device_mesh, param.placements))
        else:
            param.copy_(full.to(param.device, param.dtype))


@contextlib.contextmanager
def root_unsharded(model: torch.nn.Module) -> Iterator[None]:
    """Hold the root's own parameters (embeddings, final norm, LM head) unsharded: HF `generate`
    reaches them outside the root's forward, where FSDP would not gather them."""
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def sum_over_ranks(values: Sequence[float]) -> list[float]:
    """Element-wise sum of a few floats over every rank (float64 on CPU under gloo, the device under nccl)."""
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def rank_share(items: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """This rank's contiguous share of a batch: sizes differ by at most one, lower ranks first."""
    base, extra = divmod(len(items), world_size)
    start = rank * base + min(rank, extra)
    return list(items[start : start + base + (1 if rank < extra else 0)])


def clip_grad_norm(params: Sequence[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip by the norm of the whole (unsharded) gradient: the norm of sharded gradients is
    gathered to a full value first, so every rank scales by the factor one rank would."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total
