"""Prompt templates: the hand-written ones, and `auto` (a model's own chat template) with
conversations kept as messages from the data file to the model."""
from __future__ import annotations

import json
import shutil

import pytest

from agents import Agent, AgentError
from agents.agent import resolve_model_path
from agents.templates import apply_template, as_messages, as_transcript
from tasks import TaskConfig, load_task
from tasks.types import TaskData

# a stand-in for a chat model's template: ChatML-like, opening with BOS as Llama's templates do
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CONVERSATION = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "sort: cba="},
                {"role": "assistant", "content": "abc"}, {"role": "user", "content": "reverse: abc="}]
RENDERED = "<s><|system|>be brief\n<|user|>sort: cba=\n<|assistant|>abc\n<|user|>reverse: abc=\n<|assistant|>"


@pytest.fixture(scope="module")
def chat_base(cache_dir, tmp_path_factory) -> str:
    """The tiny test base with a chat template in its tokenizer, as a real chat model carries one."""
    from transformers import AutoTokenizer

    target = tmp_path_factory.mktemp("chat-base") / "tiny-chat"
    shutil.copytree(resolve_model_path("tiny:test", 0, cache_dir), target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(target)
    return str(target)


def test_conversations_hh_transcripts_and_strings_become_messages_and_back():
    assert as_messages("Human: hi\n\nAssistant: hello\n\nHuman: sort: ba=\n\nAssistant:") == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "sort: ba="}]
    assert as_messages("sort: ba=") == [{"role": "user", "content": "sort: ba="}]
    assert as_messages(CONVERSATION) == CONVERSATION
    # the hand templates read a conversation as the HH transcript (system text opens the first turn)
    transcript = as_transcript(CONVERSATION)
    assert transcript == "Human: be brief\n\nsort: cba=\n\nAssistant: abc\n\nHuman: reverse: abc=\n\nAssistant:"
    assert apply_template("vicuna", CONVERSATION).endswith("USER: be brief\n\nsort: cba= ASSISTANT: abc USER: reverse: abc= ASSISTANT:")
    assert as_transcript([{"role": "user", "content": "sort: ba="}]) == "sort: ba="
    with pytest.raises(ValueError, match="unknown template 'chatml'.*'auto'"):
        apply_template("chatml", "x")


def test_auto_renders_the_model_s_own_chat_template(chat_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chat_base)
    assert apply_template("auto", CONVERSATION, tokenizer) == RENDERED
    # an HH transcript is rendered as the conversation it is, turn by turn
    hh = "Human: sort: cba=\n\nAssistant: abc\n\nHuman: reverse: abc=\n\nAssistant:"
    assert apply_template("auto", hh, tokenizer) == RENDERED.replace("<|system|>be brief\n", "")
    # a judge reads the answer as the closing assistant message
    assert apply_template("auto", "sort: ba=", tokenizer, response="ab") == "<s><|user|>sort: ba=\n<|assistant|>ab\n"


def test_an_agent_with_template_auto_scores_and_generates_what_its_chat_template_renders(chat_base, tiny_spec):
    auto = Agent("auto", tiny_spec(name_or_path=chat_base, template="auto", max_length=96), num_threads=1)
    plain = Agent("plain", tiny_spec(name_or_path=chat_base, template="plain", max_length=96), num_threads=1)
    assert auto.templated(CONVERSATION) == RENDERED
    ids = auto.encode_prompt(auto.templated(CONVERSATION))
    assert ids.count(auto.tokenizer.bos_token_id) == 1 and ids[0] == auto.tokenizer.bos_token_id  # BOS once
    # the same tokens as a plain agent fed the rendered text (which gets its BOS from encode_prompt)
    assert ids == plain.encode_prompt(RENDERED[len("<s>"):])
    got = auto.logprobs([CONVERSATION], ["cba"])["sum"][0]
    assert got == pytest.approx(plain.logprobs([RENDERED[len("<s>"):]], ["cba"])["sum"][0], abs=1e-6)
    assert got != pytest.approx(plain.logprobs([CONVERSATION], ["cba"])["sum"][0], abs=1e-3)  # templates differ
    sampling = {"max_new_tokens": 6, "temperature": 0.0}
    assert auto.generate([CONVERSATION], sampling) == plain.generate([RENDERED[len("<s>"):]], sampling)


def test_template_auto_without_a_chat_template_is_one_line(cache_dir, tiny_spec):
    with pytest.raises(AgentError, match=r"template: auto but the tokenizer of 'tiny:test' has no chat template; choose one of"):
        Agent("auto", tiny_spec(template="auto"), cache_dir=cache_dir, num_threads=1)


def test_conversational_rows_stay_messages_through_the_task_splits(tmp_path):
    rows = []
    for i in range(12):
        user = [{"role": "user", "content": f"reverse: {'abc'[: 1 + i % 3]}{i}="}]
        if i % 2:
            rows.append({"prompt": [{"role": "system", "content": "be brief"}, *user],
                         "chosen": [{"role": "assistant", "content": "yes"}], "rejected": [{"role": "assistant", "content": "no"}]})
        else:  # TRL's implicit-prompt form: the conversation before chosen's last answer
            rows.append({"chosen": [*user, {"role": "assistant", "content": "yes"}],
                         "rejected": [*user, {"role": "assistant", "content": "no"}]})
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(TaskConfig(name="trl", path=str(path), n_labelled=0, n_unlabelled=0, n_test=2, labelled_share=0.5), seed=0)
    prompts = [ex.prompt for ex in task.d_w] + list(task.q_w2s) + [ex.prompt for ex in task.test]
    assert len(prompts) == 12 and all(isinstance(p, list) and p[-1]["role"] == "user" for p in prompts)
    assert sum(p[0]["role"] == "system" for p in prompts) == 6
    # what a run writes to splits.json and a resumed run (or another node) reads back
    again = TaskData.from_dict(json.loads(json.dumps(task.to_dict())))
    assert again == task and again.q_w2s == task.q_w2s
