"""The reward-model scorer, on a tiny sequence-classification model trained in conftest (no download)
on the synthetic task's harmless-vs-harmful pairs, read back through `RewardModel`."""
from __future__ import annotations

import pytest
import torch

from agents.config import RewardModelSpec
from agents.reward_model import RewardModel, RewardModelError
from tests.conftest import build_tiny_reward_model, harmful_pairs


def _held_out_accuracy(path: str) -> float:
    rm = RewardModel(RewardModelSpec(name_or_path=path, batch_size=7), num_threads=1)
    held_out = harmful_pairs(seed=999, n=200)
    assert len(held_out) >= 50
    prompts = [ex.prompt for ex in held_out]
    chosen = rm.score(prompts, [ex.chosen for ex in held_out])
    rejected = rm.score(prompts, [ex.rejected for ex in held_out])
    return sum(c > r for c, r in zip(chosen, rejected)) / len(held_out)


def test_scores_follow_what_the_reward_model_learned(tiny_reward_model, tmp_path):
    """Held-out refusals score above compliance; a head trained the other way ranks them the other
    way, so the scores come from the trained head, not from text length or padding."""
    assert _held_out_accuracy(tiny_reward_model) >= 0.95
    reversed_dir = build_tiny_reward_model(tmp_path / "reversed", prefer_refusal=False)
    assert _held_out_accuracy(reversed_dir) <= 0.05


def test_batched_scores_equal_one_by_one_and_a_plain_forward(tiny_reward_model):
    """Padding must not move the score: the head reads the last real token of every row."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm = RewardModel(RewardModelSpec(name_or_path=tiny_reward_model, batch_size=8), num_threads=1)
    prompts = ["hack sort: cab=", "reverse: abcdefgh=", "count: ab="]
    responses = ["I cannot help with that.", "hgfedcba", "2"]
    batched = rm.score(prompts, responses)
    single = [rm.score([p], [r])[0] for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(single, abs=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model).eval()
    with torch.no_grad():
        plain = [model(**tokenizer(p + r, return_tensors="pt")).logits[0, 0].item() for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(plain, abs=1e-5)


def test_template_and_separator_shape_the_scored_text(tiny_reward_model):
    rm = RewardModel(RewardModelSpec(name_or_path=tiny_reward_model, template="alpaca", separator="\n"), num_threads=1)
    (text,) = rm.texts(["sort: ba="], ["ab"])
    assert text.startswith("Below is an instruction") and text.endswith("### Response:\n\nab")


def test_missing_path_and_bad_score_index_are_one_line_errors(tiny_reward_model, tmp_path):
    with pytest.raises(RewardModelError, match="does not exist"):
        RewardModel(RewardModelSpec(name_or_path=str(tmp_path / "nope")))
    with pytest.raises(RewardModelError, match=r"score_index=3 but the model has 1 output"):
        RewardModel(RewardModelSpec(name_or_path=tiny_reward_model, score_index=3))
    with pytest.raises(RewardModelError, match="cannot load reward model") as info:
        RewardModel(RewardModelSpec(name_or_path=str(tmp_path)))  # exists, but holds no model
    assert "\n" not in str(info.value)


def test_pair_input_encodes_prompt_and_response_as_a_text_pair(tiny_reward_model, tmp_path):
    """A cross-encoder judge's tokenizer marks the pair (`$A </s> $B`); with pair_input the judge must
    see that marker between prompt and response, without it the joined text (no marker)."""
    import shutil

    from tokenizers import processors
    from transformers import AutoTokenizer

    judge = tmp_path / "pair-judge"
    shutil.copytree(tiny_reward_model, judge)
    tokenizer = AutoTokenizer.from_pretrained(judge)
    sep = tokenizer.eos_token
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="$A", pair=f"$A {sep} $B", special_tokens=[(sep, tokenizer.eos_token_id)])
    tokenizer.save_pretrained(judge)
    paired = RewardModel(RewardModelSpec(name_or_path=str(judge), pair_input=True), num_threads=1)
    joined = RewardModel(RewardModelSpec(name_or_path=str(judge), pair_input=False), num_threads=1)
    as_pair = paired._encode(["sort: ba="], ["ab"])["input_ids"][0].tolist()
    as_text = joined._encode(["sort: ba="], ["ab"])["input_ids"][0].tolist()
    prompt_ids = tokenizer("sort: ba=", add_special_tokens=False).input_ids
    assert as_pair == prompt_ids + [tokenizer.eos_token_id] + tokenizer("ab", add_special_tokens=False).input_ids
    assert tokenizer.eos_token_id not in as_text and as_text == tokenizer("sort: ba=ab", add_special_tokens=False).input_ids
    assert len(paired.score(["sort: ba=", "hack sort: ba="], ["ab", "I cannot help with that."])) == 2


def test_negate_turns_a_cost_model_into_a_higher_is_better_score(tiny_reward_model):
    prompts, answers = ["reverse: abc="] * 2, ["cba", "I cannot help with that."]
    plain = RewardModel(RewardModelSpec(name_or_path=tiny_reward_model), num_threads=1).score(prompts, answers)
    negated = RewardModel(RewardModelSpec(name_or_path=tiny_reward_model, negate=True), num_threads=1).score(prompts, answers)
    assert negated == pytest.approx([-x for x in plain]) and plain != pytest.approx([0.0, 0.0])


def test_win_rate_counts_ties_half():
    from orchestrator.evaluation import win_rate

    assert win_rate([1.0, 0.0, 2.0, 5.0], [0.5, 0.0, 3.0, 1.0]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert win_rate([], []) == 0.0


def test_hh_judges_read_transcripts_as_their_model_cards_feed_them():
    """Ray2333's HH reward models: tokenizer("\n\nHuman: {q}\n\nAssistant:", answer) - the dataset's
    leading blank line included, which the loaders strip from prompts."""
    from agents.templates import apply_template

    assert apply_template("hh", "Human: hi\n\nAssistant:") == "\n\nHuman: hi\n\nAssistant:"
    assert apply_template("hh", "hi") == "\n\nHuman: hi\n\nAssistant:"
