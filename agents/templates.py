"""Prompt templates: how a task prompt is wrapped before the model sees it.

The MACPO paper uses the vicuna template for HH-RLHF and alpaca for PKU-SafeRLHF; the synthetic
task uses the prompt as it is (`plain`), since its tiny bases were pre-trained on raw prompts.
"""
from __future__ import annotations

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
}


def apply_template(name: str, prompt: str) -> str:
    """Wrap `prompt` in the template called `name`."""
    try:
        template = TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r}; choose one of {sorted(TEMPLATES)}") from None
    return template.replace("{prompt}", prompt)
