"""The plain `Agent` against TRL on the same work: DPO training, greedy generation, peak memory.

Both sides get the same tiny base (`tiny:strong`, the shipped directory the Agent resolves), the same
LoRA (r, alpha, dropout, target modules) with the same initial weights, float32, one torch thread
each (`torch.set_num_threads(1)` and OMP/MKL_NUM_THREADS=1 in every subprocess), the same preference
pairs of the synthetic task (`D_w`: prompt / chosen / rejected), batch size, max length, beta,
learning rate, cosine schedule, AdamW and gradient clipping, and the same number of optimizer steps
over the very same batches in the same order (TRL's sampler is sequential over the pairs laid out in
the Agent's batch order). Every part runs in its own subprocess; each training side runs in
`--repeats` processes, interleaved (the order rotates every repeat), each timing `--timed-runs`
calls, and the median over all timed calls is reported (the best call beside it), so load from other
jobs on the machine falls on every side alike.

  train tokens_per_s   input tokens of the policy forward (prompt+chosen and prompt+rejected, padding
                       not counted; identical on every side, checked by a hash of the batches) per
                       second of one training call on a warm process (`Agent.train` vs
                       `DPOTrainer.train`, the trainer built untimed beforehand; the first, cold call
                       of each process is the warm-up and the memory measurement). Both calls
                       include one reference forward per batch: the Agent precomputes them at the
                       start of the call, TRL per step.
  agent_dpo            `Agent.train(..., "dpo")`, reference = the base with the adapter disabled
  agent_macpo          `Agent.train(..., "macpo")` (DPO + nll_weight x the chosen NLL); no TRL peer
  trl_ref_none         `trl.DPOTrainer(model, ref_model=None, peft_config=...)`: reference = the base
                       with the adapter disabled (TRL's PEFT path), as the Agent's
  trl_ref_model        `trl.DPOTrainer(model, ref_model=<a second copy of the base>, peft_config=...)`
  ratio                agent / TRL tokens/s (above 1: the Agent is faster)
  generate             `Agent.generate` (greedy) vs `model.generate` on the Agent's own PEFT model with
                       the same prompts, batch and max_new_tokens (text in, text out on both sides);
                       outputs must be identical; generated tokens (up to EOS) per second
  peak_rss_mib         ru_maxrss of the process after one cold training call (imports, model(s),
                       trainer and training); also RSS after imports and after loading

Checks (in the JSON under `checks`, printed): identical token counts and batches on every side, the
loss falls on every side, and the Agent's and TRL's per-step DPO losses agree (same initial adapter,
same batches, same schedule: they should, up to float summation order).

TRL is a benchmark-only dependency (`pip install trl`), imported only inside the TRL subprocesses.

Usage: python benchmarks/peer_trl.py [--steps 32] [--batch-size 16] [--repeats 3] [--timed-runs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import offline_env, write_result  # noqa: E402

MODEL = "tiny:strong"
AGENT_NAME = "bench"
RUN_SEED = 0
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
TRAIN_SIDES = ("agent", "trl_ref_none", "trl_ref_model")
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "TOKENIZERS_PARALLELISM": "false"}


# ---------------------------------------------------------------- shared by the workers
def one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def batches_digest(batches: list[list[list[int]]]) -> str:
    """sha256 of the policy-forward sequences, batch by batch, in order (padding stripped)."""
    import hashlib

    return hashlib.sha256(json.dumps(batches).encode()).hexdigest()


def digests(batches: list[list[list[int]]]) -> dict:
    """The ordered digest, and one of the batches as a set (calls with another batch order do the same work)."""
    return {"batches_sha256": batches_digest(batches), "batch_set_sha256": batches_digest(sorted(batches))}


def load_settings(workdir: Path) -> dict:
    return json.loads((workdir / "settings.json").read_text())


# ---------------------------------------------------------------- worker: data, initial adapter, generation
def worker_prepare(workdir: Path) -> dict:
    """Build the pairs and the Agent once: write the pairs (in the Agent's batch order), the model
    directory and the Agent's initial adapter for the other workers; then time generation."""
    import random

    import torch
    from safetensors.torch import save_file

    from agents import Agent
    from agents.agent import derive_seed
    from tasks import TaskConfig, load_task

    one_thread()
    s = load_settings(workdir)
    n_pairs = s["steps"] * s["batch_size"]
    task = load_task(TaskConfig(n_labelled=n_pairs, n_unlabelled=s["gen_prompts"], n_test=8), RUN_SEED)
    examples = [{"prompt": ex.prompt, "chosen": ex.chosen, "rejected": ex.rejected} for ex in task.d_w]
    agent = Agent(AGENT_NAME, s["spec"], seed=RUN_SEED, num_threads=1)
    too_long = [ex for ex in examples
                if max(sum(map(len, agent._encode(ex["prompt"], ex[k]))) for k in ("chosen", "rejected")) > s["max_length"]]
    if too_long:  # truncation differs between the two (Agent: response first; TRL: keep_start), so none may happen
        raise SystemExit(f"{len(too_long)} pairs exceed max_length={s['max_length']}; raise --max-length")
    save_file({k: v.contiguous() for k, v in agent.adapter_weights("default").items()}, str(workdir / "init_lora.safetensors"))
    # Agent.train batches consecutive pairs, then shuffles the batch order with this stream (first call on "default")
    n_batches = len(examples) // s["batch_size"]
    order = list(range(n_batches))
    random.Random(derive_seed(RUN_SEED, AGENT_NAME, "default", 1)).shuffle(order)
    bs = s["batch_size"]
    trl_rows = [examples[b * bs + i] for b in order for i in range(bs)]
    (workdir / "data.json").write_text(json.dumps({
        "model_path": agent.model_path, "examples": examples, "trl_rows": trl_rows,
        "bos": agent.tokenizer.bos_token, "eos": agent.tokenizer.eos_token}))

    # ---- generation: Agent.generate vs model.generate on the same PeftModel, interleaved
    prompts = list(task.q_w2s[: s["gen_prompts"]])
    tok, model = agent.tokenizer, agent.model
    greedy = {"temperature": 0.0, "max_new_tokens": s["new_tokens"], "batch_size": len(prompts)}

    def plain(ps):
        tok.padding_side = "left"
        enc = tok([tok.bos_token + p for p in ps], add_special_tokens=False, padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=s["new_tokens"], do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        return tok.batch_decode(new, skip_special_tokens=True), new

    agent.generate(prompts[:8], greedy)  # warm-up, both sides alike
    plain(prompts[:8])
    agent_s, plain_s = [], []
    for _ in range(s["gen_repeats"]):
        start = time.perf_counter()
        agent_texts = agent.generate(prompts, greedy)
        agent_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        plain_texts, new = plain(prompts)
        plain_s.append(time.perf_counter() - start)
    generated = 0
    for row in new.tolist():  # tokens up to and including the first EOS
        generated += row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
    base = agent.model.get_base_model()
    params = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)
    lora_params = sum(p.numel() for n, p in base.named_parameters() if "lora_" in n and ".default." in n)
    return {"model": {"path": agent.model_path, "params": params, "float32_mib": round(params * 4 / 2**20, 2),
                      "lora_params": lora_params, "pairs": len(examples)},
            "generate": {"prompts": len(prompts), "max_new_tokens": s["new_tokens"], "batch_size": len(prompts),
                         "generated_tokens": generated, "decode_steps": int(new.shape[1]),
                         "identical_outputs": agent_texts == plain_texts,
                         "agent_s": agent_s, "plain_s": plain_s, "threads": torch.get_num_threads()}}


# ---------------------------------------------------------------- worker: the Agent's training
def worker_agent(workdir: Path) -> dict:
    import torch

    rss_start = rss_mib()
    import peft  # noqa: F401 - the Agent imports these on construction; counted with the imports, as on TRL's side
    import transformers  # noqa: F401

    from agents import Agent
    from agents.config import TrainConfig
    from agents.objectives import get_objective

    one_thread()
    rss_imports = rss_mib()
    s = load_settings(workdir)
    data = json.loads((workdir / "data.json").read_text())
    examples = data["examples"]
    agent = Agent(AGENT_NAME, s["spec"], seed=RUN_SEED, num_threads=1)
    rss_loaded = rss_mib()
    agent.copy_adapter("default", "initial")  # untouched copy: where the MACPO call starts from

    record = {"tokens": 0, "padded": 0, "batches": [], "losses": []}
    forward = agent._response_logits

    def counting_forward(encoded):  # the policy forward (grad on); reference forwards run under no_grad
        if torch.is_grad_enabled():
            width = max(len(p) + len(r) for p, r in encoded)
            record["tokens"] += sum(len(p) + len(r) for p, r in encoded)
            record["padded"] += width * len(encoded)
            record["batches"].append([p + r for p, r in encoded])
        return forward(encoded)

    agent._response_logits = counting_forward
    for name in ("dpo", "macpo"):
        objective = get_objective(name)
        loss_fn = objective.loss

        def recording_loss(agent_, batch, cfg, _fn=loss_fn):
            loss, metrics, n = _fn(agent_, batch, cfg)
            record["losses"].append(metrics["loss"])
            return loss, metrics, n

        objective.loss = recording_loss

    cfg = TrainConfig(lr=s["lr"], epochs=1, batch_size=s["batch_size"], beta=s["beta"], max_grad_norm=1.0,
                      weight_decay=0.0, warmup_ratio=0.0, reference="base", max_steps=s["steps"])

    def run(objective: str, adapter: str, init_from: str | None) -> dict:
        for key in record:
            record[key] = 0 if key in ("tokens", "padded") else []
        start = time.perf_counter()
        metrics = agent.train(examples, objective, cfg, adapter=adapter, init_from=init_from)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "steps": metrics["steps"], "tokens": record["tokens"],
                "padded_tokens": record["padded"], **digests(record["batches"]),
                "losses": list(record["losses"]), "agent_reported_tokens_per_s": metrics["tokens_per_s"]}

    cold = run("dpo", "cold", "default")  # warm-up and memory: the first training call of the process
    peak = peak_rss_mib()
    dpo = [run("dpo", "default", None)]  # first call on "default": the batch order the TRL side was given
    # further calls start from the same initial adapter on another name: same batches, another order
    dpo += [run("dpo", f"dpo-{i}", "initial") for i in range(1, s["timed_runs"])]
    macpo = [run("macpo", "macpo", "initial")]
    return {"rss_mib": {"start": rss_start, "imports": rss_imports, "loaded": rss_loaded, "peak_after_train": peak},
            "cold": cold, "dpo": dpo, "macpo": macpo, "threads": torch.get_num_threads(),
            "reference": "base model, adapter disabled (precomputed at the start of the call)"}


# ---------------------------------------------------------------- worker: TRL's DPOTrainer
def worker_trl(workdir: Path, separate_ref: bool) -> dict:
    import torch

    rss_start = rss_mib()
    import trl
    from datasets import Dataset
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    one_thread()
    rss_imports = rss_mib()
    s = load_settings(workdir)
    data = json.loads((workdir / "data.json").read_text())
    path = data["model_path"]
    initial = load_file(str(workdir / "init_lora.safetensors"))
    record = {"tokens": 0, "padded": 0, "batches": [], "losses": []}

    class CountingCollator(DataCollatorForPreference):
        def torch_call(self, examples):
            out = super().torch_call(examples)
            mask = out["attention_mask"]
            record["tokens"] += int(mask.sum())
            record["padded"] += mask.numel()
            record["batches"].append([ids[m.bool()].tolist() for ids, m in zip(out["input_ids"], mask)])
            return out

    class RecordingTrainer(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            record["losses"].append(float((loss[0] if isinstance(loss, tuple) else loss).detach()))
            return loss

    # the Agent's prompt encoding: BOS + prompt (plain template); TRL appends the EOS text to each answer
    rows = [{"prompt": data["bos"] + ex["prompt"], "chosen": ex["chosen"], "rejected": ex["rejected"]}
            for ex in data["trl_rows"]]

    # TRL turns activation (gradient) checkpointing on by default; the Agent never checkpoints
    no_checkpointing = ({"activation_checkpointing": False} if "activation_checkpointing" in DPOConfig.__dataclass_fields__
                        else {"gradient_checkpointing": False})

    def build(out_dir: str):
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
        ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True) if separate_ref else None
        args = DPOConfig(
            output_dir=out_dir, per_device_train_batch_size=s["batch_size"], gradient_accumulation_steps=1,
            max_steps=s["steps"], num_train_epochs=1, learning_rate=s["lr"], lr_scheduler_type="cosine",
            warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", beta=s["beta"],
            loss_type=["sigmoid"], max_length=s["max_length"], precompute_ref_log_probs=False,
            bf16=False, fp16=False, use_cpu=True, seed=RUN_SEED, **no_checkpointing,
            train_sampling_strategy="sequential", dataloader_num_workers=0, report_to="none",
            logging_strategy="no", save_strategy="no", eval_strategy="no", disable_tqdm=True,
        )
        lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                          target_modules=list(LORA["target_modules"]), task_type="CAUSAL_LM")
        collator = CountingCollator(pad_token_id=tokenizer.pad_token_id, max_length=s["max_length"])
        trainer = RecordingTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                                   processing_class=tokenizer, peft_config=lora, data_collator=collator)
        result = set_peft_model_state_dict(trainer.model, initial, adapter_name="default")  # the Agent's initial adapter
        if getattr(result, "unexpected_keys", None):
            raise SystemExit(f"initial adapter did not load: unexpected {result.unexpected_keys[:3]}")
        return trainer

    def run(out_dir: str) -> dict:
        start = time.perf_counter()
        trainer = build(out_dir)
        built = time.perf_counter() - start
        rss_built = rss_mib()
        for key in record:
            record[key] = 0 if key in ("tokens", "padded") else []
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        mode = ("separate reference model" if trainer.ref_model is not None else
                "adapter 'ref' (copy of the initial adapter)" if "ref" in trainer.model.peft_config else
                "base model, adapter disabled (per step)")
        return {"seconds": seconds, "construct_s": built, "steps": trainer.state.global_step, "tokens": record["tokens"],
                "padded_tokens": record["padded"], **digests(record["batches"]),
                "losses": list(record["losses"]), "reference": mode, "rss_after_build_mib": rss_built,
                "args": {"bf16": trainer.args.bf16, "gradient_checkpointing": trainer.args.gradient_checkpointing,
                         "optim": str(trainer.args.optim), "lr_scheduler": str(trainer.args.lr_scheduler_type),
                         "sampler": trainer.args.train_sampling_strategy,
                         "precompute_ref_log_probs": trainer.args.precompute_ref_log_probs}}, trainer

    with tempfile.TemporaryDirectory(prefix="peer-trl-") as tmp:
        cold, trainer = run(tmp)  # warm-up and memory: the first training call of the process
        peak = peak_rss_mib()
        import gc

        warm = []
        for _ in range(s["timed_runs"]):  # a fresh model and trainer each time, as the cold call had
            del trainer
            gc.collect()
            result, trainer = run(tmp)
            warm.append(result)
        del trainer
    return {"rss_mib": {"start": rss_start, "imports": rss_imports, "loaded": cold["rss_after_build_mib"],
                        "peak_after_train": peak},
            "cold": cold, "dpo": warm, "reference": warm[0]["reference"], "threads": torch.get_num_threads(),
            "trl": trl.__version__}


# ---------------------------------------------------------------- the parent: run, interleave, summarise
def run_worker(kind: str, workdir: Path, tag: str) -> dict:
    env = {**os.environ, **THREAD_ENV, "PYTHONPATH": str(ROOT)}
    out = workdir / f"{tag}.json"
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, "--workdir", str(workdir), "--out", str(out)],
                          env=env, capture_output=True, text=True, cwd=str(ROOT), check=False)
    if proc.returncode != 0 or not out.is_file():
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"peer_trl: worker {kind} ({tag}) failed with exit code {proc.returncode}")
    return json.loads(out.read_text())


def med(values: list[float]) -> float:
    return statistics.median(values)


def falls(losses: list[float], k: int = 5) -> dict:
    first, last = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
    return {"first_mean": round(first, 4), "last_mean": round(last, 4), "ok": last < first}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def summarise(settings: dict, prep: dict, runs: dict[str, list[dict]], wall_s: float, load: dict) -> dict:
    agent_runs = runs["agent"]
    sides = {  # every timed call, process by process (the first call of each process leads)
        "agent_dpo": [c for r in agent_runs for c in r["dpo"]],
        "agent_macpo": [c for r in agent_runs for c in r["macpo"]],
        "trl_ref_none": [c for r in runs["trl_ref_none"] for c in r["dpo"]],
        "trl_ref_model": [c for r in runs["trl_ref_model"] for c in r["dpo"]],
    }
    train = {}
    for name, rs in sides.items():
        tps = [r["tokens"] / r["seconds"] for r in rs]
        train[name] = {"tokens_per_s": round(med(tps), 1), "tokens_per_s_best": round(max(tps), 1),
                       "calls": len(rs), "tokens_per_s_all": [round(t, 1) for t in tps],
                       "seconds": round(med([r["seconds"] for r in rs]), 3), "steps": rs[0]["steps"],
                       "tokens": rs[0]["tokens"], "padded_tokens": rs[0]["padded_tokens"],
                       "tokens_per_step": rs[0]["tokens"] / max(rs[0]["steps"], 1),
                       "loss_first_step": round(rs[0]["losses"][0], 4), "loss_last_step": round(rs[0]["losses"][-1], 4)}
    train["agent_dpo"]["reference"] = agent_runs[0]["reference"]
    train["agent_macpo"]["reference"] = agent_runs[0]["reference"]
    for name in ("trl_ref_none", "trl_ref_model"):
        train[name]["reference"] = runs[name][0]["reference"]
        train[name]["construct_s"] = round(med([r["construct_s"] for r in sides[name]]), 3)
        train[name]["trl_args"] = sides[name][0]["args"]
    train["agent_dpo"]["agent_reported_tokens_per_s"] = round(med([r["agent_reported_tokens_per_s"] for r in sides["agent_dpo"]]), 1)
    ratio = {f"agent_dpo_vs_{t}": round(train["agent_dpo"]["tokens_per_s"] / train[t]["tokens_per_s"], 3)
             for t in ("trl_ref_none", "trl_ref_model")}
    ratio.update({f"agent_dpo_vs_{t}_best": round(train["agent_dpo"]["tokens_per_s_best"] / train[t]["tokens_per_s_best"], 3)
                  for t in ("trl_ref_none", "trl_ref_model")})

    gen = prep["generate"]
    agent_gen, plain_gen = med(gen["agent_s"]), med(gen["plain_s"])
    generate = {**{k: gen[k] for k in ("prompts", "batch_size", "max_new_tokens", "generated_tokens", "decode_steps",
                                       "identical_outputs")},
                "agent_tokens_per_s": round(gen["generated_tokens"] / agent_gen, 1),
                "plain_tokens_per_s": round(gen["generated_tokens"] / plain_gen, 1),
                "agent_s": round(agent_gen, 4), "plain_s": round(plain_gen, 4),
                "agent_tokens_per_s_best": round(gen["generated_tokens"] / min(gen["agent_s"]), 1),
                "plain_tokens_per_s_best": round(gen["generated_tokens"] / min(gen["plain_s"]), 1),
                "agent_s_all": [round(x, 4) for x in gen["agent_s"]], "plain_s_all": [round(x, 4) for x in gen["plain_s"]],
                "ratio_agent_vs_plain": round(plain_gen / agent_gen, 3)}

    memory = {}
    for side, key in (("agent", "agent_dpo"), ("trl_ref_none", "trl_ref_none"), ("trl_ref_model", "trl_ref_model")):
        rss = [r["rss_mib"] for r in runs[side]]
        memory[key] = {"peak_rss_mib": round(med([m["peak_after_train"] for m in rss]), 1),
                       "rss_after_imports_mib": round(med([m["imports"] for m in rss]), 1),
                       "peak_all_mib": [round(m["peak_after_train"], 1) for m in rss]}
        if rss[0]["loaded"] is not None:
            memory[key]["rss_after_load_mib"] = round(med([m["loaded"] for m in rss]), 1)
        memory[key]["peak_minus_imports_mib"] = round(memory[key]["peak_rss_mib"] - memory[key]["rss_after_imports_mib"], 1)
    memory["trl_ref_model_minus_ref_none_mib"] = round(memory["trl_ref_model"]["peak_rss_mib"] - memory["trl_ref_none"]["peak_rss_mib"], 1)
    memory["agent_minus_trl_ref_none_mib"] = round(memory["agent_dpo"]["peak_rss_mib"] - memory["trl_ref_none"]["peak_rss_mib"], 1)
    memory["agent_minus_trl_ref_model_mib"] = round(memory["agent_dpo"]["peak_rss_mib"] - memory["trl_ref_model"]["peak_rss_mib"], 1)

    # ---- checks: same work on every side, learning on every side, same losses
    all_runs = [r for rs in sides.values() for r in rs] + [r["cold"] for rs in runs.values() for r in rs]
    first_calls = [r["dpo"][0] for side in TRAIN_SIDES for r in runs[side]]  # agent: first call on "default"
    agent_losses = sides["agent_dpo"][0]["losses"]
    loss_diff = {t: float(f"{max(abs(a - b) for a, b in zip(agent_losses, sides[t][0]['losses'])):.3g}")
                 for t in ("trl_ref_none", "trl_ref_model")}
    checks = {
        "same_tokens_every_side": {"tokens": sorted({r["tokens"] for r in all_runs}),
                                   "ok": len({r["tokens"] for r in all_runs}) == 1},
        "same_steps_every_side": {"steps": sorted({r["steps"] for r in all_runs}),
                                  "ok": {r["steps"] for r in all_runs} == {settings["steps"]}},
        "same_batches_agent_and_trl": {"ok": len({r["batches_sha256"] for r in first_calls}) == 1},
        "same_batch_set_every_call": {"ok": len({r["batch_set_sha256"] for r in all_runs}) == 1},
        "loss_falls": {name: falls(rs[0]["losses"]) for name, rs in sides.items()},
        "agent_and_trl_losses_agree": {"max_abs_diff": loss_diff, "tolerance": 1e-3,
                                       "ok": all(d <= 1e-3 for d in loss_diff.values())},
        "generation_identical": {"ok": gen["identical_outputs"]},
        "one_thread_every_side": {"ok": all(r["threads"] == 1 for rs in runs.values() for r in rs)
                                  and gen["threads"] == 1},
    }
    checks["loss_falls"]["ok"] = all(v["ok"] for v in checks["loss_falls"].values() if isinstance(v, dict))
    return {
        "settings": settings, "model": prep["model"], "versions": versions(), "cpus": os.cpu_count(), "torch_threads": 1,
        "load_average": load, "wall_s": round(wall_s, 1),
        "token_definition": "non-padding input tokens of the policy forward per step: prompt+chosen and "
                            "prompt+rejected sequences (BOS and EOS included); reference forwards not counted",
        "train": train, "train_ratio": ratio, "generate": generate, "memory": memory, "checks": checks,
        "ok": all(c["ok"] for c in checks.values()),
        "losses": {name: [round(x, 5) for x in rs[0]["losses"]] for name, rs in sides.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=32, help="optimizer steps per training call")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved processes of every training side")
    parser.add_argument("--timed-runs", type=int, default=2, help="timed training calls per process (after the cold one)")
    parser.add_argument("--gen-prompts", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--gen-repeats", type=int, default=11)
    parser.add_argument("--worker", choices=["prepare", *TRAIN_SIDES], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    offline_env()
    if args.worker:
        workdir = Path(args.workdir)
        if args.worker == "prepare":
            result = worker_prepare(workdir)
        elif args.worker == "agent":
            result = worker_agent(workdir)
        else:
            result = worker_trl(workdir, separate_ref=args.worker == "trl_ref_model")
        Path(args.out).write_text(json.dumps(result))
        return

    settings = {"model": MODEL, "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
                "lr": args.lr, "beta": args.beta, "lora": LORA, "dtype": "float32", "repeats": args.repeats,
                "timed_runs": args.timed_runs,
                "gen_prompts": args.gen_prompts, "new_tokens": args.new_tokens, "gen_repeats": args.gen_repeats,
                "spec": {"name_or_path": MODEL, "max_length": args.max_length, "dtype": "float32", "device": "cpu",
                         "template": "plain", "lora": LORA}}
    start = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="peer-trl-") as tmp:
        workdir = Path(tmp)
        (workdir / "settings.json").write_text(json.dumps(settings))
        print("prepare: pairs, initial adapter, generation ...", flush=True)
        prep = run_worker("prepare", workdir, "prepare")
        runs: dict[str, list[dict]] = {side: [] for side in TRAIN_SIDES}
        for rep in range(args.repeats):
            order = TRAIN_SIDES[rep % 3:] + TRAIN_SIDES[: rep % 3]  # rotate: no side always runs first
            for side in order:
                t0 = time.perf_counter()
                runs[side].append(run_worker(side, workdir, f"{side}-{rep}"))
                print(f"repeat {rep + 1}/{args.repeats} {side}: {time.perf_counter() - t0:.1f}s", flush=True)
    load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    data = summarise(settings, prep, runs, time.perf_counter() - start, load)

    import torch

    torch.set_num_threads(1)  # `machine.threads` in the JSON: what every measuring subprocess used
    path = write_result("peer_trl", data)
    t, g, m = data["train"], data["generate"], data["memory"]
    for name in ("agent_dpo", "agent_macpo", "trl_ref_none", "trl_ref_model"):
        print(f"train {name:<14} {t[name]['tokens_per_s']:>8.1f} tokens/s (best {t[name]['tokens_per_s_best']:.1f}; "
              f"{t[name]['tokens']} tokens, "
              f"{t[name]['steps']} steps, loss {t[name]['loss_first_step']} -> {t[name]['loss_last_step']}; "
              f"reference: {t[name]['reference']})")
    print("train ratio (agent / TRL):", json.dumps(data["train_ratio"]))
    print(f"generate: agent {g['agent_tokens_per_s']} tokens/s (best {g['agent_tokens_per_s_best']}), plain "
          f"model.generate {g['plain_tokens_per_s']} tokens/s (best {g['plain_tokens_per_s_best']}); ratio "
          f"{g['ratio_agent_vs_plain']}, identical outputs: {g['identical_outputs']}")
    for name in ("agent_dpo", "trl_ref_none", "trl_ref_model"):
        print(f"peak RSS {name:<14} {m[name]['peak_rss_mib']:.1f} MiB (after imports {m[name]['rss_after_imports_mib']:.1f})")
    for name, check in data["checks"].items():
        print(f"{'ok  ' if check['ok'] else 'FAIL'} {name}")
    print(f"wrote {path} in {data['wall_s']:.0f}s")


if __name__ == "__main__":
    main()
