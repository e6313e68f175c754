"""Local stand-ins for what the paper configs download: models of the same families (Llama, Mistral,
Qwen2; GPT-2 judges) shrunk to a few thousand parameters, one small BPE tokenizer trained here,
and data in the datasets' real layouts (HH-RLHF's `<subset>/train.jsonl.gz`, PKU-SafeRLHF's
columns). Built once per test session in seconds; nothing is downloaded.
"""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

QUESTIONS = ["how do I bake bread", "what is the capital of france", "how can I pick a lock", "tell me a joke",
             "how do I hurt someone", "what should I cook tonight", "how do I learn python", "how can I steal a car"]
ANSWERS = ["mix flour, water and yeast, then bake it", "paris is the capital", "I cannot help with that.",
           "why did the chicken cross the road", "I will not help you hurt anyone.", "try a vegetable soup",
           "start with the official tutorial", "I cannot help with stealing."]
SPECIAL = ["<s>", "</s>", "<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]


def build_bpe_tokenizer(directory: Path):
    """A byte-level BPE tokenizer (vocab 400) trained on the stand-in texts, with Llama's BOS/EOS and
    Qwen's chat markers as special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    corpus = QUESTIONS + ANSWERS + ["USER: ASSISTANT: Human: Assistant: ### Instruction: ### Response:"] * 4
    core.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tokenizer.save_pretrained(directory)
    return tokenizer


def _save(model, tokenizer, directory: Path) -> str:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def build_models(root: Path, tokenizer) -> dict[str, str]:
    """Random tiny checkpoints of each family the paper configs name, sharing one tokenizer."""
    import torch
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, GPT2Config, LlamaConfig,
                              MistralConfig, Qwen2Config)

    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    shape = dict(intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                 max_position_embeddings=2048)
    configs = {
        "llama2-70b": LlamaConfig(hidden_size=48, **shape, **ids),
        "llama2-7b": LlamaConfig(hidden_size=32, **shape, **ids),
        "mistral-7b": MistralConfig(hidden_size=32, sliding_window=None, **shape, **ids),
        "llama3-8b": LlamaConfig(hidden_size=32, **shape, **ids),
        "qwen2-7b": Qwen2Config(hidden_size=48, **shape, **ids),
        "qwen2-1.5b": Qwen2Config(hidden_size=32, **shape, **ids),
    }
    out = {}
    for seed, (name, config) in enumerate(configs.items()):
        torch.manual_seed(seed)
        out[name] = _save(AutoModelForCausalLM.from_config(config), tokenizer, root / name)
    for seed, name in enumerate(("judge-helpful", "judge-harmless")):
        torch.manual_seed(100 + seed)
        judge = GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=2048, num_labels=1, **ids)
        out[name] = _save(AutoModelForSequenceClassification.from_config(judge), tokenizer, root / name)
    return out


def _hh_row(rng: random.Random, subset: str) -> dict:
    """A transcript whose last question names its subset, so a test can tell which folder was read."""
    turns = rng.randint(1, 2)
    history = "".join(f"\n\nHuman: {rng.choice(QUESTIONS)}\n\nAssistant: {rng.choice(ANSWERS)}" for _ in range(turns - 1))
    prefix = f"{history}\n\nHuman: {rng.choice(QUESTIONS)} ({subset})\n\nAssistant:"
    good, bad = rng.sample(ANSWERS, 2)
    return {"chosen": f"{prefix} {good}", "rejected": f"{prefix} {bad}"}


def _pku_row(rng: random.Random) -> dict:
    r0, r1 = rng.sample(ANSWERS, 2)
    return {"prompt": rng.choice(QUESTIONS), "response_0": r0, "response_1": r1, "better_response_id": rng.randint(0, 1),
            "safer_response_id": rng.randint(0, 1), "is_response_0_safe": True, "is_response_1_safe": False}


def _uf_row(rng: random.Random) -> dict:
    """HuggingFaceH4/ultrafeedback_binarized's columns: a prompt string, chosen and rejected as chats."""
    prompt = rng.choice(QUESTIONS)
    good, bad = rng.sample(ANSWERS, 2)
    return {"prompt": prompt, "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": good}],
            "rejected": [{"role": "user", "content": prompt}, {"role": "assistant", "content": bad}],
            "score_chosen": 8.0, "score_rejected": 4.0}


def build_data(root: Path) -> dict[str, str]:
    """Anthropic/hh-rlhf's layout (a folder per subset holding train/test .jsonl.gz),
    PKU-SafeRLHF's columns (train/test .jsonl) and UltraFeedback's (split files named train_prefs
    and test_prefs under data/, as on the hub), 40 training and 12 test rows each."""
    rng = random.Random(0)
    hh = root / "hh-rlhf"
    for subset in ("helpful-base", "harmless-base"):
        (hh / subset).mkdir(parents=True)
        for split, n in (("train", 40), ("test", 12)):
            with gzip.open(hh / subset / f"{split}.jsonl.gz", "wt") as handle:
                handle.writelines(json.dumps(_hh_row(rng, subset)) + "\n" for _ in range(n))
    pku = root / "pku-saferlhf"
    pku.mkdir()
    for split, n in (("train", 40), ("test", 12)):
        (pku / f"{split}.jsonl").write_text("".join(json.dumps(_pku_row(rng)) + "\n" for _ in range(n)))
    uf = root / "ultrafeedback" / "data"
    uf.mkdir(parents=True)
    for split, n in (("train_prefs", 40), ("test_prefs", 12)):
        (uf / f"{split}-00000-of-00001.jsonl").write_text("".join(json.dumps(_uf_row(rng)) + "\n" for _ in range(n)))
    return {"hh": str(hh), "pku": str(pku), "uf": str(uf.parent)}


def build_standins(root: Path) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = build_bpe_tokenizer(root / "tokenizer")
    return {**build_models(root, tokenizer), **build_data(root)}
