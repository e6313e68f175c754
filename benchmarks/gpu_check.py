"""GPU check of the plain `Agent` (no Ray, no vLLM): bf16 on CUDA generates, scores and trains.

A GPU machine that has torch, transformers, peft and accelerate (and nothing of this project's
cluster stack) can run it. It builds a small random-initialised Llama (character tokenizer, no
download), loads it three times through the Agent - CUDA bf16 (the paper configs' precision),
CUDA float32 and CPU float32 - and checks:

* log-probs of the same (prompt, response) pairs agree: CUDA float32 with CPU float32 tightly, CUDA
  bf16 with CPU float32 within bf16's rounding;
* greedy generation on CUDA returns answers, and its tokens/s;
* one DPO and one MACPO training call on CUDA bf16 update the LoRA adapter (finite loss, weights
  moved, log-probs moved), and their training tokens/s;
* peak GPU memory;
* token-budget scoring: 64 x 1024 tokens scored with a 152k-vocabulary stand-in (Qwen2's vocabulary)
  whose plain scoring path (full float32 logits and log-softmax) needs about 100 GB; its peak GPU
  memory must stay under `SCORING_PEAK_GIB`;
* a new adapter version takes effect in generation: after the adapter is trained towards a fixed
  probe answer, greedy generation changes and the probe's log-prob under the generated answers'
  adapter rises (a backend serving the stale version would not move);
* FSDP2 on one rank (agents.sharding: NCCL on CUDA, gloo on CPU): a 1-rank sharded agent's DPO
  training gives the plain agent's losses and adapter (within float32 summation order, or bf16's
  rounding against the size of the update).

    python benchmarks/gpu_check.py                 # writes benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --device cpu    # the same steps on CPU (a dry run; CI uses it)

Without a CUDA GPU (and without `--device cpu`) it exits 1 with one line saying so.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Tolerances on the mean per-token log-prob of a response (nats per token).
FLOAT32_TOL = 2e-3  # same arithmetic on another device: only summation order differs
BF16_REL_TOL = 0.05  # bf16 keeps 8 bits of mantissa: ~0.4% per op, compounded through every layer
ORDER_AGREEMENT = 0.9  # share of pairs that bf16 and float32 order alike (chosen vs rejected log-prob)
SCORING_PEAK_GIB = 8.0  # token-budget scoring of 64 x 1024 tokens, 152k vocabulary (the plain path: ~100 GB)
BIG_VOCAB = 152064


def build_model(directory: Path, hidden: int, layers: int, seed: int) -> int:
    """A random Llama with the project's character tokenizer, in save_pretrained layout."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig
    from transformers.utils import logging as hf_logging

    from agents.tiny import build_char_tokenizer

    hf_logging.disable_progress_bar()
    tokenizer = build_char_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 4 * 2 // 3,
        num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 128,
        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, initializer_range=0.08,  # peaked (not uniform) next-token distributions
    )
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def make_agent(path: Path, device: str, dtype: str, max_length: int):
    from agents.agent import Agent
    from agents.config import LoraConfig, ModelSpec

    lora = LoraConfig(r=16, alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                      "down_proj"])
    spec = ModelSpec(name_or_path=str(path), template="plain", dtype=dtype, device=device, max_length=max_length,
                     lora=lora)
    return Agent(f"gpu-check-{device}-{dtype}", spec, seed=0)


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def timed(device: str, fn):
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def pairs(n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    import random

    rng = random.Random(seed)
    words = ["add", "sum", "the", "numbers", "please", "refuse", "answer", "count", "letters", "of", "word"]
    prompts = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 10))) + "?" for _ in range(n)]
    chosen = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(n)]
    rejected = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(n)]
    return prompts, chosen, rejected


def max_abs_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def max_rel_diff(a: list[float], ref: list[float]) -> float:
    return max(abs(x - y) / max(abs(y), 1e-6) for x, y in zip(a, ref))


def order_agreement(chosen: list[float], rejected: list[float], ref_chosen: list[float], ref_rejected: list[float]) -> float:
    """Share of pairs both precisions order alike: what DPO margins and MACPO's selection depend on."""
    same = [(c > r) == (rc > rr) for c, r, rc, rr in zip(chosen, rejected, ref_chosen, ref_rejected)]
    return sum(same) / len(same)


def run_check(device: str, dtype: str, hidden: int, layers: int, n_pairs: int, new_tokens: int) -> dict:
    import torch

    from agents.config import SamplingConfig, TrainConfig

    prompts, chosen, rejected = pairs(n_pairs, seed=0)
    with tempfile.TemporaryDirectory(prefix="w2s-gpu-check-") as tmp:
        path = Path(tmp) / "random-llama"
        params = build_model(path, hidden, layers, seed=0)
        reference = make_agent(path, "cpu", "float32", max_length=256)
        ref_logps = reference.logprobs(prompts, chosen, batch_size=32)["mean"]
        ref_rejected = reference.logprobs(prompts, rejected, batch_size=32)["mean"]
        del reference
        checks: dict[str, dict] = {}
        if device == "cuda":
            fp32 = make_agent(path, "cuda", "float32", max_length=256)
            diff = max_abs_diff(fp32.logprobs(prompts, chosen, batch_size=32)["mean"], ref_logps)
            checks["logps_cuda_float32_vs_cpu_float32"] = {"max_abs_diff": diff, "tolerance": FLOAT32_TOL,
                                                           "ok": diff <= FLOAT32_TOL}
            del fp32
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        agent = make_agent(path, device, dtype, max_length=256)
        agent.logprobs(prompts[:64], chosen[:64], batch_size=64)  # warm-up: kernels, allocator
        before, score_s = timed(device, lambda: agent.logprobs(prompts, chosen, batch_size=64))
        rejected_logps = agent.logprobs(prompts, rejected, batch_size=64)["mean"]
        name = f"logps_{device}_{dtype}_vs_cpu_float32"
        if dtype == "bfloat16":
            rel = max_rel_diff(before["mean"], ref_logps)
            agree = order_agreement(before["mean"], rejected_logps, ref_logps, ref_rejected)
            checks[name] = {"max_abs_diff": max_abs_diff(before["mean"], ref_logps), "max_rel_diff": rel,
                            "rel_tolerance": BF16_REL_TOL, "pair_order_agreement": agree,
                            "min_agreement": ORDER_AGREEMENT, "ok": rel <= BF16_REL_TOL and agree >= ORDER_AGREEMENT}
        else:
            diff = max_abs_diff(before["mean"], ref_logps)
            checks[name] = {"max_abs_diff": diff, "tolerance": FLOAT32_TOL, "ok": diff <= FLOAT32_TOL}

        greedy = SamplingConfig(temperature=0.0, max_new_tokens=new_tokens, batch_size=len(prompts))
        agent.generate(prompts[:8], greedy)  # warm-up: kernels, allocator
        answers, gen_s = timed(device, lambda: agent.generate(prompts, greedy))
        generated = sum(len(ids) for ids in agent.token_ids(answers))
        checks["generation_returns_answers"] = {"answers": len(answers), "nonempty": sum(bool(a) for a in answers),
                                               "ok": len(answers) == len(prompts)}

        examples = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, chosen, rejected)]
        start_weights = {k: v.detach().float().clone() for k, v in agent.adapter_weights().items()}
        warm = TrainConfig(lr=1e-3, batch_size=32, max_steps=2)
        agent.train(examples[:64], "dpo", warm, adapter="warm-up", init_from="default")  # kernels of backward
        train = {}
        for objective in ("dpo", "macpo"):
            cfg = TrainConfig(lr=1e-3, epochs=1, batch_size=32, beta=0.1, nll_weight=1.0)
            metrics, seconds = timed(device, lambda: agent.train(examples, objective, cfg))
            train[objective] = {"tokens_per_s": metrics["tokens_per_s"], "seconds": seconds, "steps": metrics["steps"],
                                "loss": metrics.get("loss")}
        moved = max(float((v.detach().float() - start_weights[k]).abs().max())
                    for k, v in agent.adapter_weights().items())
        after = agent.logprobs(prompts, chosen, batch_size=64)["mean"]
        losses_finite = all(t["loss"] is not None and t["loss"] == t["loss"] and abs(t["loss"]) != float("inf")
                            for t in train.values())
        checks["training_updates_adapter"] = {"max_weight_change": moved, "logp_change": max_abs_diff(after, before["mean"]),
                                              "losses_finite": losses_finite, "ok": moved > 0 and losses_finite}
        checks["token_budget_scoring"] = scoring_check(Path(tmp) / "big-vocab", device, dtype)
        checks["new_adapter_version_takes_effect"] = adapter_version_check(agent, prompts[:16], new_tokens)
        agent = None  # its GPU memory freed before the FSDP2 check loads two more agents
        checks["fsdp2_one_rank_equals_plain_agent"] = fsdp_check(path, device, dtype, prompts[:16], chosen[:16], rejected[:16])
        score_tokens = sum(before["n_tokens"])
        return {
            "device": device, "dtype": dtype, "params": params, "hidden": hidden, "layers": layers, "pairs": n_pairs,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
            "checks": checks, "ok": all(c["ok"] for c in checks.values()),
            "throughput": {
                "generate_tokens_per_s": generated / gen_s, "generate_s": gen_s, "generated_tokens": generated,
                "score_response_tokens_per_s": score_tokens / score_s,
                "train_dpo_tokens_per_s": train["dpo"]["tokens_per_s"],
                "train_macpo_tokens_per_s": train["macpo"]["tokens_per_s"],
            },
            "train": train,
            "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        }


def scoring_check(directory: Path, device: str, dtype: str) -> dict:
    """Score 64 sequences of 1024 tokens with a 152k-vocabulary model; peak GPU memory of the call.
    (A CPU dry run scores 2 x 128 tokens: the path, not the figure.)"""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from agents.tiny import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=BIG_VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    rows, width = (64, 1024) if device == "cuda" else (2, 128)
    agent = make_agent(directory, device, dtype, max_length=width + 8)
    generator = torch.Generator().manual_seed(1)
    encoded = [([tokenizer.bos_token_id] + torch.randint(4, 90, (width // 2 - 1,), generator=generator).tolist(),
                torch.randint(4, 90, (width // 2,), generator=generator).tolist()) for _ in range(rows)]
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    with torch.no_grad():
        finite = True
        for idx in agent._score_batches(encoded, rows):
            logps, _ = agent._scored_token_logps([encoded[i] for i in idx])
            finite = finite and bool(torch.isfinite(logps).all())
    peak = (torch.cuda.max_memory_allocated() - start) / 2**30 if device == "cuda" else None
    del agent
    return {"tokens": rows * width, "vocab": BIG_VOCAB, "peak_scoring_gib": peak, "limit_gib": SCORING_PEAK_GIB,
            "finite": finite, "ok": finite and (peak is None or peak <= SCORING_PEAK_GIB)}


def adapter_version_check(agent, prompts: list[str], new_tokens: int) -> dict:
    """Train the adapter towards one probe answer; generation must follow the new version."""
    from agents.config import SamplingConfig, TrainConfig

    probe = "zzzz yes"
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=min(new_tokens, 16), batch_size=len(prompts))
    agent.copy_adapter("default", "probe")
    first = agent.generate(prompts, greedy, adapter="probe")
    agent.train([{"prompt": p, "response": probe} for p in prompts] * 4, "sft",
                TrainConfig(lr=5e-3, epochs=3, batch_size=16), adapter="probe")
    second = agent.generate(prompts, greedy, adapter="probe")
    old = agent.logprobs(prompts, first, adapter="probe")["mean"]
    new = agent.logprobs(prompts, second, adapter="probe")["mean"]
    changed = sum(a != b for a, b in zip(first, second))
    gain = sum(n - o for n, o in zip(new, old)) / len(prompts)
    return {"answers_changed": changed, "mean_logp_gain_of_new_answers": gain,
            "ok": changed > 0 and gain > 0}


def fsdp_check(path: Path, device: str, dtype: str, prompts: list[str], chosen: list[str], rejected: list[str]) -> dict:
    """The same DPO call on the plain agent and on a 1-rank FSDP2 agent of the same model."""
    import socket

    import torch

    from agents.config import TrainConfig
    from agents.sharding import RankInfo

    examples = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, chosen, rejected)]
    config = TrainConfig(lr=1e-3, epochs=1, batch_size=4, max_steps=3)
    plain = make_agent(path, device, dtype, max_length=256)
    start = plain.adapter_weights()
    plain_loss = plain.train(examples, "dpo", config)["loss"]
    plain_weights = plain.adapter_weights()
    del plain
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sharded = make_agent(path, device, dtype, max_length=256)
    sharded.join_group(RankInfo(0, 1, "127.0.0.1", port, timeout_s=300))
    backend = torch.distributed.get_backend()
    sharded_loss = sharded.train(examples, "dpo", config)["loss"]
    sharded_weights = sharded.adapter_weights()
    torch.distributed.destroy_process_group()
    update = max(float((plain_weights[k].float() - start[k].float()).abs().max()) for k in start)
    difference = max(float((plain_weights[k].float() - sharded_weights[k].float()).abs().max()) for k in start)
    loss_difference = abs(plain_loss - sharded_loss)
    exact = dtype == "float32"
    ok = (loss_difference <= (1e-5 if exact else BF16_REL_TOL * abs(plain_loss))
          and difference <= (1e-5 if exact else 0.1 * update) and update > 0)
    return {"backend": backend, "loss_plain": plain_loss, "loss_fsdp2": sharded_loss, "loss_difference": loss_difference,
            "adapter_update": update, "adapter_difference": difference, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine; run it where one is (or --device cpu for a dry run)",
              file=sys.stderr)
        return 1
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    result = run_check(args.device, dtype, args.hidden, args.layers, args.pairs, args.new_tokens)
    from orchestrator.sweep_report import machine  # torch and the standard library only: no Ray needed

    result.update(benchmark="gpu_check", measured_at=time.strftime("%Y-%m-%d %H:%M:%S"), machine=machine())
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    for name, check in result["checks"].items():
        print(f"{'ok  ' if check['ok'] else 'FAIL'} {name}: {json.dumps({k: v for k, v in check.items() if k != 'ok'})}")
    print("throughput:", json.dumps({k: round(v, 1) for k, v in result["throughput"].items()}))
    print(f"wrote {args.output}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
