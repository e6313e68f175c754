"""`python -m orchestrator.export`: a run's trained agent as a clean PEFT adapter or a merged model,
with a model card, that plain peft / transformers load and that computes what the agent computed."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from orchestrator.export import main

PROMPTS = ["reverse: abc=", "sort: dcba="]
ANSWERS = ["cba", "abcd"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache_dir, tiny_spec):
    """A run directory as a run leaves it: config, summary, a committed round with a trained agent."""
    from agents.agent import Agent
    from orchestrator import load_config
    from orchestrator.run_dir import STATE_FILE

    root = tmp_path_factory.mktemp("export") / "run-1"
    config = load_config(None, ["rounds=1", f"cache_dir={cache_dir}"]).to_dict()
    agent = Agent("student", tiny_spec(), cache_dir=cache_dir)
    agent.train([{"prompt": p, "response": a} for p, a in zip(PROMPTS, ANSWERS)], "sft", {"lr": 5e-2, "epochs": 3})
    agent.copy_adapter("default", "negative")
    checkpoint = root / "checkpoints" / "round_1"
    agent.save(checkpoint / "student")
    (checkpoint / STATE_FILE).write_text("{}")
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "summary.json").write_text(json.dumps({"rounds": [{"round": 1, "eval": {"student": {"reward": 0.75, "n": 2}}}]}))
    return root, agent.logprobs(PROMPTS, ANSWERS)["sum"]


def test_the_exported_adapter_loads_in_plain_peft_and_scores_as_the_agent(run_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from agents.agent import Agent

    root, expected = run_dir
    out = tmp_path / "adapter"
    assert main([str(root), "--output", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "student (default) after round 1 of a MACPO run" in card and "| reward | 0.75 |" in card
    config = json.loads((out / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, str(out))
    scorer = Agent("scorer", {"name_or_path": "tiny:test", "template": "plain", "max_length": 48}, cache_dir=None)
    scorer.model, scorer._head_probe = model, type(scorer._head_probe)()
    assert scorer.logprobs(PROMPTS, ANSWERS)["sum"] == pytest.approx(expected, abs=1e-4)


def test_merge_writes_a_plain_transformers_model_with_the_same_outputs(run_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root, _ = run_dir
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    assert main([str(root), "--output", str(adapter)]) == 0
    assert main([str(root), "--merge", "--output", str(merged)]) == 0
    assert not (merged / "adapter_config.json").exists() and (merged / "tokenizer_config.json").exists()
    base_path = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        want = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(adapter))(ids).logits
        got = AutoModelForCausalLM.from_pretrained(str(merged))(ids).logits
    assert torch.allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("args, message", [
    (["--round", "3"], "round 3 has no checkpoint; kept rounds: [1]"),
    (["--agent", "teacher_9"], "round 1 has no agent 'teacher_9'"),
    (["--adapter", "aligned"], "student at round 1 has no adapter 'aligned'; it has ['default', 'negative']"),
])
def test_what_is_not_there_is_one_line_and_exit_2(run_dir, tmp_path, capsys, args, message):
    root, _ = run_dir
    assert main([str(root), *args, "--output", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err.strip().splitlines()[0]
    assert not (tmp_path / "x").exists()
