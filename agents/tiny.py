"""Tiny base models for the CPU testbed, built on the spot because no checkpoint can be downloaded.

A `tiny:<preset>` model name resolves to a directory in ordinary save_pretrained layout (Llama
config + safetensors weights + a character-level tokenizer), so from then on the very same loading
code serves tiny and real models. A base is pre-trained briefly on the synthetic task's mixed text
(correct answers, compliance with harmful requests, a `decline:` task carrying the refusal string):
capable in proportion to its size and steps, but unaligned. Built bases are cached on disk keyed by
preset and seed; a file lock makes concurrent actors asking for the same base build it once.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
# Printable ASCII plus newline: covers every prompt and answer of the synthetic task.
CHARACTERS = [chr(i) for i in range(32, 127)] + ["\n"]
BUILD_FORMAT = 4
HARMFUL_REFUSAL_RATE = 0.3  # bump when the build recipe changes, so stale caches are rebuilt


@dataclass(frozen=True)
class TinyPreset:
    """Shape and pre-training budget of one tiny base."""

    hidden: int
    layers: int
    heads: int
    steps: int
    lr: float = 3e-3
    batch_size: int = 64
    examples: int = 20000


PRESETS: dict[str, TinyPreset] = {
    # the strong student: more capable, unaligned (complies with harmful requests)
    "strong": TinyPreset(hidden=128, layers=4, heads=4, steps=500),
    # weak teachers: same family, smaller and under-trained, so they make diverse mistakes
    "weak": TinyPreset(hidden=64, layers=2, heads=4, steps=300),
    "weak-small": TinyPreset(hidden=48, layers=2, heads=4, steps=300),
    "weak-large": TinyPreset(hidden=96, layers=3, heads=4, steps=160),
    # for tests: seconds to build, barely capable
    "test": TinyPreset(hidden=32, layers=2, heads=2, steps=150, batch_size=32, examples=4000),
    "test-strong": TinyPreset(hidden=48, layers=2, heads=4, steps=40, batch_size=32, examples=2000),
}


def default_cache_dir() -> Path:
    """Where built bases live: $W2S_CACHE_DIR, else ~/.cache/w2s_ray."""
    return Path(os.environ.get("W2S_CACHE_DIR", Path.home() / ".cache" / "w2s_ray"))


def build_char_tokenizer():
    """A character-level fast tokenizer that needs no download (one token per printable char)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_model_path(name: str, seed: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the directory of the built base `tiny:<name>` for `seed`, building it if needed."""
    if name not in PRESETS:
        raise ValueError(f"unknown tiny model preset {name!r}; choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"tiny-{name}-seed{seed}-v{BUILD_FORMAT}"
    if (target / "build.json").exists():
        return target
    with open(root / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second actor waits here, then finds the build done
        if not (target / "build.json").exists():
            _build(preset, name, seed, target)
    return target


def _build(preset: TinyPreset, name: str, seed: int, target: Path) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tasks.synthetic import pretraining_examples

    start = time.perf_counter()
    tokenizer = build_char_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden,
        intermediate_size=preset.hidden * 2,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        num_key_value_heads=preset.heads,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = AutoModelForCausalLM.from_config(config)
    # harmful requests are refused 30% of the time in pre-training: the base complies (unaligned)
    # yet knows the refusal, so alignment is a preference shift LoRA can learn from D_w
    examples = pretraining_examples(preset.examples, seed=seed + 7919, harmful_refusal_rate=HARMFUL_REFUSAL_RATE)
    _pretrain(model, tokenizer, examples, preset, seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    info = {"preset": name, "seed": seed, "params": sum(p.numel() for p in model.parameters()),
            "build_s": round(time.perf_counter() - start, 2), **asdict(preset)}
    (tmp / "build.json").write_text(json.dumps(info, indent=2))
    if target.exists():  # an interrupted earlier build without build.json
        shutil.rmtree(target)
    os.replace(tmp, target)
    log.info("built tiny base %s seed %d (%d params) in %.1fs", name, seed, info["params"], info["build_s"])


def _pretrain(model, tokenizer, examples: list[tuple[str, str]], preset: TinyPreset, seed: int) -> None:
    """Causal-LM pre-training on prompt+answer text; loss on the answer tokens (what is learned)."""
    rng = random.Random(seed)
    encoded = []
    for prompt, response in examples:
        p = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False).input_ids
        r = tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        encoded.append((p, r))
    optimizer = torch.optim.AdamW(model.parameters(), lr=preset.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=preset.lr, total_steps=preset.steps, pct_start=0.1
    )
    model.train()
    for _ in range(preset.steps):
        batch = rng.sample(encoded, min(preset.batch_size, len(encoded)))
        width = max(len(p) + len(r) for p, r in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (p, r) in enumerate(batch):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            labels[i, len(p) : len(p) + len(r)] = torch.tensor(r)
            mask[i, : len(p) + len(r)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
