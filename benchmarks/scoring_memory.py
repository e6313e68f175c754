"""Scoring memory and speed, before and after memory-bounded scoring (agents.scoring).

    python benchmarks/scoring_memory.py            # both parts; writes results/scoring_memory.json

Memory: peak resident memory of scoring 64 x 1024 tokens with a 152k vocabulary (a random 2-layer
Llama of Qwen2's vocabulary, float32, CPU), each measurement in a fresh process. "before" is the
path scoring took until this change (full logits, float32 log-softmax over the whole vocabulary,
`Agent._response_logits` + `losses.token_logps`): at 64 x 1024 it needs about 80 GB, more than this
machine has, so it is measured at 1, 2 and 4 rows of 1024 tokens and its growth per row is
reported with the linear projection to 64 rows, stated as a projection. "after" is measured at 64
rows directly, and at 1, 2 and 4 for the same comparison.

Speed: tokens per second of scoring on the default world (the student `tiny:strong` scoring
perplexities of its test answers, the way MACPO scores), old path against new, interleaved in one
process so that machine load falls on both alike.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import offline_env, write_result  # noqa: E402

VOCAB = 152064  # Qwen2's
WIDTH = 1024
ROWS_BEFORE = (1, 2, 4)
ROWS_AFTER = (1, 2, 4, 64)
SPEED_REPEATS = 5


def build_standin(directory: Path) -> str:
    """A random 2-layer Llama with a 152k vocabulary and a tokenizer that covers it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from agents.tiny import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2 * WIDTH,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def measure_once(model_dir: str, path: str, rows: int) -> dict:
    """In this (fresh) process: load the agent, score `rows` sequences of WIDTH tokens; peak RSS."""
    import torch

    from agents.agent import Agent
    from losses import token_logps

    agent = Agent("probe", {"name_or_path": model_dir, "max_length": WIDTH + 8, "lora": {"r": 8}}, num_threads=1)
    generator = torch.Generator().manual_seed(1)
    encoded = [([agent.tokenizer.bos_token_id] + torch.randint(4, 90, (WIDTH // 2 - 1,), generator=generator).tolist(),
                torch.randint(4, 90, (WIDTH // 2,), generator=generator).tolist()) for _ in range(rows)]
    agent._scored_token_logps([([agent.tokenizer.bos_token_id, 5, 6], [7, 8])])  # the head probe, first-call allocations
    settled = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.no_grad():
        if path == "before":
            pred, labels, mask = agent._response_logits(encoded)
            total = float((token_logps(pred, labels) * mask).sum())
        else:
            logps, mask = agent._scored_token_logps(encoded)
            total = float(logps.sum())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"path": path, "rows": rows, "tokens": rows * WIDTH, "peak_rss_mib": round(peak, 1),
            "scoring_mib": round(peak - settled, 1), "checksum": total}


def measure_memory() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_standin(Path(tmp) / "standin")
        runs = []
        for path, sizes in (("before", ROWS_BEFORE), ("after", ROWS_AFTER)):
            for rows in sizes:
                out = subprocess.run([sys.executable, __file__, "--measure-once", model_dir, path, str(rows)],
                                     capture_output=True, text=True, check=True, timeout=1800)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(runs[-1], flush=True)

    def scoring(path: str, rows: int) -> float:
        return next(r["scoring_mib"] for r in runs if r["path"] == path and r["rows"] == rows)

    before_per_row = (scoring("before", 4) - scoring("before", 1)) / 3
    return {"vocab": VOCAB, "width": WIDTH, "runs": runs, "before_mib_per_row": round(before_per_row, 1),
            "before_projected_64_rows_mib": round(scoring("before", 1) + 63 * before_per_row, 1),
            "after_64_rows_mib": scoring("after", 64),
            "after_largest_mib": max(r["scoring_mib"] for r in runs if r["path"] == "after")}


def measure_speed() -> dict:
    """Default world: the student's perplexity of the test split's gold answers, old vs new path."""
    import torch

    from agents.agent import Agent
    from losses import token_logps
    from orchestrator import load_config
    from tasks import gold_responses, load_task

    config = load_config(None)
    task = load_task(config.task, config.seed)
    prompts = [ex.prompt for ex in task.test] * 4
    answers = gold_responses(task.name, prompts)
    agent = Agent("student", config.student, cache_dir=config.cache_dir, num_threads=1)
    encoded = [agent._encode(p, r) for p, r in zip(prompts, answers)]
    tokens = sum(len(r) for _, r in encoded)

    def before():
        with torch.no_grad():
            for start in range(0, len(encoded), 64):
                pred, labels, mask = agent._response_logits(encoded[start:start + 64])
                (token_logps(pred, labels) * mask).sum(-1)

    def after():
        with torch.no_grad():
            for idx in agent._score_batches(encoded, 64):
                agent._scored_token_logps([encoded[i] for i in idx])

    seconds: dict[str, list[float]] = {"before": [], "after": []}
    before(), after()  # warm-up
    for _ in range(SPEED_REPEATS):
        for name, fn in (("before", before), ("after", after)):
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in seconds.items()}
    return {"sequences": len(encoded), "response_tokens": tokens, "seconds": seconds,
            "tokens_per_s": {name: round(tokens / s, 1) for name, s in best.items()},
            "after_over_before": round(best["before"] / best["after"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure-once", nargs=3, metavar=("MODEL_DIR", "PATH", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    offline_env()
    if args.measure_once:
        model_dir, path, rows = args.measure_once
        print(json.dumps(measure_once(model_dir, path, int(rows))))
        return
    import torch

    torch.set_num_threads(1)
    data = {"memory": measure_memory(), "speed": measure_speed()}
    print(json.dumps({k: v for k, v in data["memory"].items() if k != "runs"}, indent=2))
    print(json.dumps(data["speed"]["tokens_per_s"]), data["speed"]["after_over_before"])
    print(write_result("scoring_memory", data))


if __name__ == "__main__":
    main()
