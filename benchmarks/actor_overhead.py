"""What the Ray actor wrapper costs: the same generate / train calls through AgentActor and on a
plain Agent in this process, and tokens/s for each.

Usage: python benchmarks/actor_overhead.py [--model tiny:strong] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import offline_env, start_ray, write_result  # noqa: E402


def workload(n: int, seed: int = 0):
    from tasks import TaskConfig, load_task

    task = load_task(TaskConfig(n_labelled=n, n_unlabelled=n, n_test=8), seed)
    prompts = task.q_w2s
    sft = [{"prompt": ex.prompt, "response": ex.chosen} for ex in task.d_w]
    return prompts, sft


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny:strong")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    offline_env()
    import ray
    import torch

    from agents import Agent, AgentActor

    torch.set_num_threads(1)
    spec = {"name_or_path": args.model, "max_length": 64,
            "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}}
    sampling = {"temperature": 0.0, "max_new_tokens": 28, "batch_size": 256}
    train_cfg = {"lr": 1e-4, "epochs": 1, "batch_size": 16}
    prompts, sft = workload(args.examples)
    local = Agent("local", spec)
    start_ray(num_cpus=2)
    actor = AgentActor.options(num_cpus=1).remote("remote", spec, None, 1)
    ray.get(actor.ping.remote())
    # warm up both (first calls allocate)
    local.generate(prompts[:8], sampling)
    ray.get(actor.generate.remote(prompts[:8], sampling))
    results = {}
    for name, local_fn, remote_fn in [
        ("generate", lambda: local.generate(prompts, sampling), lambda: ray.get(actor.generate.remote(prompts, sampling))),
        ("train_sft", lambda: local.train(sft, "sft", train_cfg), lambda: ray.get(actor.train.remote(sft, "sft", train_cfg))),
    ]:
        plain = timed(local_fn, args.repeats)
        wrapped = timed(remote_fn, args.repeats)
        results[name] = {"plain_s": statistics.median(plain), "actor_s": statistics.median(wrapped),
                         "extra_fraction": round(statistics.median(wrapped) / statistics.median(plain) - 1, 4),
                         "plain_all_s": plain, "actor_all_s": wrapped}
    texts = local.generate(prompts, sampling)
    gen_tokens = sum(len(local.tokenizer(t, add_special_tokens=False).input_ids) + 1 for t in texts)
    results["generate"]["tokens_per_s"] = round(gen_tokens / results["generate"]["plain_s"], 1)
    train_metrics = local.train(sft, "sft", train_cfg)
    results["train_sft"]["tokens_per_s"] = round(train_metrics["tokens_per_s"], 1)
    for name, r in results.items():
        print(f"{name:<10} plain {r['plain_s']:.3f}s  actor {r['actor_s']:.3f}s  extra {100 * r['extra_fraction']:+.1f}%  "
              f"({r['tokens_per_s']} tokens/s)")
    path = write_result("actor_overhead", {"model": args.model, "examples": args.examples, "results": results})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
