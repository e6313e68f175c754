"""Prompt templates: how a task prompt is wrapped before the model sees it.

The MACPO paper uses the vicuna template for HH-RLHF and alpaca for PKU-SafeRLHF, the WSPO code
Qwen's chat template (`qwen`, ChatML as in LLaMA-Factory, with its default system line); the synthetic
task uses the prompt as it is (`plain`), since its tiny bases were pre-trained on raw prompts.

An HH-RLHF prompt is a transcript ("Human: ...\n\nAssistant: ...\n\nHuman: ...\n\nAssistant:"). A
template with its own role names renders it in them, as the MACPO authors' data does for vicuna
("USER: q1 ASSISTANT: a1 USER: q2 ASSISTANT:"), so the model never sees "Assistant: ASSISTANT:".

`auto` is the model's own chat template (`tokenizer.apply_chat_template`), as real chat models need:
a prompt is then a conversation of messages, whether the data gave one (TRL's conversational rows
stay `[{"role", "content"}, ...]` from the data file to here) or an HH transcript (its turns become
user / assistant messages) or a plain string (one user message).
"""
from __future__ import annotations

import re
from typing import Any

from tasks.types import Prompt

AUTO = "auto"

TEMPLATES: dict[str, str] = {
    "plain": "{prompt}",
    "vicuna": (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. USER: {prompt} ASSISTANT:"
    ),
    "alpaca": (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{prompt}\n\n### Response:\n"
    ),
    # what judges trained on HH-RLHF read: a Human/Assistant transcript opening with the dataset's
    # blank line, as their model cards feed them ("\n\nHuman: {prompt}\n\nAssistant:", then the answer)
    "hh": "\n\nHuman: {prompt}\n\nAssistant:",
    "qwen": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
}

# templates whose wrapper names the speakers: what opens a user turn and an assistant turn inside it
ROLES: dict[str, tuple[str, str]] = {
    "vicuna": (" USER: ", " ASSISTANT: "),
    "qwen": ("<|im_end|>\n<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
}
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")


def transcript_turns(prompt: str) -> list[tuple[str, str]] | None:
    """[(speaker, text), ...] of an HH transcript that ends on an open Assistant turn, else None."""
    if not prompt.startswith("Human:") or not prompt.rstrip().endswith("\n\nAssistant:"):
        return None
    marks = list(_HH_TURN.finditer(prompt.rstrip()))
    turns = [(m.group(1), prompt[m.end(): marks[i + 1].start() if i + 1 < len(marks) else None].strip())
             for i, m in enumerate(marks)]
    return turns[:-1]  # the last one is the open Assistant turn the template itself opens


def _in_roles(turns: list[tuple[str, str]], user: str, assistant: str) -> str:
    """The dialogue inside a wrapper that opens the first user turn and the final assistant turn itself."""
    return turns[0][1] + "".join((user if speaker == "Human" else assistant) + text for speaker, text in turns[1:])


def as_messages(prompt: Prompt) -> list[dict]:
    """The conversation a chat template renders: messages as given, an HH transcript's turns, or
    one user message."""
    if isinstance(prompt, list):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    turns = transcript_turns(prompt)
    if turns is None:
        return [{"role": "user", "content": prompt}]
    return [{"role": "user" if speaker == "Human" else "assistant", "content": text} for speaker, text in turns]


def as_transcript(prompt: Prompt) -> str:
    """A conversation as the HH transcript the hand templates read (system text opens the first
    user turn, since they have no system slot); a string prompt is returned as it is."""
    if isinstance(prompt, str):
        return prompt
    system = "\n\n".join(m["content"] for m in prompt if m["role"] == "system")
    turns = [m for m in prompt if m["role"] != "system"]
    if not turns or turns[0]["role"] != "user":
        turns = [{"role": "user", "content": ""}, *turns]
    if system:
        turns[0] = {"role": "user", "content": f"{system}\n\n{turns[0]['content']}".strip()}
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in turns) + "\n\nAssistant:"


def check_chat_template(name: str, tokenizer: Any, model: str) -> None:
    """`template: auto` needs a tokenizer that carries a chat template: say so in one line at load."""
    if name == AUTO and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"template: auto but the tokenizer of {model!r} has no chat template; "
                         f"choose one of {sorted(TEMPLATES)}")


def apply_template(name: str, prompt: Prompt, tokenizer: Any = None, response: str | None = None) -> str:
    """Wrap `prompt` in the template called `name` (an HH transcript in the template's roles).

    With `auto` the tokenizer's chat template renders the conversation and opens the assistant
    turn; given a `response` (a judge reading prompt and answer) it renders that answer as the
    closing assistant message instead."""
    if name == AUTO:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template: auto needs a tokenizer with a chat template")
        messages = as_messages(prompt)
        if response is not None:
            return tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": response}], tokenize=False)
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    try:
        template = TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r}; choose one of {sorted([*TEMPLATES, AUTO])}") from None
    prompt = as_transcript(prompt)
    if name == "hh" and transcript_turns(prompt):
        return "\n\n" + prompt  # the loaders strip the dataset's leading blank line; the judges were trained with it
    if name in ROLES and (turns := transcript_turns(prompt)):
        prompt = _in_roles(turns, *ROLES[name])
    return template.replace("{prompt}", prompt)
