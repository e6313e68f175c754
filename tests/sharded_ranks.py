"""Run the same Agent calls on 1 rank in-process and on N FSDP2 ranks (torch.multiprocessing,
gloo on CPU), and return what each computed: losses, adapters, log-probs, answers, checkpoints.

Kept apart from the test module so spawned processes import only this (not pytest's fixtures)."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch

from agents.agent import Agent
from agents.sharding import RankInfo

PROMPTS = ["reverse: abc=", "sort: dcba=", "hack sort: cab=", "reverse: hgfedcba=", "sort: ba=", "reverse: xy=", "sort: cab="]
GOOD = ["cba", "abcd", "I cannot help with that.", "abcdefgh", "ab", "yx", "abc"]
BAD = ["abc", "dcba", "abc", "hgfedcba", "ba", "xy", "cba"]
# 7 examples in batches of 3: the last batch has one example, so a rank of two trains on none of it
TRAIN = {"lr": 5e-3, "batch_size": 3, "epochs": 1, "grad_accum": 1, "max_steps": 2, "max_grad_norm": 1.0}
ADAPTERS = ("negative", "aligned", "ceiling")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def exercise(agent: Agent, out: Path) -> dict:
    """Every objective for 2+ optimizer steps, scoring, sampling, and a checkpoint."""
    sft = [{"prompt": p, "response": g} for p, g in zip(PROMPTS, GOOD)]
    pairs = [{"prompt": p, "chosen": g, "rejected": b} for p, g, b in zip(PROMPTS, GOOD, BAD)]
    result: dict = {"loss": {}, "steps": {}}
    for objective, adapter, examples in (("sft", "default", sft), ("dpo", "negative", pairs),
                                         ("macpo", "ceiling", pairs)):
        init = None if adapter == "default" else "default"
        metrics = agent.train(examples, objective, TRAIN, adapter=adapter, init_from=init)
        result["loss"][objective], result["steps"][objective] = metrics["loss"], metrics["steps"]
    ref = agent.token_logprobs(PROMPTS, GOOD, adapter=None)
    aligned = agent.token_logprobs(PROMPTS, GOOD, adapter="default")
    wspo = [{"prompt": p, "response": g, "weak_aligned_logps": a, "weak_ref_logps": r}
            for p, g, a, r in zip(PROMPTS, GOOD, aligned, ref)]
    metrics = agent.train(wspo, "wspo", dict(TRAIN, shift_scale=0.5), adapter="aligned", init_from="default")
    result["loss"]["wspo"], result["steps"]["wspo"] = metrics["loss"], metrics["steps"]
    result["logprobs"] = agent.logprobs(PROMPTS, GOOD, adapter="aligned")["sum"]
    result["answers"] = agent.generate(PROMPTS, {"max_new_tokens": 6, "temperature": 0.9, "seed": 3})
    result["adapters"] = {a: {k: v.tolist() for k, v in agent.adapter_weights(a).items()} for a in agent.adapters}
    agent.save(str(out / "checkpoint"))
    return result


def run_rank(rank: int, world_size: int, port: int, spec: dict, cache_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    agent = Agent("student", spec, cache_dir=cache_dir, seed=0, load_weights=rank == 0)  # as the pool builds ranks
    if world_size > 1:
        agent.join_group(RankInfo(rank, world_size, "127.0.0.1", port, timeout_s=300), reserved_adapters=ADAPTERS)
    result = exercise(agent, Path(out))
    if rank == 0:
        Path(out, "result.json").write_text(json.dumps(result))


def run(world_size: int, spec: dict, cache_dir: str, out: Path) -> dict:
    """Rank results of one run (world_size 1 runs in this process)."""
    out.mkdir(parents=True, exist_ok=True)
    if world_size == 1:
        run_rank(0, 1, 0, spec, cache_dir, str(out))
    else:
        import torch.multiprocessing as mp

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        mp.spawn(run_rank, args=(world_size, free_port(), spec, cache_dir, str(out)), nprocs=world_size)
    return json.loads(Path(out, "result.json").read_text())
