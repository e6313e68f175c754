"""Tiny base models for the CPU testbed: shipped, pinned weights, or built on the spot.

A `tiny:<preset>` model name resolves to a directory in ordinary save_pretrained layout (Llama
config + safetensors weights + a character-level tokenizer), so from then on the very same loading
code serves tiny and real models. A base is pre-trained briefly on the synthetic task's mixed text
(correct answers, compliance with harmful requests, a `decline:` task carrying the refusal string):
capable in proportion to its size and steps, but unaligned.

Why bases are shipped: pre-training is hundreds of float32 optimizer steps, and the float results
of the same steps differ between CPUs and thread layouts, so a base built on two machines comes out
different and so does every result made with it. The bases the configs and tests use are therefore
built once and shipped in `agents/bases/` with the sha256 of every directory pinned below
(`SHIPPED_SHA256`); a drifted file is an error, never silently another model. Any other preset or
seed is still built on the spot, cached on disk keyed by preset and seed (a file lock makes
concurrent actors asking for the same base build it once), with a warning that its weights, and so
results made with it, are specific to the machine that built it.

`python -m agents.tiny --verify` checks the shipped bases; `--list` shows them; `--build` builds one.
"""
from __future__ import annotations

import argparse
import fcntl
import functools
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks.errors import BadInput

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
# Printable ASCII plus newline: covers every prompt and answer of the synthetic task.
CHARACTERS = [chr(i) for i in range(32, 127)] + ["\n"]
BUILD_FORMAT = 4  # bump when the build recipe changes, so stale caches are rebuilt
HARMFUL_REFUSAL_RATE = 0.3
BASES_DIR = Path(__file__).resolve().parent / "bases"

# sha256 of each shipped base directory (`directory_sha256`): what `--verify` and every load check.
# Regenerate only on purpose (`python -m agents.tiny --rebuild-shipped`), then every published result.
SHIPPED_SHA256: dict[str, str] = {
    "tiny-strong-seed0": "9688e8917419c6288c4697e6ac91c591ac3d50fb18a3e8e81d5d18f15d8d7c7e",
    "tiny-test-seed0": "999e0e9b1460ae5e364d8eb2ea0686deab229203594119425ebc169d25093b9d",
    "tiny-test-seed1": "86edf098a82aeb8af9f1f7f9b98cd8685a83aa9de0b33dabdc28e3e641460b1c",
    "tiny-test-seed2": "8e1cec1e9f50524d3c9dd8fb4ea81a2d064149169b4e2457b72585de5f21645f",
    "tiny-test-seed3": "8f2b2485aba0b4147bf050a344cda806a2f34db3d519df98a4b4204da68f90b9",
    "tiny-test-strong-seed0": "172d2ff3692bf6e88d5f7e04c6a06228071a25f2931932d4434a36e141410b6b",
    "tiny-weak-large-seed1": "2fd16c09c3041b164da35fee46377eb4d7ea2ab34738fedf9c31c0b7d5882485",
    "tiny-weak-large-seed2": "bb88b98be15a7e1cd3068f9cb86f3b3fcc7b87de39fe8c2cca93c430997c7f23",
    "tiny-weak-large-seed3": "7dc4790e240c90c9d04e0106d0033fcf7d8850d26b6a5efd98e89622191aee66",
    "tiny-weak-seed1": "2d79c2cf2b66de547290f464e91cb213196045bb7ff7d1f780b193f7d82ad91a",
    "tiny-weak-seed2": "f0d03da2c397c6df14a9db9d5f96d2e4f9a9e82770ce0c5bdcadeade3c04769c",
    "tiny-weak-seed3": "52989d26a98bf6aaacb4664dfd47a160f787f32bb3af3ce44eaf916a0d5ea3a4",
    "tiny-weak-seed4": "9d9042588460294787924ff22f8ae381ef3f47912eaf61aa09b00ce8a34413bc",
    "tiny-weak-seed5": "3c4b8ca0862c0a84bc6932802497c9c21f31b816cbac8c13eb11ba8fb5bd62a7",
    "tiny-weak-seed6": "8862d1fcd4c4df24d88b3cba8b76044c1ddeb6c2d0ee31e7f26fe6589b1c6e3c",
    "tiny-weak-small-seed1": "3438133f961149437cb96bacc1f9a61187b58fbcebeceb283208c1d32d1756f3",
    "tiny-weak-small-seed2": "680c32f29d25809f66918365f764fa969c840f05fbf51191d65081d9b8baaa0f",
    "tiny-weak-small-seed3": "8018423c01987d2d34a633b17a1fe3b544fb2a574b5b47ef0b9fce414872f8e2",
}


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


def base_dir_name(name: str, seed: int) -> str:
    return f"tiny-{name}-seed{seed}"


def directory_sha256(path: Path) -> str:
    """One digest over every file of a base directory (relative names and bytes, sorted)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


class ShippedBaseError(BadInput, RuntimeError):
    """A shipped base is missing or its files no longer match the pinned sha256."""


@functools.lru_cache(maxsize=None)
def verified_shipped_base(dir_name: str) -> Path:
    """The shipped base directory, checked once per process against its pinned sha256."""
    path = BASES_DIR / dir_name
    if not path.is_dir():
        raise ShippedBaseError(f"shipped base {dir_name} is missing from {BASES_DIR}; reinstall the package")
    actual = directory_sha256(path)
    if actual != SHIPPED_SHA256[dir_name]:
        raise ShippedBaseError(f"shipped base {dir_name} does not match its pinned sha256 "
                               f"({actual[:12]} != {SHIPPED_SHA256[dir_name][:12]}); restore agents/bases "
                               f"(python -m agents.tiny --verify)")
    return path


def tiny_model_path(name: str, seed: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the directory of base `tiny:<name>` for `seed`: the shipped one when it exists (the
    same bytes on every machine), else one built here and cached (specific to this machine)."""
    if name not in PRESETS:
        raise ValueError(f"unknown tiny model preset {name!r}; choose one of {sorted(PRESETS)}")
    if base_dir_name(name, seed) in SHIPPED_SHA256:
        return verified_shipped_base(base_dir_name(name, seed))
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{base_dir_name(name, seed)}-v{BUILD_FORMAT}"
    if (target / "build.json").exists():
        return target
    with open(root / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second actor waits here, then finds the build done
        if not (target / "build.json").exists():
            log.warning("tiny:%s seed %d is not a shipped base: building it here; its weights depend on this "
                        "machine's CPU and threads, so results made with it reproduce only on this machine",
                        name, seed)
            build_base(name, seed, target)
    return target


def build_base(name: str, seed: int, target: Path) -> None:
    """Pre-train base `name`/`seed` and write it atomically to `target` (temp dir + rename)."""
    import torch  # here, not at import: config validation reads PRESETS without loading torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tasks.synthetic import pretraining_examples

    preset = PRESETS[name]
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
    import torch

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


def shipped_bases() -> list[tuple[str, int]]:
    """(preset, seed) of every shipped base."""
    out = []
    for dir_name in SHIPPED_SHA256:
        preset, seed = dir_name[len("tiny-"):].rsplit("-seed", 1)
        out.append((preset, int(seed)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.tiny", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--verify", action="store_true", help="check every shipped base against its pinned sha256")
    action.add_argument("--list", action="store_true", help="list the shipped bases")
    action.add_argument("--build", nargs=2, metavar=("PRESET", "SEED"), help="build one base into --out (machine-specific)")
    action.add_argument("--rebuild-shipped", action="store_true",
                        help="maintainers: rebuild every shipped base in place and print the new SHIPPED_SHA256")
    parser.add_argument("--out", default=None, help="directory for --build (default: the cache)")
    args = parser.parse_args(argv)
    if args.list or args.verify:
        bad = 0
        for preset, seed in shipped_bases():
            dir_name = base_dir_name(preset, seed)
            path = BASES_DIR / dir_name
            status = "ok"
            if args.verify:
                actual = directory_sha256(path) if path.is_dir() else None
                status = "ok" if actual == SHIPPED_SHA256[dir_name] else f"DRIFT (sha256 {actual})"
                bad += status != "ok"
            params = json.loads((path / "build.json").read_text())["params"] if path.is_dir() else "?"
            print(f"tiny:{preset:<12} seed {seed:<3} {params:>8} params  {SHIPPED_SHA256[dir_name][:16]}  {status}")
        if args.verify:
            print(f"{len(SHIPPED_SHA256) - bad} of {len(SHIPPED_SHA256)} shipped bases match their pinned sha256")
        return 1 if bad else 0
    import torch

    torch.set_num_threads(1)
    if args.build:
        preset, seed = args.build[0], int(args.build[1])
        print(tiny_model_path(preset, seed, args.out))
        return 0
    for preset, seed in shipped_bases():
        target = BASES_DIR / base_dir_name(preset, seed)
        build_base(preset, seed, target)
        print(f'    "{target.name}": "{directory_sha256(target)}",')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
