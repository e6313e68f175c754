"""A sharded agent (FSDP2, gloo on CPU) computes what one rank computes: every objective's loss
and update, scoring, sampling, and a checkpoint plain peft loads (no Ray here: see
test_ray_pipeline and test_multinode for the rank actors)."""
from __future__ import annotations

import pytest
import torch

from tests import sharded_ranks


def test_two_ranks_compute_what_one_rank_computes_and_save_what_plain_peft_loads(cache_dir, tiny_spec, tmp_path):
    """One run per rank count (module-level state would be rebuilt on every xdist worker)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from agents.agent import Agent

    one, two = (sharded_ranks.run(n, tiny_spec(), cache_dir, tmp_path / f"ranks{n}") for n in (1, 2))
    trained = {"sft": "default", "dpo": "negative", "macpo": "ceiling", "wspo": "aligned"}
    for objective, adapter in trained.items():  # the uneven last batch included: a rank gets none of it
        assert one["steps"][objective] == two["steps"][objective] >= 2, objective
        assert two["loss"][objective] == pytest.approx(one["loss"][objective], abs=1e-5), objective
        for key, value in one["adapters"][adapter].items():
            assert torch.allclose(torch.tensor(two["adapters"][adapter][key]), torch.tensor(value), atol=1e-5), (objective, key)
    assert two["logprobs"] == pytest.approx(one["logprobs"], abs=1e-4)
    assert two["answers"] == one["answers"]  # sampled with one seed: the ranks decode in lockstep
    assert sorted(two["adapters"]) == sorted(one["adapters"]) == sorted(trained.values())

    checkpoint = tmp_path / "ranks2" / "checkpoint"  # written by rank 0 alone, in PEFT format
    agent = Agent("student", tiny_spec(), cache_dir=cache_dir)  # one rank resumes what two ranks saved
    agent.load(str(checkpoint))
    assert agent.logprobs(sharded_ranks.PROMPTS, sharded_ranks.GOOD, adapter="aligned")["sum"] == pytest.approx(two["logprobs"], abs=1e-4)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(agent.model_path), str(checkpoint / "aligned"))
    agent.model, agent._head_probe = plain, type(agent._head_probe)()  # the same scorer on plain peft's model
    assert agent.logprobs(sharded_ranks.PROMPTS, sharded_ranks.GOOD, adapter="default")["sum"] == pytest.approx(two["logprobs"], abs=1e-4)
