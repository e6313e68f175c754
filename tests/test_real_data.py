"""tasks.real: preference loaders on fixture files written here (never downloaded)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tasks import (PreferenceExample, TaskConfig, TaskConfigError, TaskDataError,
                   load_task)
from tasks.real import BadRowError, load_rows, parse_hh, parse_pku, parse_trl

from tests.task_files import hh_row, pku_row, trl_row, write_compressed, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _datasets_cache_in_tmp(tmp_path, monkeypatch):
    """`datasets` caches every file it reads; keep the tests' fixture files out of the user's cache."""
    try:
        import datasets.config
    except ImportError:  # synthetic tests need no datasets
        return
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")




# ----------------------------------------------------------------------------- real: parsers


def test_parse_hh_multi_turn():
    row = hh_row(3, turns=3)
    ex = parse_hh(row, TaskConfig(name="hh_rlhf"))
    assert ex.prompt == "Human: q3.0\n\nAssistant: a3.0\n\nHuman: q3.1\n\nAssistant: a3.1\n\nHuman: last 3\n\nAssistant:"
    assert (ex.chosen, ex.rejected, ex.meta) == ("good 3", "bad 3", {"turns": 3})


@pytest.mark.parametrize("row, reason", [
    ({"chosen": "\n\nHuman: hi\n\nAssistant: a"}, "missing key 'rejected'"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": None}, "missing key 'rejected'"),
    ({"chosen": 5, "rejected": "x"}, "key 'chosen' is int"),
    ({"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hi\n\nAssistant: b"}, "no Assistant turn in 'chosen'"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: yo\n\nAssistant: b"}, "differ before"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant:  ", "rejected": "\n\nHuman: hi\n\nAssistant: b"}, "empty final response in 'chosen'"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: a\n\nHuman: more", "rejected": "\n\nHuman: hi\n\nAssistant: b"},
     "ends with a Human turn"),
])
def test_parse_hh_bad_rows(row, reason):
    with pytest.raises(BadRowError, match=reason):
        parse_hh(row, TaskConfig(name="hh_rlhf"))


def test_parse_pku_preference_and_bad_ids():
    helpful = parse_pku(pku_row(1, better=1, safer=0), TaskConfig(name="pku_saferlhf", preference="helpful"))
    safe = parse_pku(pku_row(1, better=1, safer=0), TaskConfig(name="pku_saferlhf", preference="safe"))
    assert (helpful.chosen, helpful.rejected) == ("r1 1", "r0 1") and (safe.chosen, safe.rejected) == ("r0 1", "r1 1")
    assert helpful.meta == {"is_response_0_safe": True, "is_response_1_safe": False}
    for bad in (2, -1, "1", True, 1.0):
        with pytest.raises(BadRowError, match="better_response_id"):
            parse_pku(pku_row(1, better=bad), TaskConfig(name="pku_saferlhf"))
    with pytest.raises(BadRowError, match="empty response in 'response_0'"):
        parse_pku({**pku_row(1), "response_0": " "}, TaskConfig(name="pku_saferlhf"))


def test_parse_trl_strings_messages_and_implicit_prompt():
    cfg = TaskConfig(name="trl")
    assert parse_trl(trl_row(1), cfg) == PreferenceExample("p1", "yes 1", "no 1")
    convo = {"prompt": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}],
             "chosen": [{"role": "assistant", "content": "draft"}, {"role": "user", "content": "again"},
                        {"role": "assistant", "content": "hello"}],
             "rejected": [{"role": "assistant", "content": "go away"}]}
    ex = parse_trl(convo, cfg)
    # a conversation stays messages (a chat template renders it: template auto)
    assert (ex.prompt, ex.chosen, ex.rejected) == (convo["prompt"], "hello", "go away")
    user = [{"role": "user", "content": "2+2?"}]
    implicit = {"chosen": user + [{"role": "assistant", "content": "4"}], "rejected": user + [{"role": "assistant", "content": "5"}]}
    assert parse_trl(implicit, cfg) == PreferenceExample(user, "4", "5")
    for row, reason in [
        ({"prompt": "p", "chosen": "a"}, "missing key 'rejected'"),
        ({"chosen": "a", "rejected": "b"}, "missing key 'prompt'"),
        ({"prompt": "p", "chosen": [{"role": "user", "content": "x"}], "rejected": "b"}, "no assistant message"),
        ({"prompt": "p", "chosen": [{"role": "assistant", "content": 3}], "rejected": "b"}, "message 0"),
        ({"prompt": "p", "chosen": {"text": "a"}, "rejected": "b"}, "key 'chosen' is dict"),
        ({"prompt": "p", "chosen": "  ", "rejected": "b"}, "empty response in 'chosen'"),
        ({"prompt": "", "chosen": "a", "rejected": "b"}, "empty prompt"),
        ({"chosen": user + [{"role": "assistant", "content": "4"}],
          "rejected": [{"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]}, "differ before"),
    ]:
        with pytest.raises(BadRowError, match=reason):
            parse_trl(row, cfg)


# ----------------------------------------------------------------------------- real: files


def test_hh_jsonl_file_multi_turn(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [hh_row(i, turns=1 + i % 3) for i in range(30)])
    task = load_task(TaskConfig(name="hh_rlhf", path=path, n_labelled=0, n_unlabelled=0, n_test=0), seed=0)
    assert (len(task.test), len(task.d_w), len(task.q_w2s)) == (3, 13, 14)
    assert [ex.prompt for ex in task.test] == [parse_hh(hh_row(i, 1 + i % 3), TaskConfig()).prompt for i in (27, 28, 29)]
    multi = [ex for ex in task.d_w if ex.meta["turns"] == 3]
    assert multi and all(ex.prompt.startswith("Human: q") and ex.prompt.endswith("\n\nAssistant:") for ex in multi)
    assert all(ex.chosen.startswith("good") and ex.rejected.startswith("bad") for ex in task.d_w + task.test)
    assert not task.has_rule_reward and task.name == "hh_rlhf"
    assert task.stats["sizes"] == {"d_w": 13, "q_w2s": 14, "test": 3}
    assert task.stats["skipped_rows"] == 0 and task.stats["overlap"] == {"d_w_test": 0, "q_w2s_test": 0, "d_w_q_w2s": 0}


def test_real_splits_deterministic_capped_and_test_fixed(tmp_path):
    path = write_jsonl(tmp_path / "trl.jsonl", [trl_row(i) for i in range(50)])
    cfg = TaskConfig(name="trl", path=path, n_labelled=10, n_unlabelled=7, n_test=3)
    a, b, c = load_task(cfg, 0), load_task(cfg, 0), load_task(cfg, 1)
    assert a == b
    assert (len(a.d_w), len(a.q_w2s), len(a.test)) == (10, 7, 3)
    assert a.d_w != c.d_w and a.test == c.test  # seed moves the training halves, never the test
    held_out = {f"p{i}" for i in range(45, 50)}  # last 10% of the file
    assert {ex.prompt for ex in a.test} <= held_out
    train_prompts = {ex.prompt for ex in a.d_w} | set(a.q_w2s)
    assert not train_prompts & held_out and not {ex.prompt for ex in a.d_w} & set(a.q_w2s)


def test_pku_jsonl_preference_switch(tmp_path):
    path = write_jsonl(tmp_path / "pku.jsonl", [pku_row(i, better=i % 2, safer=1 - i % 2) for i in range(20)])
    helpful = load_task(TaskConfig(name="pku_saferlhf", path=path), 0)
    safe = load_task(TaskConfig(name="pku_saferlhf", path=path, preference="safe"), 0)
    for ex_h, ex_s in zip(helpful.d_w, safe.d_w):
        i = int(ex_h.prompt.split()[1])
        assert ex_h.chosen == f"r{i % 2} {i}" and ex_s.chosen == f"r{1 - i % 2} {i}"
        assert ex_h.chosen == ex_s.rejected


def test_trl_parquet_and_json_array(tmp_path):
    import datasets

    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}],
             "chosen": [{"role": "assistant", "content": f"good {i}"}],
             "rejected": [{"role": "assistant", "content": f"bad {i}"}]} for i in range(20)]
    parquet = tmp_path / "trl.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(parquet))
    task = load_task(TaskConfig(name="trl", path=str(parquet), n_labelled=5, n_unlabelled=4), 0)
    assert (len(task.d_w), len(task.q_w2s), len(task.test)) == (5, 4, 2)
    assert all(ex.prompt == [{"role": "user", "content": f"q{ex.chosen.split()[1]}"}] and ex.rejected.startswith("bad")
               for ex in task.d_w)

    array = [trl_row(i) for i in range(10)]
    array[4] = {"prompt": "p4", "chosen": "yes"}
    path = tmp_path / "trl.json"
    path.write_text(json.dumps(array, indent=2))
    with pytest.raises(TaskDataError, match=r"trl\.json row 5: missing key 'rejected'"):
        load_task(TaskConfig(name="trl", path=str(path)), 0)


def test_malformed_row_names_file_and_physical_line(tmp_path):
    rows = [hh_row(i) for i in range(10)]
    rows[5] = {"chosen": rows[5]["chosen"]}  # 6th row; a blank line before it makes it line 7
    path = write_jsonl(tmp_path / "hh.jsonl", rows, blank_after=2)
    with pytest.raises(TaskDataError) as err:
        load_task(TaskConfig(name="hh_rlhf", path=path), 0)
    assert str(err.value) == f"{path} line 7: missing key 'rejected'"


def test_broken_json_line_error_and_skip(tmp_path):
    rows = [json.dumps(trl_row(i)) for i in range(12)]
    rows[3] = '{"prompt": "p3", "chosen": '
    rows[8] = '["not", "an", "object"]'
    path = write_jsonl(tmp_path / "broken.jsonl", rows)
    with pytest.raises(TaskDataError, match=r"broken\.jsonl line 4: not a JSON object"):
        load_task(TaskConfig(name="trl", path=path), 0)
    task = load_task(TaskConfig(name="trl", path=path, on_bad_row="skip"), 0)
    assert task.stats["skipped_rows"] == 2
    assert len(task.d_w) + len(task.q_w2s) + len(task.test) == 10
    assert task.stats["skipped_examples"][0].startswith(f"{path} line 4:")
    assert "line 9" in task.stats["skipped_examples"][1]


def test_skip_mode_counts_every_dropped_row(tmp_path):
    rows = [pku_row(i) for i in range(30)]
    rows[2]["better_response_id"] = 7
    rows[5] = {"prompt": "only a prompt"}
    rows[9]["response_1"] = ""
    rows[12]["prompt"] = "x" * 500
    path = write_jsonl(tmp_path / "pku.jsonl", rows)
    with pytest.raises(TaskDataError, match=r"pku\.jsonl line 3: better_response_id=7, expected 0 or 1"):
        load_task(TaskConfig(name="pku_saferlhf", path=path, max_prompt_chars=100), 0)
    task = load_task(TaskConfig(name="pku_saferlhf", path=path, on_bad_row="skip", max_prompt_chars=100,
                                n_labelled=0, n_unlabelled=0, n_test=0), 0)
    assert task.stats["skipped_rows"] == 3 and task.stats["too_long"] == 1
    assert task.stats["sources"][path] == {"rows": 30, "used": 26, "skipped_rows": 3, "too_long": 1}
    assert len(task.d_w) + len(task.q_w2s) + len(task.test) == 26
    reasons = task.stats["skipped_examples"]
    assert [r.split(": ", 1)[0] for r in reasons] == [f"{path} line {n}" for n in (3, 6, 10)]
    json.dumps(task.stats)


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p"}] * 4)
    with pytest.raises(TaskDataError, match=r"bad\.jsonl: no usable rows \(4 read, skipped 4 bad"):
        load_task(TaskConfig(name="trl", path=path, on_bad_row="skip"), 0)


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(TaskDataError, match=r"empty\.jsonl: empty file"):
        load_task(TaskConfig(name="trl", path=str(path)), 0)


def test_missing_file_and_too_few_rows(tmp_path):
    missing = str(tmp_path / "gone.jsonl")
    with pytest.raises(TaskConfigError, match="gone.jsonl"):
        load_rows(missing, "train")
    with pytest.raises(TaskConfigError, match="gone.jsonl"):
        load_task(TaskConfig(name="trl", path=missing), 0)
    two = write_jsonl(tmp_path / "two.jsonl", [trl_row(0), trl_row(1)])
    with pytest.raises(TaskDataError, match="2 usable rows; need at least 3"):
        load_task(TaskConfig(name="trl", path=two), 0)


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_compressed_json_lines_like_hh_rlhf_files(tmp_path, suffix):
    """HH-RLHF ships train.jsonl.gz; every compression `datasets` reads is accepted, and a broken line
    inside the archive is still named by file and line."""
    path = write_compressed(tmp_path / f"train.jsonl{suffix}", [hh_row(i) for i in range(20)])
    task = load_task(TaskConfig(name="hh_rlhf", path=path, n_labelled=0, n_unlabelled=0, n_test=0), seed=0)
    assert task.stats["sizes"] == {"d_w": 9, "q_w2s": 9, "test": 2}
    assert all(ex.chosen.startswith("good") for ex in task.d_w)
    broken = write_compressed(tmp_path / f"broken.jsonl{suffix}", [hh_row(0), hh_row(1), "{not json", hh_row(3)])
    with pytest.raises(TaskDataError, match=rf"broken\.jsonl\{suffix} line 3: not a JSON object"):
        load_task(TaskConfig(name="hh_rlhf", path=broken), seed=0)


def test_csv_and_arrow_files(tmp_path):
    import datasets

    rows = [trl_row(i) for i in range(12)]
    csv = tmp_path / "trl.csv"
    datasets.Dataset.from_list(rows).to_csv(str(csv), index=False)
    arrow_dir = tmp_path / "arrow"
    datasets.Dataset.from_list(rows).save_to_disk(str(arrow_dir))
    arrow = next(arrow_dir.glob("*.arrow"))
    for path in (csv, arrow):
        task = load_task(TaskConfig(name="trl", path=str(path), n_labelled=0, n_unlabelled=0, n_test=0), seed=0)
        assert task.stats["sizes"] == {"d_w": 5, "q_w2s": 6, "test": 1}, path.suffix


def test_corrupt_archive_and_unsupported_type_are_one_line(tmp_path):
    corrupt = tmp_path / "train.jsonl.gz"
    corrupt.write_bytes(b"this is not gzip data")
    with pytest.raises(TaskDataError, match=r"train\.jsonl\.gz: cannot be decompressed as gzip"):
        load_task(TaskConfig(name="hh_rlhf", path=str(corrupt)), seed=0)
    text = tmp_path / "train.txt"
    text.write_text("hello\n")
    with pytest.raises(TaskConfigError, match=r"task\.path=.*train\.txt.*unsupported file type"):
        TaskConfig(name="hh_rlhf", path=str(text)).validate()


def test_subset_folder_of_a_dataset_directory(tmp_path):
    """Anthropic/hh-rlhf keeps its subsets in folders (helpful-base/, harmless-base/ with
    train.jsonl.gz and test.jsonl.gz); `task.data_dir` picks one, as the MACPO paper runs them."""
    root = tmp_path / "hh-rlhf"
    for subset, offset in (("helpful-base", 0), ("harmless-base", 100)):
        (root / subset).mkdir(parents=True)
        write_compressed(root / subset / "train.jsonl.gz", [hh_row(offset + i) for i in range(10)])
        write_compressed(root / subset / "test.jsonl.gz", [hh_row(offset + 50 + i) for i in range(4)])
    task = load_task(TaskConfig(name="hh_rlhf", path=str(root), data_dir="harmless-base", n_labelled=0,
                                n_unlabelled=0, n_test=0), seed=0)
    assert task.stats["sizes"] == {"d_w": 5, "q_w2s": 5, "test": 4}
    assert all(int(ex.chosen.split()[-1]) >= 100 for ex in task.d_w + task.test)
    assert set(task.stats["sources"]) == {f"{root}:harmless-base[train]", f"{root}:harmless-base[test]"}
    with pytest.raises(TaskConfigError, match=r"task\.data_dir='harmless-base': applies to hub datasets"):
        TaskConfig(name="hh_rlhf", path=str(root / "helpful-base" / "train.jsonl.gz"), data_dir="harmless-base").validate()
    with pytest.raises(TaskDataError, match=r"hh-rlhf:no-such-base'? split 'train' cannot be loaded"):
        load_task(TaskConfig(name="hh_rlhf", path=str(root), data_dir="no-such-base"), seed=0)


def test_local_dataset_directory_uses_its_splits(tmp_path):
    """A directory is loaded like a hub id (`load_dataset(path, split=...)`): train and test splits."""
    folder = tmp_path / "ds"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [trl_row(i) for i in range(8)])
    write_jsonl(folder / "test.jsonl", [{"prompt": f"t{i}", "chosen": "y", "rejected": "n"} for i in range(5)])
    task = load_task(TaskConfig(name="trl", path=str(folder), n_labelled=0, n_unlabelled=0, n_test=0), 0)
    assert sorted(ex.prompt for ex in task.test) == [f"t{i}" for i in range(5)]
    assert len(task.d_w) == 4 and len(task.q_w2s) == 4
    assert set(task.stats["sources"]) == {f"{folder}[train]", f"{folder}[test]"}
    capped = load_task(TaskConfig(name="trl", path=str(folder), n_test=2), 5)
    assert len(capped.test) == 2 and capped.test == load_task(TaskConfig(name="trl", path=str(folder), n_test=2), 6).test


def test_test_cap_samples_across_the_split_not_its_head(tmp_path):
    """Hub test splits are concatenated sub-sets (HH: harmless-base first): the cap must sample."""
    folder = tmp_path / "ds"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [trl_row(i) for i in range(4)])
    write_jsonl(folder / "test.jsonl", [{"prompt": f"t{i:03d}", "chosen": "y", "rejected": "n"} for i in range(200)])
    test = [ex.prompt for ex in load_task(TaskConfig(name="trl", path=str(folder), n_test=20), 0).test]
    assert len(set(test)) == 20 and test == sorted(test)  # file order kept
    assert max(int(p[1:]) for p in test) >= 100  # reaches the second half of the split
    with pytest.raises(TaskDataError, match="split 'validation' cannot be loaded: Unknown split"):
        load_task(TaskConfig(name="trl", path=str(folder), test_split="validation"), 0)


@pytest.mark.skipif(os.environ.get("HF_DATASETS_OFFLINE") != "1", reason="would reach the network")
def test_unavailable_hub_id_is_one_clear_error():
    with pytest.raises(TaskDataError, match="dataset 'w2s-tests-nobody/no-such-dataset' split 'train'"):
        load_task(TaskConfig(name="trl", path="w2s-tests-nobody/no-such-dataset"), 0)


def test_too_long_prompts_are_counted(tmp_path):
    rows = [{"prompt": "p" * (5 if i % 2 else 50), "chosen": "a", "rejected": "b"} for i in range(20)]
    task = load_task(TaskConfig(name="trl", path=write_jsonl(tmp_path / "t.jsonl", rows), max_prompt_chars=10), seed=0)
    assert task.stats["too_long"] == 10


def test_hh_transcripts_render_in_the_vicuna_roles():
    """As the MACPO authors' data: HH's Human/Assistant turns become USER/ASSISTANT inside the vicuna
    wrapper, with no "Assistant: ASSISTANT:" and no Human: left; other templates keep the transcript."""
    from agents.templates import apply_template

    prompt = parse_hh(hh_row(7, turns=3), TaskConfig()).prompt
    text = apply_template("vicuna", prompt)
    assert text.endswith("USER: q7.0 ASSISTANT: a7.0 USER: q7.1 ASSISTANT: a7.1 USER: last 7 ASSISTANT:")
    assert "Human:" not in text and "Assistant:" not in text and text.count("USER:") == 3
    assert apply_template("plain", prompt) == prompt
    assert apply_template("vicuna", "reverse: abc").endswith("USER: reverse: abc ASSISTANT:")
