"""tasks.config and tasks.types: validation that names the key, JSON round trips, light imports."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import (PreferenceExample, TaskConfig, TaskConfigError, TaskData, TaskDataError,
                   load_task)
from tasks.synthetic import (make_task)

from tests.task_files import pku_row, trl_row, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- config and types


@pytest.mark.parametrize("changes, message", [
    ({"harmful_fraction": 1.5}, "task.harmful_fraction=1.5: must be in [0, 1]"),
    ({"harmful_fraction": -0.1}, "task.harmful_fraction=-0.1"),
    ({"name": "mnist"}, "task.name='mnist'"),
    ({"ops": ["reverse", "upper"]}, "task.ops=['reverse', 'upper']"),
    ({"ops": []}, "task.ops=[]"),
    ({"n_labelled": -1}, "task.n_labelled=-1: must be >= 0"),
    ({"n_unlabelled": -2}, "task.n_unlabelled=-2"),
    ({"n_test": 0}, "task.n_test=0"),  # synthetic splits cannot be empty
    ({"n_test": 2.5}, "task.n_test=2.5: must be an integer"),
    ({"min_len": 9, "max_len": 3}, "task.min_len=9"),
    ({"alphabet": "aB"}, "task.alphabet='aB'"),
    ({"preference": "harmless"}, "task.preference='harmless'"),
    ({"on_bad_row": "ignore"}, "task.on_bad_row='ignore'"),
    ({"max_prompt_chars": -5}, "task.max_prompt_chars=-5"),
    ({"name": "hh_rlhf"}, "task.path=None"),
    ({"name": "trl", "path": "/no/such/file.jsonl"}, "task.path='/no/such/file.jsonl': file not found"),
])
def test_task_config_errors_name_key_and_value(changes, message):
    with pytest.raises(TaskConfigError) as err:
        TaskConfig(**changes).validate()
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_task_config_accepts_defaults_and_real_settings(tmp_path):
    TaskConfig().validate()
    TaskConfig(name="trl", path=write_jsonl(tmp_path / "x.jsonl", [trl_row(0)]), n_labelled=0, n_unlabelled=0,
               n_test=0, preference="safe", on_bad_row="skip").validate()
    TaskConfig(name="hh_rlhf", path="Anthropic/hh-rlhf").validate()  # a hub id is not checked offline
    csv = tmp_path / "x.tsv"
    csv.write_text("a\tb\n")
    with pytest.raises(TaskConfigError, match="unsupported file type"):
        TaskConfig(name="trl", path=str(csv)).validate()


def test_task_data_round_trips_through_json(tmp_path):
    synthetic = make_task(TaskConfig(n_labelled=10, n_unlabelled=10, n_test=10), 0)
    real = load_task(TaskConfig(name="pku_saferlhf", path=write_jsonl(tmp_path / "p.jsonl", [pku_row(i) for i in range(20)])), 0)
    for task in (synthetic, real):
        again = TaskData.from_dict(json.loads(json.dumps(task.to_dict())))
        assert again == task and again.to_dict() == task.to_dict()
        assert [ex.meta for ex in again.d_w] == [ex.meta for ex in task.d_w]
    changed = PreferenceExample("p", "a", "b", {"op": "sort"})
    assert changed != PreferenceExample("p", "a", "b", {"op": "reverse"})  # meta counts in equality
    assert hash(changed) == hash(PreferenceExample("p", "a", "b"))
    with pytest.raises(TaskDataError, match="missing key 'q_w2s'"):
        TaskData.from_dict({"name": "x", "d_w": [], "test": [], "has_rule_reward": True})


def test_tasks_imports_nothing_heavy():
    code = ("import sys, tasks; tasks.load_task(tasks.TaskConfig(n_labelled=2, n_unlabelled=2, n_test=2), 0); "
            "bad = [m for m in ('datasets', 'torch', 'agents', 'orchestrator', 'ray') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
