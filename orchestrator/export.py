"""`python -m orchestrator.export RUN_DIR [--round N] [--agent student] [--adapter default] [--output DIR]
[--merge] [--push-to-hub REPO]`

One trained agent of a run, as something to hand on: a clean PEFT adapter (or, with `--merge`, the
base model with the adapter merged in, `save_pretrained` layout) plus a model card saying what it
is: the method, which agent and adapter (`default` is the agent's policy; `negative`, `aligned`
and the baselines are helpers), the base model, the data and that round's evaluation. The run
directory may be a path or a storage URI; the checkpoint is a committed round (the newest by
default). `--push-to-hub` uploads the folder with huggingface_hub (needs a token and a network).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

from agents import storage
from orchestrator.run_dir import checkpoint_rounds, is_committed
from tasks.errors import BadInput

ADAPTER_ROLES = {
    "default": "the agent itself (its policy)",
    "negative": "MACPO's negative agent: trained on bad behaviour to produce hard negatives (not a policy to deploy)",
    "ceiling": "baseline: the student fine-tuned on gold labels (the strong ceiling)",
    "aligned": "WSPO's aligned weak model (its DPO)",
    "sft_baseline": "baseline: the student's SFT on the chosen answers",
    "dpo_baseline": "baseline: the student's DPO on the pairs",
}


class ExportError(BadInput, ValueError):
    """The run, round, agent or adapter asked for is not there; the message names it."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory: path or storage URI")
    parser.add_argument("--round", type=int, default=None, help="a committed round (default: the newest)")
    parser.add_argument("--agent", default="student", help="student, teacher_0, ... (default: student)")
    parser.add_argument("--adapter", default="default", help="which adapter (default: the agent's policy)")
    parser.add_argument("--output", default=None, help="folder to write (default: <run name>-<agent>-round<N>)")
    parser.add_argument("--merge", action="store_true", help="write the base model with the adapter merged in")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload the folder to this hub repository")
    parser.add_argument("--cache-dir", default=None, help="where `tiny:` bases are built (default: the run's cache)")
    return parser.parse_args(argv)


def export(run_dir: str, round_index: int | None = None, agent: str = "student", adapter: str = "default",
           output: str | None = None, merge: bool = False, cache_dir: str | None = None) -> Path:
    """Write the export folder; return its path."""
    from agents.agent import AGENT_STATE_FILE, resolve_model_path

    if not storage.exists(run_dir):
        raise ExportError(f"{run_dir}: no such run directory")
    config = yaml.safe_load(storage.read_text(storage.join(run_dir, "config.yaml")))
    summary = json.loads(storage.read_text(storage.join(run_dir, "summary.json"))) \
        if storage.exists(storage.join(run_dir, "summary.json")) else {}
    rounds = [index for index in checkpoint_rounds(run_dir) if is_committed(run_dir, index)]
    if not rounds:
        raise ExportError(f"{run_dir}: no committed round checkpoint to export")
    index = rounds[-1] if round_index is None else round_index
    if index not in rounds:
        raise ExportError(f"{run_dir}: round {index} has no checkpoint; kept rounds: {rounds}")
    checkpoint = storage.join(run_dir, "checkpoints", f"round_{index}", agent)
    if not storage.exists(storage.join(checkpoint, AGENT_STATE_FILE)):
        raise ExportError(f"{run_dir}: round {index} has no agent {agent!r}")
    state = json.loads(storage.read_text(storage.join(checkpoint, AGENT_STATE_FILE)))
    if adapter not in state.get("adapters", []):
        raise ExportError(f"{agent} at round {index} has no adapter {adapter!r}; it has {state.get('adapters')}")
    spec = state["spec"]
    name = Path(str(run_dir).rstrip("/")).name
    out = Path(output or f"{name}-{agent}-round{index}")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out}: exists and is not empty; choose another --output")
    staging = Path(storage.scratch_dir("w2s-export-"))
    try:
        source = Path(storage.download(storage.join(checkpoint, adapter), str(staging))) \
            if not storage.is_local(checkpoint) else Path(storage.local_path(storage.join(checkpoint, adapter)))
        base_name = spec["name_or_path"]  # a hub id or a path, as the user gave it
        base_path = resolve_model_path(base_name, spec.get("seed", 0), cache_dir or config.get("cache_dir"))
        out.mkdir(parents=True, exist_ok=True)
        if merge:
            write_merged(base_path, source, out, spec)
        else:
            shutil.copy(source / "adapter_model.safetensors", out / "adapter_model.safetensors")
            adapter_config = json.loads((source / "adapter_config.json").read_text())
            # a hub id stays a hub id; a built `tiny:` base or a local path is named by where it is
            adapter_config["base_model_name_or_path"] = base_name if not base_name.startswith("tiny:") else base_path
            (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
        (out / "README.md").write_text(model_card(config, summary, spec, agent, adapter, index, merge, base_name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def write_merged(base_path: str, adapter_dir: Path, out: Path, spec: dict) -> None:
    """The base with the adapter folded into its weights: a plain transformers model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, spec.get("dtype", "float32"))
    trust = bool(spec.get("trust_remote_code", False))
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, trust_remote_code=trust)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_path, trust_remote_code=trust).save_pretrained(out)


def model_card(config: dict, summary: dict, spec: dict, agent: str, adapter: str, index: int, merged: bool,
               base_name: str) -> str:
    from orchestrator.redaction import redact

    record = next((r for r in summary.get("rounds", []) if r.get("round") == index), {})
    metrics = record.get("eval", {}).get(agent, {}) if adapter == "default" else {}
    task = config.get("task", {})
    lora = spec.get("lora", {})
    lines = ["---", "library_name: " + ("transformers" if merged else "peft"), f"base_model: {base_name}",
             "tags: [" + ", ".join(["weak-to-strong", config.get("algorithm", ""), "lora"]) + "]", "---", "",
             f"# {agent} ({adapter}) after round {index} of a {config.get('algorithm', '').upper()} run", "",
             f"- **What**: {ADAPTER_ROLES.get(adapter, 'an adapter of this agent')}.",
             f"- **Base model**: `{base_name}`" + (" (weights merged)" if merged else " (LoRA adapter, PEFT format)") + ".",
             f"- **LoRA**: r={lora.get('r')}, alpha={lora.get('alpha')}, on {', '.join(lora.get('target_modules', []))}; "
             f"template `{spec.get('template')}`, max length {spec.get('max_length')}.",
             f"- **Method**: {config.get('algorithm')} (rounds: {config.get('rounds')}, seed {config.get('seed')}).",
             f"- **Data**: task `{task.get('name')}`" + (f" from `{task.get('path')}`" if task.get("path") else "")
             + f"; {task.get('n_labelled')} labelled pairs, {task.get('n_unlabelled')} unlabelled prompts, "
             f"{task.get('n_test')} test prompts.", ""]
    if metrics:
        lines += [f"## Evaluation at round {index} (test split)", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in metrics.items() if isinstance(v, (int, float))]
        lines.append("")
    load = ("AutoModelForCausalLM.from_pretrained(PATH)" if merged else
            "PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), PATH)")
    lines += ["## Loading", "", "```python", "from transformers import AutoModelForCausalLM",
              *([] if merged else ["from peft import PeftModel"]), f"model = {load}", "```", "",
              "## Run configuration", "", "```yaml", yaml.safe_dump(redact(config), sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = export(args.run_dir, args.round, args.agent, args.adapter, args.output, args.merge, args.cache_dir)
        if args.push_to_hub:
            from huggingface_hub import HfApi

            HfApi().upload_folder(repo_id=args.push_to_hub, folder_path=str(out))
    except (BadInput, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - e.g. the hub unreachable: one line
        text = str(exc).strip().splitlines()
        print(f"error: {type(exc).__name__}: {text[0] if text else ''}", file=sys.stderr)
        return 1
    print(f"exported {args.agent}/{args.adapter} to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
