"""Real dataset loaders on small fixture files in each format (written here, never downloaded)."""
from __future__ import annotations

import json

import pytest

from tasks import TaskConfig, TaskDataError, load_task


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def hh_row(i, turns=1):
    history = "".join(f"\n\nHuman: question {i}.{t}\n\nAssistant: answer {i}.{t}" for t in range(turns - 1))
    prefix = f"{history}\n\nHuman: final question {i}\n\nAssistant:"
    return {"chosen": f"{prefix} good answer {i}", "rejected": f"{prefix} bad answer {i}"}


def pku_row(i, better=0, safer=1):
    return {"prompt": f"prompt {i}", "response_0": f"r0 {i}", "response_1": f"r1 {i}",
            "better_response_id": better, "safer_response_id": safer,
            "is_response_0_safe": False, "is_response_1_safe": True}


def test_hh_rlhf_multi_turn_split_into_prompt_and_final_response(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [hh_row(i, turns=1 + i % 3) for i in range(40)])
    task = load_task(TaskConfig(name="hh_rlhf", path=path), seed=0)
    assert (len(task.test), len(task.d_w), len(task.q_w2s)) == (4, 18, 18)
    example = next(ex for ex in task.d_w if ex.meta["turns"] == 3)
    assert example.prompt.startswith("Human: question") and example.prompt.endswith("Assistant:")
    assert example.prompt.count("Human:") == 3
    assert example.chosen.startswith("good answer") and example.rejected.startswith("bad answer")
    assert not task.has_rule_reward
    prompts = {ex.prompt for ex in task.d_w}
    assert not prompts & set(task.q_w2s) and not prompts & {ex.prompt for ex in task.test}


@pytest.mark.parametrize("preference, chosen_prefix", [("helpful", "r1"), ("safe", "r0")])
def test_pku_chooses_by_preference_key(tmp_path, preference, chosen_prefix):
    path = write_jsonl(tmp_path / "pku.jsonl", [pku_row(i, better=1, safer=0) for i in range(20)])
    task = load_task(TaskConfig(name="pku_saferlhf", path=path, preference=preference), seed=0)
    assert all(ex.chosen.startswith(chosen_prefix) for ex in task.d_w)
    assert task.d_w[0].meta == {"is_response_0_safe": False, "is_response_1_safe": True}


def test_trl_format_jsonl_and_parquet_with_messages(tmp_path):
    import datasets

    rows = [{"prompt": f"p{i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(20)]
    task = load_task(TaskConfig(name="trl", path=write_jsonl(tmp_path / "trl.jsonl", rows)), seed=1)
    assert all(ex.chosen.startswith("yes") for ex in task.d_w)
    msgs = [{"prompt": [{"role": "user", "content": f"q{i}"}],
             "chosen": [{"role": "assistant", "content": f"good {i}"}],
             "rejected": [{"role": "assistant", "content": f"bad {i}"}]} for i in range(20)]
    parquet = tmp_path / "trl.parquet"
    datasets.Dataset.from_list(msgs).to_parquet(str(parquet))
    task = load_task(TaskConfig(name="trl", path=str(parquet), n_labelled=5, n_unlabelled=3), seed=0)
    assert len(task.d_w) == 5 and len(task.q_w2s) == 3
    assert task.d_w[0].prompt.startswith("user: q") and task.d_w[0].chosen.startswith("good")


def test_malformed_row_names_file_and_line(tmp_path):
    rows = [hh_row(i) for i in range(10)]
    rows[6] = {"chosen": rows[6]["chosen"]}
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    with pytest.raises(TaskDataError, match=r"hh.jsonl line 7: missing key 'rejected'"):
        load_task(TaskConfig(name="hh_rlhf", path=path), seed=0)


def test_skip_mode_counts_what_it_drops(tmp_path):
    rows = [pku_row(i) for i in range(12)]
    rows[2]["better_response_id"] = 5
    rows[4] = {"prompt": "x"}
    path = write_jsonl(tmp_path / "pku.jsonl", rows)
    task = load_task(TaskConfig(name="pku_saferlhf", path=path, on_bad_row="skip"), seed=0)
    assert task.stats["skipped_rows"] == 2
    assert len(task.d_w) + len(task.q_w2s) + len(task.test) == 10
    assert any("line 3" in reason for reason in task.stats["skipped_examples"])


def test_too_long_prompts_are_counted(tmp_path):
    rows = [{"prompt": "p" * (5 if i % 2 else 50), "chosen": "a", "rejected": "b"} for i in range(20)]
    task = load_task(TaskConfig(name="trl", path=write_jsonl(tmp_path / "t.jsonl", rows), max_prompt_chars=10), seed=0)
    assert task.stats["too_long"] == 10


def test_empty_file_is_an_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TaskDataError, match="empty.jsonl: empty file"):
        load_task(TaskConfig(name="trl", path=str(empty)), seed=0)
