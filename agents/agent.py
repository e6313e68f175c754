"""The Agent: one causal LM with its LoRA adapters, able to generate, score and train itself.

Plain Python (no Ray), so every behaviour is testable in-process; `agents.actor.AgentActor` puts it
in a Ray actor. One base model is held once; the agent itself is the `default` adapter, its
**negative agent** (MACPO) is the `negative` adapter, and any further adapter (e.g. a baseline) is
another name on the same base. Reference log-probs come from the same base with the adapter
disabled (or with the adapter as it stood when a training call started), never from a second copy.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Sequence

import torch

from agents import storage
from agents.config import REFERENCES, ModelSpec, SamplingConfig, TrainConfig
from agents.generation import make_backend
from agents.gpu_layout import prompt_budget
from agents.templates import apply_template, check_chat_template
from agents.errors import AgentError
from agents.objectives import Objective, get_objective
from agents.scoring import HeadProbe, chunked_label_logps, token_budget_batches
from tasks.types import Prompt

log = logging.getLogger(__name__)

AGENT_STATE_FILE = "agent_state.json"


def coerce(cls, value):
    """Accept a dataclass instance or a plain dict (as sent over Ray) for a config dataclass."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise AgentError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**value)
    raise AgentError(f"expected {cls.__name__} or dict, got {type(value).__name__}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when empty): errors stay one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def derive_seed(*parts: object) -> int:
    """A 32-bit seed from named parts (run seed, agent, purpose, ...): every random stream of a run
    has its own seed, so switching one stage off never shifts the randomness of another."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "little")


def resolve_model_path(name_or_path: str, seed: int, cache_dir: str | None) -> str:
    """`tiny:<preset>` -> built local dir; an existing path -> itself; otherwise a hub id."""
    if name_or_path.startswith("tiny:"):
        from agents.tiny import tiny_model_path

        return str(tiny_model_path(name_or_path.split(":", 1)[1], seed, cache_dir))
    expanded = os.path.expanduser(name_or_path)
    if os.path.exists(expanded):
        if not os.path.isdir(expanded):
            raise AgentError(f"model path {name_or_path} is a file; give a save_pretrained directory")
        return expanded
    if name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.count("/") > 1:
        raise AgentError(f"model path {name_or_path} does not exist")
    return name_or_path  # a hub id


class Agent:
    """A teacher or the student: base model + named LoRA adapters (`default`, `negative`, ...)."""

    def __init__(self, name: str, spec: ModelSpec | dict, cache_dir: str | None = None, num_threads: int | None = None,
                 seed: int = 0, max_new_tokens: int = 0, load_weights: bool = True):
        """`seed` is the run's seed: with the agent's name it seeds the LoRA initialisation and the
        order of training batches. Which base is loaded is the spec's business (`spec.seed` picks a
        `tiny:` base), so a seed sweep varies a run, not the models it starts from.
        `max_new_tokens`: the longest answer any generation will ask for (0: half of `max_length`);
        a vLLM engine's context is built to hold it after the longest kept prompt.
        `load_weights=False` (ranks 1.. of a sharded agent) builds the model on the meta device, with
        no memory for weights: join_group receives them from rank 0, shard by shard."""
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")  # per-shard bars from every actor drown the run's own progress
        if num_threads:
            torch.set_num_threads(num_threads)
        self.name = name
        self.seed = seed
        self.spec = coerce(ModelSpec, spec)
        if isinstance(self.spec.lora, dict):
            from agents.config import LoraConfig

            self.spec.lora = coerce(LoraConfig, self.spec.lora)
        self.model_path = resolve_model_path(self.spec.name_or_path, self.spec.seed, cache_dir)
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if self.spec.device == "auto" else self.spec.device
        )
        dtype = getattr(torch, self.spec.dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.model_path, trust_remote_code=self.spec.trust_remote_code
            )
            if load_weights:
                base = AutoModelForCausalLM.from_pretrained(
                    self.model_path, dtype=dtype, trust_remote_code=self.spec.trust_remote_code, use_safetensors=True,
                    **({"device_map": self.spec.device_map} if self.spec.device_map else {}),
                )
            else:
                from transformers import AutoConfig

                config = AutoConfig.from_pretrained(self.model_path, trust_remote_code=self.spec.trust_remote_code)
                with torch.device("meta"):
                    base = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=self.spec.trust_remote_code)
        except Exception as exc:  # noqa: BLE001 - turned into one clear line
            raise AgentError(f"cannot load model {self.spec.name_or_path!r} for {name}: {first_line(exc)}") from exc
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.tokenizer.eos_token_id is None:
            raise AgentError(f"tokenizer of {self.spec.name_or_path!r} has no EOS token")
        try:
            check_chat_template(self.spec.template, self.tokenizer, self.spec.name_or_path)
        except ValueError as exc:
            raise AgentError(str(exc)) from None
        lora = self.spec.lora
        self.lora_config = PeftLoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
        )
        torch.manual_seed(derive_seed(seed, name, "lora_init"))  # per run seed and agent
        if not self.spec.device_map and load_weights:
            base = base.to(self.device)
        if self.spec.gradient_checkpointing:  # active in train mode only: scoring and generation are unchanged
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = get_peft_model(base, self.lora_config, adapter_name="default")
        self.model.eval()
        self.backend = make_backend(self.spec.backend, self.model_path, self.spec, max_new_tokens)
        self._train_calls: dict[str, int] = {}  # per adapter: seeds each call's batch order
        self._head_probe = HeadProbe()
        self.rank_info = None  # set by join_group on a sharded agent (agents.sharding)
        # called with each optimizer step's metrics while a train call runs (the actor streams them
        # to the orchestrator: per-step curves and progress inside long stages); None: not reported
        self.step_sink = None
        self._reserved: set[str] = set()  # adapters created before sharding, not yet made by a call
        self.stats: dict[str, int] = {"truncated_prompts": 0, "truncated_generation_prompts": 0, "nan_batches": 0}

    # ------------------------------------------------------------------ sharding
    @property
    def sharded(self) -> bool:
        """Whether FSDP2 holds the model (join_group), even as one rank of one."""
        return self.rank_info is not None

    @property
    def writes_files(self) -> bool:
        """Whether this process writes checkpoints: rank 0 of a sharded agent, any unsharded agent."""
        return self.rank_info is None or self.rank_info.rank == 0

    def join_group(self, info, reserved_adapters: Sequence[str] = ()) -> None:
        """Become rank `info.rank` of a sharded agent (agents.sharding): create the adapters the run
        will make (FSDP cannot take parameters added after sharding), make every LoRA parameter
        trainable for the sharded forward (the optimizer still steps only the trained adapter's),
        join the process group and shard the model with FSDP2."""
        from agents import sharding

        for adapter in reserved_adapters:
            if adapter not in self.model.peft_config:
                self.model.add_adapter(adapter, copy.deepcopy(self.model.peft_config["default"]))
                self._reserved.add(adapter)
        self.model.set_adapter("default")
        for name, p in self.model.named_parameters():
            p.requires_grad_("lora_" in name)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())
        mesh = sharding.init_distributed(info, self.device)
        # rank 0 alone read the weights; each rank takes its shards of them (and every buffer) from it
        on_meta = any(p.is_meta for p in self.model.parameters())
        full = {} if on_meta else self.model.state_dict()
        sharding.shard(self.model, mesh, self.device)
        sharding.receive_from_rank0(self.model, full, self.device, on_meta)
        self.rank_info = info
        with torch.no_grad():  # the first forward goes through the root: FSDP's lazy set-up takes it as root
            bos = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
            self.model(input_ids=torch.tensor([[bos]], device=self.device))

    @contextlib.contextmanager
    def _inference_context(self):
        """Around a call that reaches the root's modules outside its forward (generate, the
        scorer's decoder + head): those parameters held unsharded on a sharded agent."""
        if not self.sharded:
            yield
            return
        from agents.sharding import root_unsharded

        with root_unsharded(self.model):
            yield

    # ------------------------------------------------------------------ adapters
    @property
    def adapters(self) -> list[str]:
        return [a for a in self.model.peft_config if a not in self._reserved]

    @property
    def active_adapter(self) -> str:
        return self.model.active_adapter

    def _check_adapter(self, adapter: str) -> None:
        if adapter not in self.model.peft_config or adapter in self._reserved:
            raise AgentError(f"{self.name} has no adapter {adapter!r}; it has {self.adapters}")

    @contextlib.contextmanager
    def adapter_context(self, adapter: str | None):
        """Run a block with `adapter` active (None: the current one), then restore."""
        previous = self.active_adapter
        if adapter is not None and adapter != previous:
            self._check_adapter(adapter)
            self.model.set_adapter(adapter)
        try:
            yield
        finally:
            if self.active_adapter != previous:
                self.model.set_adapter(previous)

    def copy_adapter(self, source: str, target: str) -> None:
        """Make `target` an exact copy of `source` (created if missing): a negative agent starts so."""
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        self._check_adapter(source)
        if self.sharded:
            self._copy_sharded_adapter(source, target)
        else:
            if target not in self.model.peft_config:
                self.model.add_adapter(target, copy.deepcopy(self.model.peft_config[source]))
            state = get_peft_model_state_dict(self.model, adapter_name=source)
            set_peft_model_state_dict(self.model, state, adapter_name=target)
        self.backend.adapter_updated(self, target)

    def _unreserved(self, adapter: str) -> None:
        if adapter not in self.model.peft_config:
            raise AgentError(f"{self.name}: a sharded agent cannot add adapter {adapter!r} after sharding; "
                             f"it reserved {sorted(self.model.peft_config)}")
        self._reserved.discard(adapter)

    def _lora_parameters(self, adapter: str) -> dict[str, torch.nn.Parameter]:
        """The LoRA parameters of one adapter, by name (`...lora_A.<adapter>.weight`)."""
        return {name: p for name, p in self.model.named_parameters() if "lora_" in name and f".{adapter}." in name}

    def _copy_sharded_adapter(self, source: str, target: str) -> None:
        """Shard by shard: every rank copies its own slice of each LoRA parameter."""
        self._unreserved(target)
        targets = self._lora_parameters(target)
        with torch.no_grad():
            for name, p in self._lora_parameters(source).items():
                targets[name.replace(f".{source}.", f".{target}.")].copy_(p)

    def adapter_weights(self, adapter: str = "default") -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        self._check_adapter(adapter)
        state = get_peft_model_state_dict(self.model, adapter_name=adapter)
        if self.sharded:
            from agents.sharding import full_tensors

            state = full_tensors(state)
        return {k: v.detach().clone() for k, v in state.items()}

    # ------------------------------------------------------------------ encoding
    def encode_prompt(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        # a model's own chat template may already open with BOS: never give it two
        if self.tokenizer.bos_token_id is not None and ids[:1] != [self.tokenizer.bos_token_id]:
            ids = [self.tokenizer.bos_token_id] + ids
        return ids

    def generation_prompt_ids(self, text: str, max_new_tokens: int) -> list[int]:
        """A templated prompt's ids as generation feeds them: cut from the left to what training
        keeps of a prompt before an answer of `max_new_tokens` (agents.gpu_layout.prompt_budget),
        on every backend, so no prompt overflows an engine's context; cuts are counted."""
        ids = self.encode_prompt(text)
        budget = prompt_budget(self.spec.max_length, max_new_tokens)
        if len(ids) > budget:
            self.stats["truncated_generation_prompts"] += 1
            ids = ids[-budget:]
        return ids

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Raw token ids of texts (no special tokens): compares tokenizers across agents (WSPO)."""
        return [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]

    def templated(self, prompt: Prompt) -> str:
        """The prompt as this model reads it: its template (`auto`: the tokenizer's chat template)."""
        return apply_template(self.spec.template, prompt, self.tokenizer)

    def _encode(self, prompt: Prompt, response: str) -> tuple[list[int], list[int]]:
        """Template the prompt, tokenize prompt and response (+EOS); truncate to `max_length`.

        The response is cut first; the prompt is cut from the left but keeps at least half the
        window, so truncation never leaves an empty prompt.
        """
        p = self.encode_prompt(self.templated(prompt))
        r = self.tokenizer(response, add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id]
        limit = self.spec.max_length
        if len(p) + len(r) > limit:
            keep_prompt = min(len(p), max(limit // 2, limit - len(r)))
            if keep_prompt < len(p):
                self.stats["truncated_prompts"] += 1
                p = p[-keep_prompt:]
            r = r[: limit - len(p)]
        return p, r

    def _pack(self, encoded: Sequence[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, ...]:
        """Right-padded ids and attention mask [B, T], and each response token's position and mask
        [B, R] (left-aligned), on the agent's device."""
        pad = self.tokenizer.pad_token_id
        width = max(len(p) + len(r) for p, r in encoded)
        resp_width = max(len(r) for _, r in encoded)
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        attn = torch.zeros((len(encoded), width), dtype=torch.long)
        pos = torch.zeros((len(encoded), resp_width), dtype=torch.long)
        mask = torch.zeros((len(encoded), resp_width), dtype=torch.bool)
        for i, (p, r) in enumerate(encoded):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            attn[i, : len(p) + len(r)] = 1
            pos[i, : len(r)] = torch.arange(len(p), len(p) + len(r))
            mask[i, : len(r)] = True
        return tuple(t.to(self.device) for t in (ids, attn, pos, mask))

    def _response_logits(self, encoded: Sequence[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits predicting each response token, the tokens and their mask, left-aligned:
        ([B, R, V], [B, R], [B, R]); prompt and padding positions are cut away. Training's path
        (batches of a few sequences, with gradients); scoring uses `_scored_token_logps`."""
        ids, attn, pos, mask = self._pack(encoded)
        logits = self.model(input_ids=ids, attention_mask=attn).logits
        # response token at position k is predicted by the logits at k - 1
        pred = logits.gather(1, (pos - 1).clamp(min=0).unsqueeze(-1).expand(-1, -1, logits.size(-1)))
        return pred, ids.gather(1, pos), mask

    def _scored_token_logps(self, encoded: Sequence[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs of the response tokens, left-aligned ([B, R] float32, mask [B, R]),
        without gradients and without ever holding [B, T, V] logits in float32 (agents.scoring):
        the LM head runs on the response positions only, a chunk of tokens at a time."""
        ids, attn, pos, mask = self._pack(encoded)
        labels = ids.gather(1, pos)
        before = (pos - 1).clamp(min=0).unsqueeze(-1)  # response token k is predicted at k - 1
        parts = self._head_probe.decoder_and_head(self.model)
        if parts is not None:
            decoder, head = parts
            states = decoder(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state
        else:  # logits are not plain head(hidden) for this model: its own forward, reduced a chunk at a time
            states = self.model(input_ids=ids, attention_mask=attn, use_cache=False).logits
            head = None
        # with `device_map` the last layer may sit on another GPU than the inputs: follow it there
        at = states.device
        rows = states.gather(1, before.to(at).expand(-1, -1, states.size(-1)))[mask.to(at)]
        flat = chunked_label_logps(rows, labels.to(at)[mask.to(at)], head if head is not None else (lambda x: x))
        out = torch.zeros(mask.shape, dtype=torch.float32, device=at)
        out[mask.to(at)] = flat
        return out, mask.to(at)

    def _score_batches(self, encoded: Sequence[tuple[list[int], list[int]]], batch_size: int) -> list[list[int]]:
        """Index batches sorted by length, at most `batch_size` rows and `spec.score_token_budget`
        padded tokens each, so padding stays small and memory bounded."""
        return token_budget_batches([len(p) + len(r) for p, r in encoded], batch_size, self.spec.score_token_budget)

    # ------------------------------------------------------------------ inference
    def generate(self, prompts: Sequence[str], sampling: SamplingConfig | dict | None = None, adapter: str | None = None) -> list[str]:
        """One response per prompt with `adapter` (default: the agent itself)."""
        sampling = coerce(SamplingConfig, sampling)
        texts = [self.templated(p) for p in prompts]
        return self.backend.generate(self, texts, sampling, adapter or "default")

    def logprobs(self, prompts: Sequence[str], responses: Sequence[str], adapter: str | None = "default",
                 batch_size: int = 64) -> dict[str, list[float]]:
        """Sum and mean log-prob of each response (EOS included) given its prompt.

        `adapter=None` scores with the adapter disabled (the base model)."""
        if len(prompts) != len(responses):
            raise AgentError(f"{len(prompts)} prompts but {len(responses)} responses")
        encoded = [self._encode(p, r) for p, r in zip(prompts, responses)]
        self.backend.release()
        sums = [0.0] * len(encoded)
        counts = [0] * len(encoded)
        with torch.no_grad(), self._scoring_context(adapter):
            for idx in self._score_batches(encoded, batch_size):
                logps, mask = self._scored_token_logps([encoded[i] for i in idx])
                for row, i in enumerate(idx):
                    sums[i] = float(logps[row].sum())
                    counts[i] = int(mask[row].sum())
        return {"sum": sums, "mean": [s / max(c, 1) for s, c in zip(sums, counts)], "n_tokens": counts}

    def perplexity(self, prompts: Sequence[str], responses: Sequence[str], adapter: str | None = "default") -> list[float]:
        """exp(mean token NLL) of each response: MACPO picks the teacher answer with the lowest."""
        return [math.exp(-m) for m in self.logprobs(prompts, responses, adapter)["mean"]]

    def token_logprobs(self, prompts: Sequence[str], responses: Sequence[str], adapter: str | None = "default",
                       batch_size: int = 64) -> list[list[float]]:
        """Per-token log-probs of each response (WSPO ships these from weak to strong)."""
        encoded = [self._encode(p, r) for p, r in zip(prompts, responses)]
        self.backend.release()
        out: list[list[float]] = [[] for _ in encoded]
        with torch.no_grad(), self._scoring_context(adapter):
            for idx in self._score_batches(encoded, batch_size):
                logps, mask = self._scored_token_logps([encoded[i] for i in idx])
                for row, i in enumerate(idx):
                    out[i] = logps[row][mask[row]].tolist()
        return out

    @contextlib.contextmanager
    def _scoring_context(self, adapter: str | None):
        with self._inference_context():
            if adapter is None:
                with self.model.disable_adapter():
                    yield
            else:
                with self.adapter_context(adapter):
                    yield

    # ------------------------------------------------------------------ training
    def train(self, examples: Sequence[dict], objective: str, config: TrainConfig | dict | None = None,
              adapter: str = "default", init_from: str | None = None) -> dict[str, float]:
        """Train `adapter` on `examples` and return metrics.

        examples: sft -> {prompt, response}; dpo/macpo -> {prompt, chosen, rejected};
        wspo -> {prompt, response, weak_aligned_logps, weak_ref_logps} (per response token).
        `init_from`: first make `adapter` a copy of that adapter (how a negative agent starts), in
        the same call, so a retried call never sees a half-made adapter.
        """
        from transformers import get_cosine_schedule_with_warmup

        cfg = coerce(TrainConfig, config)
        spec = get_objective(objective)
        if not examples:
            raise AgentError(f"{self.name}: no training examples for {objective} on adapter {adapter!r}")
        if cfg.reference not in REFERENCES:
            raise AgentError(f"train.reference={cfg.reference!r}: choose one of {REFERENCES}")
        if init_from is not None:
            self.copy_adapter(init_from, adapter)
        self._check_adapter(adapter)
        self.backend.release()  # a vLLM engine on the same GPUs sleeps while transformers trains
        start = time.perf_counter()
        batches = self._prepare(examples, spec, cfg, adapter)
        self._train_calls[adapter] = self._train_calls.get(adapter, 0) + 1
        rng = random.Random(derive_seed(self.seed, self.name, adapter, self._train_calls[adapter]))
        steps_per_epoch = math.ceil(len(batches) / cfg.grad_accum)
        total_steps = steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        metrics: dict[str, list[float]] = {}
        tokens = 0
        nan_batches = 0
        step = 0
        since_step: dict[str, list[float]] = {}  # this optimizer step's batch metrics
        step_tokens, step_start = 0, time.perf_counter()
        with self.adapter_context(adapter):
            params = list(self._lora_parameters(adapter).values())
            if not self.sharded:  # sharded: every LoRA parameter stays trainable (join_group); only these step
                for p in self.model.parameters():
                    p.requires_grad_(False)
                for p in params:
                    p.requires_grad_(True)
            optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
            scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
            self.model.train()
            try:
                for _ in range(cfg.epochs):
                    order = list(range(len(batches)))
                    rng.shuffle(order)
                    for k, b in enumerate(order):
                        if step >= total_steps:
                            break
                        loss, batch_metrics, n_tok = self._batch_loss(spec, batches[b], cfg)
                        if loss is None:
                            nan_batches += 1  # documented recovery: skip the batch, count it
                            continue
                        (loss / cfg.grad_accum).backward()
                        tokens += n_tok
                        step_tokens += n_tok
                        for key, value in batch_metrics.items():
                            metrics.setdefault(key, []).append(value)
                            since_step.setdefault(key, []).append(value)
                        if (k + 1) % cfg.grad_accum == 0 or k + 1 == len(order):
                            if self.sharded:
                                from agents.sharding import clip_grad_norm

                                grad_norm = clip_grad_norm(params, cfg.max_grad_norm)
                            else:
                                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                            lr = scheduler.get_last_lr()[0]
                            optimizer.step()
                            scheduler.step()
                            optimizer.zero_grad(set_to_none=True)
                            step += 1
                            if self.step_sink is not None and self.writes_files:
                                elapsed = time.perf_counter() - step_start
                                self._report_step(objective, adapter, step, total_steps, since_step, lr, float(grad_norm),
                                                  step_tokens / elapsed if elapsed > 0 else 0.0)
                            since_step, step_tokens, step_start = {}, 0, time.perf_counter()
            finally:
                self.model.eval()
                if not self.sharded:
                    for p in params:
                        p.requires_grad_(False)
        self.stats["nan_batches"] += nan_batches
        if nan_batches and not metrics:
            raise AgentError(f"{self.name}: every {objective} batch gave a non-finite loss (lr={cfg.lr})")
        self.backend.adapter_updated(self, adapter)
        seconds = time.perf_counter() - start
        out = {key: sum(v) / len(v) for key, v in metrics.items()}
        out.update(steps=step, examples=len(examples), nan_batches=nan_batches, seconds=seconds,
                   tokens_per_s=tokens / seconds if seconds > 0 else 0.0)
        return out

    def _report_step(self, objective: str, adapter: str, step: int, total: int, batch_metrics: dict[str, list[float]],
                     lr: float, grad_norm: float, tokens_per_s: float) -> None:
        """One optimizer step's record to `step_sink`; a sink that fails never stops training."""
        record = {"objective": objective, "adapter": adapter, "step": step, "total_steps": total, "lr": lr,
                  "grad_norm": grad_norm, "tokens_per_s": tokens_per_s,
                  **{k: sum(v) / len(v) for k, v in batch_metrics.items() if v}}
        try:
            self.step_sink(record)
        except Exception as exc:  # noqa: BLE001 - metrics are not worth a failed training call
            log.warning("%s: step metrics not reported (%s)", self.name, first_line(exc))

    def _batch_loss(self, objective: Objective, batch: dict, cfg: TrainConfig) -> tuple[torch.Tensor | None, dict[str, float], int]:
        """One batch's loss (None when non-finite: the batch is skipped), its metrics and tokens.

        On a sharded agent `batch` holds this rank's share (`items`) of `size` examples: its loss is
        the share's mean scaled by share / size x ranks, and FSDP averages gradients over the ranks,
        so the update is the whole batch's; metrics and the skip decision are agreed over all ranks."""
        if not self.sharded:
            loss, metrics, n_tok = objective.loss(self, batch["items"], cfg)
            return (loss if torch.isfinite(loss) else None), metrics, n_tok
        from agents.sharding import sum_over_ranks

        share = len(batch["items"]) if batch["real"] else 0
        loss, metrics, n_tok = objective.loss(self, batch["items"], cfg)
        finite = bool(torch.isfinite(loss)) or share == 0
        keys = sorted(metrics)
        totals = sum_over_ranks([0.0 if finite else 1.0, float(n_tok if share else 0)]
                                + [metrics[k] * share for k in keys])
        if totals[0] > 0:  # any rank non-finite: every rank skips the batch, as one rank would
            return None, {}, 0
        world = self.rank_info.world_size  # FSDP averages gradients over ranks: undo it
        scaled = loss * (share * world / batch["size"]) if share else loss * 0.0
        return scaled, {k: totals[2 + i] / batch["size"] for i, k in enumerate(keys)}, int(totals[1])

    def _prepare(self, examples: Sequence[dict], objective: Objective, cfg: TrainConfig, adapter: str) -> list[dict]:
        """Tokenize, batch and attach reference log-probs (computed once, before any update, with the
        adapter disabled or, with `reference: round_start`, the adapter as this call found it)."""
        try:
            items = [objective.encode(self, ex) for ex in examples]
        except KeyError as exc:
            raise AgentError(f"{self.name}: {objective.name} example lacks key {exc}") from None
        chunks = [items[i : i + cfg.batch_size] for i in range(0, len(items), cfg.batch_size)]
        batches = [{"items": list(chunk), "size": len(chunk), "real": True} for chunk in chunks]
        if self.sharded:  # this rank's share; a rank with none runs the batch's first example at weight 0 (lockstep)
            from agents.sharding import rank_share

            for batch in batches:
                share = rank_share(batch["items"], self.rank_info.rank, self.rank_info.world_size)
                batch.update(items=share or [copy.deepcopy(batch["items"][0])], real=bool(share))
        if objective.needs_reference:
            with torch.no_grad(), self._scoring_context(None if cfg.reference == "base" else adapter):
                for batch in batches:
                    objective.add_reference(self, batch["items"])
        return batches

    # ------------------------------------------------------------------ persistence
    def save_adapter(self, adapter: str, path: str | os.PathLike) -> None:
        """Write one adapter in PEFT format (adapter_config.json + adapter_model.safetensors)."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        self._check_adapter(adapter)
        state = get_peft_model_state_dict(self.model, adapter_name=adapter)
        if self.sharded:  # every rank gathers (a collective), rank 0 writes
            from agents.sharding import full_tensors

            state = full_tensors(state)
            if not self.writes_files:
                return
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        save_file(state, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
        config = copy.deepcopy(self.model.peft_config[adapter])
        config.base_model_name_or_path = self.model_path
        config.save_pretrained(str(path))

    def save(self, directory: str | os.PathLike) -> None:
        """Every adapter under `directory/<adapter>/` plus `agent_state.json` (no optimizer state).
        `directory` may be a storage URI: the files are staged on this node and uploaded from here,
        so an agent on any node writes its own checkpoint."""
        if storage.is_local(directory):
            self._save_local(Path(storage.local_path(directory)))
            return
        staging = storage.scratch_dir(f"w2s-save-{self.name}-")
        try:
            self._save_local(Path(staging))
            if self.writes_files:
                storage.upload(staging, str(directory))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _save_local(self, directory: Path) -> None:
        for adapter in self.adapters:
            self.save_adapter(adapter, directory / adapter)
        if not self.writes_files:
            return
        state = {"name": self.name, "model_path": self.model_path, "adapters": self.adapters,
                 "train_calls": self._train_calls, "stats": self.stats,
                 "spec": asdict(self.spec) if is_dataclass(self.spec) else self.spec}
        (directory / AGENT_STATE_FILE).write_text(json.dumps(state, indent=2))

    def load(self, directory: str | os.PathLike) -> None:
        """Restore every adapter saved by `save` (safetensors only; nothing is unpickled), from a
        local directory or a storage URI (downloaded to this node first)."""
        if storage.is_local(directory):
            self._load_local(Path(storage.local_path(directory)))
            return
        if not storage.exists(str(directory)):
            raise AgentError(f"{directory} is not an agent checkpoint (it does not exist)")
        staging = storage.scratch_dir(f"w2s-load-{self.name}-")
        try:
            self._load_local(Path(storage.download(str(directory), staging)), shown_as=str(directory))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _load_local(self, directory: Path, shown_as: str | None = None) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        shown_as = shown_as or str(directory)
        state_file = directory / AGENT_STATE_FILE
        if not state_file.exists():
            raise AgentError(f"{shown_as} is not an agent checkpoint (no {AGENT_STATE_FILE})")
        try:
            state = json.loads(state_file.read_text())
            adapters = list(state["adapters"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AgentError(f"{shown_as}/{AGENT_STATE_FILE} is not an agent state ({type(exc).__name__})") from None
        for adapter in adapters:
            if not isinstance(adapter, str) or not adapter or adapter in (".", "..") or "/" in adapter or "\\" in adapter:
                raise AgentError(f"{shown_as}/{AGENT_STATE_FILE}: adapter name {adapter!r} is not a plain name; refused")
            weights = directory / adapter / "adapter_model.safetensors"
            if not weights.exists():
                raise AgentError(f"checkpoint {shown_as} lacks {weights.name} for adapter {adapter!r}")
            if self.sharded:
                self._load_sharded_adapter(adapter, load_file(str(weights)), f"{shown_as}/{adapter}")
            else:
                if adapter not in self.model.peft_config:
                    self.model.add_adapter(adapter, copy.deepcopy(self.model.peft_config["default"]))
                set_peft_model_state_dict(self.model, load_file(str(weights), device=str(self.device)), adapter_name=adapter)
            self.backend.adapter_updated(self, adapter)
        self.model.set_adapter("default")
        self._train_calls = dict(state.get("train_calls", {}))
        self.stats.update(state.get("stats", {}))

    def _load_sharded_adapter(self, adapter: str, state: dict[str, torch.Tensor], shown_as: str) -> None:
        """A PEFT-format adapter (full tensors, as any rank count saves it) into this rank's shards:
        parameter `...lora_A.<adapter>.weight` is the file's `...lora_A.weight`."""
        from agents.sharding import copy_full_into

        self._unreserved(adapter)
        for name, param in self._lora_parameters(adapter).items():
            key = name.replace(f".{adapter}.", ".", 1)
            if key not in state:
                raise AgentError(f"checkpoint {shown_as} lacks {key}; it was saved from another model or LoRA shape")
            copy_full_into(param, state[key])
