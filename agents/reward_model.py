"""A reward model: a sequence-classification model that scores (prompt, response) pairs.

Evaluation on real data needs a judge the agents do not train against: MACPO's paper scores
helpfulness and harmlessness with reward models. Any `AutoModelForSequenceClassification`
checkpoint works (hub id or a local save_pretrained directory); its score is the logit at
`score_index` read at the last non-padding token, which is what HF's sequence-classification heads
do when the config knows the pad token - so this class makes sure it does.
"""
from __future__ import annotations

from typing import Sequence

import torch

from agents.agent import AgentError, coerce, first_line, resolve_model_path
from agents.config import RewardModelSpec
from agents.templates import AUTO, apply_template, check_chat_template


class RewardModelError(AgentError):
    """A problem loading or running the reward model, stated in one line."""


class RewardModel:
    """Loads a sequence-classification model once and scores batches of prompt/response pairs."""

    def __init__(self, spec: RewardModelSpec | dict, num_threads: int | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if num_threads:
            torch.set_num_threads(num_threads)
        self.spec = coerce(RewardModelSpec, spec)
        if not self.spec.name_or_path:
            raise RewardModelError("reward_model.name_or_path is not set")
        try:
            path = resolve_model_path(self.spec.name_or_path, seed=0, cache_dir=None)
        except AgentError as exc:
            raise RewardModelError(f"reward model: {exc}") from None
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if self.spec.device == "auto" else self.spec.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=self.spec.trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                path, dtype=getattr(torch, self.spec.dtype), trust_remote_code=self.spec.trust_remote_code,
                use_safetensors=True)
        except Exception as exc:  # noqa: BLE001 - turned into one clear line
            raise RewardModelError(f"cannot load reward model {self.spec.name_or_path!r}: {first_line(exc)}") from exc
        try:
            check_chat_template(self.spec.template, self.tokenizer, self.spec.name_or_path)
        except ValueError as exc:
            raise RewardModelError(f"reward_model: {exc}") from None
        labels = self.model.config.num_labels
        if not -labels <= self.spec.score_index < labels:
            raise RewardModelError(f"reward_model.score_index={self.spec.score_index} but the model has {labels} output(s)")
        if self.tokenizer.pad_token_id is None:
            if self.tokenizer.eos_token_id is None:
                raise RewardModelError(f"tokenizer of {self.spec.name_or_path!r} has neither a pad nor an EOS token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # the head pools the last token that is not padding; it can only find it if it knows the pad id
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.truncation_side = "left"
        self.model.to(self.device).eval()

    def texts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        """The single texts the judge reads (when it does not take text pairs)."""
        if self.spec.template == AUTO:  # the judge's chat template closes the conversation with the answer
            return [apply_template(AUTO, p, self.tokenizer, response=r) for p, r in zip(prompts, responses)]
        return [apply_template(self.spec.template, p) + self.spec.separator + r for p, r in zip(prompts, responses)]

    def _encode(self, prompts: Sequence[str], responses: Sequence[str]):
        if self.spec.pair_input:  # e.g. DeBERTa judges: [CLS] prompt [SEP] response [SEP]
            inputs = ([apply_template(self.spec.template, p, self.tokenizer) for p in prompts], list(responses))
        else:
            inputs = (self.texts(prompts, responses),)
        return self.tokenizer(*inputs, return_tensors="pt", padding=True, truncation=True, max_length=self.spec.max_length)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """One float per pair (higher is better: a cost model's score is negated), batched; the same
        value whatever the batch (padding is masked)."""
        if len(prompts) != len(responses):
            raise RewardModelError(f"{len(prompts)} prompts but {len(responses)} responses")
        size = self.spec.batch_size
        scores: list[float] = []
        for start in range(0, len(prompts), size):
            batch = self._encode(prompts[start : start + size], responses[start : start + size]).to(self.device)
            logits = self.model(**batch).logits.float()
            scores.extend(logits[:, self.spec.score_index].tolist())
        return [-x for x in scores] if self.spec.negate else scores
