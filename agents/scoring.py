"""Memory-bounded scoring: label log-probs without a `[batch, length, vocab]` float32 tensor.

Scoring (perplexity, log-probs, per-token log-probs) runs on GPUs that already hold the weights
and vLLM's share. The plain way, `log_softmax(model(ids).logits.float())`, materialises
`[batch, length, vocab]` twice in float32: about 50 GB for 64 x 512 tokens of Llama-3's 128k
vocabulary and 120 GB for 64 x 1024 of Qwen2's 152k. Here instead:

- batches are cut by a **token budget** (rows x padded width), not only by a row count, so a batch
  of long sequences is split where a batch of short ones is not;
- the decoder runs once; the LM head is applied only to the hidden states that predict response
  tokens, **a chunk of `LOGIT_CHUNK_TOKENS` tokens at a time**, each chunk's log-softmax taken in
  float32 and reduced to the label's log-prob at once. Peak extra memory is one chunk,
  `LOGIT_CHUNK_TOKENS x vocab x 4` bytes (0.6 GB at 152k), whatever the batch.

Whether a model's logits really are `lm_head(last hidden state)` (some architectures scale or
soft-cap them) is not assumed: `HeadProbe` compares the two on a short probe once per model and
falls back to the model's own forward, still chunked over tokens, where they differ.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

LOGIT_CHUNK_TOKENS = 1024  # response tokens whose float32 logits exist at once
PROBE_ATOL = 1e-4  # largest logit difference under which lm_head(hidden) counts as the model's logits


def token_budget_batches(lengths: Sequence[int], max_rows: int, token_budget: int) -> list[list[int]]:
    """Index batches of sequences sorted by length: each holds at most `max_rows` rows and at most
    `token_budget` padded tokens (rows x its longest length); a sequence longer than the budget
    goes alone. Short sequences batch exactly as a row count alone would batch them."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[i]  # sorted ascending: the newest row is the widest
        if current and (len(current) >= max_rows or (len(current) + 1) * width > token_budget):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def chunked_label_logps(hidden: torch.Tensor, labels: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                        chunk_tokens: int = LOGIT_CHUNK_TOKENS) -> torch.Tensor:
    """log p(label) for each row of `hidden` ([N, H] -> [N], float32): `head` maps hidden states to
    logits a chunk of rows at a time; each chunk's log-softmax is float32 and dropped once gathered."""
    out = torch.empty(labels.shape[0], dtype=torch.float32, device=labels.device)
    for start in range(0, labels.shape[0], chunk_tokens):
        stop = start + chunk_tokens
        logp = torch.log_softmax(head(hidden[start:stop]).float(), dim=-1)
        out[start:stop] = logp.gather(-1, labels[start:stop].clamp(min=0).unsqueeze(-1)).squeeze(-1)
        del logp
    return out


class HeadProbe:
    """Whether `lm_head(decoder(ids))` equals the model's logits, checked once on a short probe."""

    def __init__(self):
        self._verdict: bool | None = None

    def decoder_and_head(self, model) -> tuple[Callable, Callable] | None:
        """(decoder, head) of a transformers causal LM (peft-wrapped or not) when its logits are the
        head of the decoder's last hidden state; None when they are not (use the model's forward)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        get_decoder = getattr(base, "get_decoder", None)
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        decoder = get_decoder() if callable(get_decoder) else None
        if decoder is None or head is None or decoder is base:
            return None
        if self._verdict is None:
            self._verdict = self._matches(model, decoder, head)
        return (decoder, head) if self._verdict else None

    @staticmethod
    def _matches(model, decoder, head) -> bool:
        device = next(model.parameters()).device
        vocab = head.weight.shape[0] if hasattr(head, "weight") else 2
        ids = torch.arange(1, 9, device=device).clamp(max=vocab - 1).unsqueeze(0)
        with torch.no_grad():
            expected = model(input_ids=ids).logits.float()
            got = head(decoder(input_ids=ids).last_hidden_state).float()
        return got.shape == expected.shape and bool((got - expected).abs().max() <= PROBE_ATOL)
