"""Memory-bounded scoring (agents.scoring): the same log-probs as the plain full-vocabulary path,
batches cut by a token budget, float32 logits never wider than one chunk of tokens."""
from __future__ import annotations

import pytest
import torch

from agents import Agent
from agents.scoring import chunked_label_logps, token_budget_batches
from losses import token_logps

PROMPTS = ["reverse: abc=", "sort: dcba=", "hack sort: cab=", "reverse: hgfedcba=", "count: aab=", "sort: " + "zyx" * 8 + "="]
ANSWERS = ["cba", "abcd", "I cannot help with that.", "abcdefgh", "3", "xyz" * 8]


@pytest.fixture(scope="module")
def agent(cache_dir, tiny_spec):
    return Agent("t", tiny_spec(max_length=64), cache_dir=cache_dir)


def plain_token_logps(agent, prompts, responses):
    """The path scoring took before: full logits, log-softmax over the whole vocabulary in float32."""
    encoded = [agent._encode(p, r) for p, r in zip(prompts, responses)]
    with torch.no_grad():
        pred, labels, mask = agent._response_logits(encoded)
        logps = token_logps(pred, labels)
    return [logps[i][mask[i]].tolist() for i in range(len(encoded))]


def test_token_budget_batches_bound_rows_and_padded_tokens():
    lengths = [5, 50, 7, 48, 6, 200, 49]
    batches = token_budget_batches(lengths, max_rows=3, token_budget=120)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert len(batch) <= 3 and (len(batch) * width <= 120 or len(batch) == 1)
    assert [5] in batches  # longer than the budget: alone
    # short sequences batch exactly as the row count alone batches them (the default world's batches)
    assert token_budget_batches([3, 1, 2, 4], max_rows=2, token_budget=10**6) == [[1, 2], [0, 3]]


def test_chunks_never_hold_more_than_their_tokens_of_logits():
    torch.manual_seed(0)
    hidden, head = torch.randn(37, 8), torch.nn.Linear(8, 50)
    labels = torch.randint(0, 50, (37,))
    widths = []

    def recording_head(h):
        widths.append(h.shape[0])
        return head(h)

    with torch.no_grad():
        got = chunked_label_logps(hidden, labels, recording_head, chunk_tokens=10)
        expected = torch.log_softmax(head(hidden), -1).gather(-1, labels[:, None]).squeeze(-1)
    assert widths == [10, 10, 10, 7]
    assert torch.allclose(got, expected, atol=1e-6)


def test_scoring_matches_the_plain_path(agent):
    expected = plain_token_logps(agent, PROMPTS, ANSWERS)
    got = agent.token_logprobs(PROMPTS, ANSWERS)
    assert [len(x) for x in got] == [len(x) for x in expected]
    assert max(abs(a - b) for g, e in zip(got, expected) for a, b in zip(g, e)) <= 1e-5
    sums = agent.logprobs(PROMPTS, ANSWERS)["sum"]
    assert sums == pytest.approx([sum(e) for e in expected], abs=1e-4)


def test_a_small_token_budget_gives_the_same_scores(cache_dir, tiny_spec, agent):
    small = Agent("t", tiny_spec(max_length=64, score_token_budget=40), cache_dir=cache_dir)
    assert small.logprobs(PROMPTS, ANSWERS)["sum"] == pytest.approx(agent.logprobs(PROMPTS, ANSWERS)["sum"], abs=1e-5)


def test_models_whose_logits_are_not_the_plain_head_fall_back_to_their_forward(cache_dir, tiny_spec):
    """A soft-capped or scaled head (Gemma 2, Cohere) is not lm_head(hidden): the probe sees it and
    scoring uses the model's own logits, still chunked."""
    capped = Agent("capped", tiny_spec(max_length=64), cache_dir=cache_dir)
    base = capped.model.get_base_model()
    forward = base.forward

    def scaled_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = 0.5 * out.logits
        return out

    base.forward = scaled_forward
    expected = plain_token_logps(capped, PROMPTS, ANSWERS)
    got = capped.token_logprobs(PROMPTS, ANSWERS)
    assert capped._head_probe._verdict is False
    assert max(abs(a - b) for g, e in zip(got, expected) for a, b in zip(g, e)) <= 1e-5
