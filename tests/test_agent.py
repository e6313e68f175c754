"""The plain Agent (no Ray) on a tiny built model: generate, score, train, adapters, persistence."""
from __future__ import annotations

import math

import pytest
import torch

from agents import Agent, AgentError
from agents.agent import resolve_model_path

PROMPTS = ["reverse: abc=", "sort: dcba=", "hack sort: cab=", "reverse: hgfedcba="]
ANSWERS = ["cba", "abcd", "I cannot help with that.", "abcdefgh"]
WRONG = ["abc", "dcba", "abc", "hgfedcba"]


@pytest.fixture(scope="module")
def agent(cache_dir, tiny_spec):
    return Agent("t", tiny_spec(), cache_dir=cache_dir)


@pytest.fixture()
def fresh(cache_dir, tiny_spec):
    return Agent("fresh", tiny_spec(), cache_dir=cache_dir)


def test_builds_and_caches_a_save_pretrained_directory(agent, cache_dir):
    path = resolve_model_path("tiny:test", 0, cache_dir)
    assert path == agent.model_path
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    assert tok.decode(tok("sort: ab=", add_special_tokens=False).input_ids) == "sort: ab="
    assert AutoModelForCausalLM.from_pretrained(path).config.num_hidden_layers == 2


def test_batched_and_single_logprobs_agree(agent):
    batched = agent.logprobs(PROMPTS, ANSWERS)
    for i, (p, r) in enumerate(zip(PROMPTS, ANSWERS)):
        single = agent.logprobs([p], [r])
        assert single["sum"][0] == pytest.approx(batched["sum"][i], abs=1e-4)
        assert single["mean"][0] == pytest.approx(batched["mean"][i], abs=1e-4)
    # EOS is scored: n_tokens = characters + 1
    assert batched["n_tokens"] == [len(a) + 1 for a in ANSWERS]
    ppl = agent.perplexity(PROMPTS, ANSWERS)
    assert ppl == pytest.approx([torch.exp(torch.tensor(-m)).item() for m in batched["mean"]], rel=1e-5)


def test_token_logprobs_sum_to_sequence_logprob(agent):
    tokens = agent.token_logprobs(PROMPTS, ANSWERS)
    sums = agent.logprobs(PROMPTS, ANSWERS)["sum"]
    assert [len(t) for t in tokens] == [len(a) + 1 for a in ANSWERS]
    assert [sum(t) for t in tokens] == pytest.approx(sums, abs=1e-4)


def test_greedy_generation_is_batch_invariant(agent):
    greedy = {"temperature": 0.0, "max_new_tokens": 12}
    batched = agent.generate(PROMPTS, greedy)
    assert len(batched) == len(PROMPTS) and all(t.strip() for t in batched)  # real answers, not empty strings
    assert len(set(batched)) > 1  # and not one string whatever the prompt
    assert [agent.generate([p], greedy)[0] for p in PROMPTS] == batched


def test_sampling_is_seeded_and_varied(agent):
    sampling = {"temperature": 1.0, "top_p": 0.9, "top_k": 20, "max_new_tokens": 8, "seed": 7}
    repeated = ["sort: dcba="] * 6
    first = agent.generate(repeated, sampling)
    assert first == agent.generate(repeated, sampling)  # seeded: reproducible
    assert len(set(first)) >= 3  # sampling: the same prompt gets different answers
    assert agent.generate(repeated, dict(sampling, seed=8)) != first  # another seed, other samples
    assert len(set(agent.generate(repeated, dict(sampling, temperature=0.0)))) == 1  # greedy: one answer


def test_sft_raises_logprob_of_targets(fresh):
    before = fresh.logprobs(PROMPTS, ANSWERS)["mean"]
    examples = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, ANSWERS)] * 4
    metrics = fresh.train(examples, "sft", {"lr": 1e-2, "epochs": 3, "batch_size": 4})
    after = fresh.logprobs(PROMPTS, ANSWERS)["mean"]
    assert sum(after) > sum(before) + 0.5
    assert metrics["steps"] == 12 and metrics["tokens_per_s"] > 0


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_dpo_raises_chosen_minus_rejected_margin(fresh, loss_type):
    pairs = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(PROMPTS, ANSWERS, WRONG)] * 4
    def margin():
        c = fresh.logprobs(PROMPTS, ANSWERS)["sum"]
        r = fresh.logprobs(PROMPTS, WRONG)["sum"]
        return sum(a - b for a, b in zip(c, r))

    before = margin()
    metrics = fresh.train(pairs, "dpo", {"lr": 1e-2, "epochs": 3, "batch_size": 4, "loss_type": loss_type, "beta": 0.5})
    assert margin() > before + 1.0
    assert {"loss", "reward_margin", "accuracy"} <= set(metrics)


def test_macpo_objective_raises_the_margin_and_the_positive(fresh):
    pairs = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(PROMPTS, ANSWERS, WRONG)] * 2

    def margin():
        return sum(a - b for a, b in zip(fresh.logprobs(PROMPTS, ANSWERS)["sum"], fresh.logprobs(PROMPTS, WRONG)["sum"]))

    margin_before, chosen_before = margin(), sum(fresh.logprobs(PROMPTS, ANSWERS)["mean"])
    metrics = fresh.train(pairs, "macpo", {"lr": 1e-2, "epochs": 2, "batch_size": 4, "nll_weight": 1.0, "reference": "round_start"})
    assert margin() > margin_before + 1.0  # the DPO term: chosen rises against rejected
    assert sum(fresh.logprobs(PROMPTS, ANSWERS)["mean"]) > chosen_before  # the NLL term: the positive itself rises
    assert metrics["chosen_nll"] > 0 and metrics["accuracy"] >= 0.5


def test_macpo_nll_weight_is_what_lifts_the_positive(cache_dir, tiny_spec):
    """Without the DPO term's help (beta tiny), only nll_weight > 0 raises the positive's likelihood."""
    pairs = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(PROMPTS, ANSWERS, WRONG)] * 2
    gains = {}
    for weight in (0.0, 1.0):
        agent = Agent("w", tiny_spec(), cache_dir=cache_dir)
        before = sum(agent.logprobs(PROMPTS, ANSWERS)["mean"])
        agent.train(pairs, "macpo", {"lr": 1e-2, "epochs": 2, "batch_size": 4, "beta": 1e-4, "nll_weight": weight})
        gains[weight] = sum(agent.logprobs(PROMPTS, ANSWERS)["mean"]) - before
    assert gains[1.0] > gains[0.0] + 0.5, gains


def test_negative_adapter_diverges_while_positive_stays(fresh):
    fresh.train([{"prompt": p, "response": r} for p, r in zip(PROMPTS, ANSWERS)], "sft", {"lr": 1e-2, "batch_size": 4})
    positive_before = fresh.adapter_weights("default")
    neg = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, WRONG)]
    fresh.train(neg, "sft", {"lr": 1e-2, "epochs": 3, "batch_size": 4}, adapter="negative", init_from="default")
    positive_after = fresh.adapter_weights("default")
    negative = fresh.adapter_weights("negative")
    assert all(torch.equal(positive_before[k], positive_after[k]) for k in positive_before)
    assert any(not torch.equal(positive_after[k], negative[k]) for k in negative)
    assert sum(fresh.logprobs(PROMPTS, WRONG, adapter="negative")["mean"]) > sum(fresh.logprobs(PROMPTS, WRONG)["mean"])
    assert fresh.active_adapter == "default"


def test_save_load_round_trip_and_plain_peft_loading(fresh, cache_dir, tiny_spec, tmp_path):
    fresh.train([{"prompt": p, "response": r} for p, r in zip(PROMPTS, ANSWERS)], "sft", {"lr": 1e-2, "batch_size": 4})
    fresh.copy_adapter("default", "negative")
    fresh.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "default" / "adapter_model.safetensors").is_file()
    assert not list((tmp_path / "ckpt").rglob("*.bin")) and not list((tmp_path / "ckpt").rglob("*.pt"))
    other = Agent("other", tiny_spec(), cache_dir=cache_dir)
    other.load(tmp_path / "ckpt")
    assert other.logprobs(PROMPTS, ANSWERS)["sum"] == pytest.approx(fresh.logprobs(PROMPTS, ANSWERS)["sum"], abs=1e-5)
    assert set(other.adapters) == {"default", "negative"}

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(fresh.model_path), str(tmp_path / "ckpt" / "default"))
    ids = torch.tensor([fresh.encode_prompt("reverse: abc=")])
    with torch.no_grad():
        expected = fresh.model(input_ids=ids).logits
        got = plain(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5)


def test_truncation_never_empties_the_prompt(cache_dir, tiny_spec):
    short = Agent("short", tiny_spec(max_length=16), cache_dir=cache_dir)
    p, r = short._encode("reverse: " + "abcdefghij" * 3 + "=", "x" * 40)
    assert len(p) + len(r) == 16 and len(p) >= 8 and len(r) >= 1
    assert short.stats["truncated_prompts"] == 1


def test_errors_name_the_problem(agent, tmp_path):
    with pytest.raises(AgentError, match="no adapter 'nope'"):
        agent.generate(["sort: ab="], adapter="nope")
    with pytest.raises(AgentError, match="unknown objective"):
        agent.train([{"prompt": "a", "response": "b"}], "ppo")
    with pytest.raises(AgentError, match="lacks key 'rejected'"):
        agent.train([{"prompt": "a", "chosen": "b"}], "dpo")
    with pytest.raises(AgentError, match="does not exist"):
        resolve_model_path(str(tmp_path / "missing-model"), 0, None)
    with pytest.raises(AgentError, match="no training examples"):
        agent.train([], "sft")


def test_wspo_objective_reduces_its_loss(fresh):
    prompts, answers = PROMPTS * 4, ANSWERS * 4
    reference = fresh.token_logprobs(prompts, answers, adapter=None)
    # a weak "alignment shift" of +0.05 nats on every response token, to be matched 1/shift_scale times over
    examples = [{"prompt": p, "response": r, "weak_aligned_logps": [x + 0.05 for x in ref], "weak_ref_logps": ref}
                for p, r, ref in zip(prompts, answers, reference)]
    cfg = {"lr": 1e-2, "epochs": 1, "batch_size": 4, "shift_scale": 0.1}
    first = fresh.train(examples, "wspo", cfg)["loss"]
    for _ in range(4):
        last = fresh.train(examples, "wspo", cfg)["loss"]
    assert last < first * 0.75  # starts at 0.05**2 per token: nothing learned yet


def test_weak_logps_must_cover_the_response(fresh):
    bad = [{"prompt": "sort: ba=", "response": "ab", "weak_aligned_logps": [0.0], "weak_ref_logps": [0.0]}]
    with pytest.raises(AgentError, match="tokenizers must match"):
        fresh.train(bad, "wspo")


def test_non_finite_loss_skips_batches_and_says_so(fresh):
    weights = {n: p for n, p in fresh.model.named_parameters() if "lora_B.default" in n}
    with torch.no_grad():
        next(iter(weights.values())).fill_(float("nan"))
    examples = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, ANSWERS)]
    with pytest.raises(AgentError, match="every sft batch gave a non-finite loss"):
        fresh.train(examples, "sft", {"batch_size": 2})
    assert fresh.stats["nan_batches"] == 2


def test_dpo_from_an_sft_adapter_is_referenced_to_it_with_round_start(fresh):
    """WSPO's weak DPO: a new adapter copied from the SFT one and referenced to it starts at zero
    margin (loss ln 2 on its first step); referenced to the base it does not."""
    fresh.train([{"prompt": p, "response": a} for p, a in zip(PROMPTS, ANSWERS)], "sft", {"lr": 1e-2, "epochs": 2})
    pairs = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(PROMPTS, ANSWERS, WRONG)]
    first_step = {"lr": 1e-9, "max_steps": 1, "batch_size": len(pairs), "beta": 0.1}
    to_sft = fresh.train(pairs, "dpo", {**first_step, "reference": "round_start"}, adapter="aligned", init_from="default")
    to_base = fresh.train(pairs, "dpo", {**first_step, "reference": "base"}, adapter="aligned2", init_from="default")
    assert to_sft["loss"] == pytest.approx(math.log(2), abs=1e-5) and to_sft["reward_margin"] == pytest.approx(0, abs=1e-5)
    assert abs(to_base["reward_margin"]) > 1e-3


def test_gradient_checkpointing_trains_to_the_same_adapter(cache_dir, tiny_spec):
    """Recomputing activations in backward changes memory, not the update."""
    examples = [{"prompt": p, "response": a} for p, a in zip(PROMPTS, ANSWERS)]
    cfg = {"lr": 1e-2, "batch_size": 2, "epochs": 1, "max_steps": 2}
    plain = Agent("ckpt", tiny_spec(), cache_dir=cache_dir)
    recomputed = Agent("ckpt", tiny_spec(gradient_checkpointing=True), cache_dir=cache_dir)
    assert recomputed.model.base_model.model.is_activation_checkpointing
    assert plain.train(examples, "sft", cfg)["loss"] == pytest.approx(recomputed.train(examples, "sft", cfg)["loss"], abs=1e-6)
    for key, value in plain.adapter_weights().items():
        assert torch.allclose(recomputed.adapter_weights()[key], value, atol=1e-6), key
