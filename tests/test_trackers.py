"""Experiment trackers read back: TensorBoard's event files (its EventAccumulator) and the MLflow
run (its client) hold exactly the numbers of summary.json; W&B writes its offline run."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from orchestrator import load_config
from orchestrator.config import ConfigError, preflight
from orchestrator.trackers import LoggingConfig, check_installed, flatten, validate

needs_trackers = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("tensorboard", "mlflow", "wandb")),
                                    reason="install the trackers extra: pip install '.[trackers]'")


def test_bad_backend_and_missing_package_are_one_line(monkeypatch):
    with pytest.raises(ConfigError, match=r"logging.backends=\['jsonl', 'neptune'\]: unknown \['neptune'\]"):
        load_config(None, ["logging.backends=[jsonl, neptune]"])
    assert validate(LoggingConfig(wandb_mode="sometimes")).startswith("logging.wandb_mode='sometimes'")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert check_installed(LoggingConfig(backends=["jsonl", "mlflow"])) == (
        "logging.backends includes 'mlflow' but mlflow is not installed; pip install '.[trackers]'")
    with pytest.raises(ConfigError, match="mlflow is not installed"):
        preflight(load_config(None, ["logging.backends=[mlflow]"]))


def test_flatten_nests_with_slashes():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": {}}) == {"a/b": 1, "a/c": "[1, 2]", "d": "null", "e": "{}"}


@needs_trackers
@pytest.mark.ray
def test_tensorboard_mlflow_and_wandb_hold_the_summary(ray_cluster, cache_dir, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from orchestrator.api import run
    from tests.conftest import TINY_RUN

    run_dir = tmp_path / "run"
    secrets = ("AKIATRACKERKEY1EXAMPLE", "trackerS3cr3t", "hunter2pw")
    summary = run(load_config(None, [*TINY_RUN, "rounds=1", "teachers.count=1", f"output_dir={run_dir}",
                                     f"cache_dir={cache_dir}", "logging.backends=[jsonl, tensorboard, mlflow, wandb]",
                                     "logging.wandb_mode=offline", "logging.project=w2s-test",
                                     f"storage_options={{key: {secrets[0]}, secret: {secrets[1]}, "
                                     f"client_kwargs: {{endpoint_url: 'http://bob:{secrets[2]}@127.0.0.1:9'}}}}"]))
    expected = {(r["round"], agent, metric): value for r in summary["rounds"] for agent, values in r["eval"].items()
                for metric, value in values.items() if isinstance(value, float)}
    assert {(r, a, "reward") for r in (0, 1) for a in ("student", "teacher_0")} <= set(expected)

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    for (index, agent, metric), value in expected.items():
        points = {e.step: e.value for e in events.Scalars(f"eval/{agent}/{metric}")}
        assert points[index] == pytest.approx(value, abs=1e-6)  # TensorBoard keeps float32
    assert {"train/student/loss", "train/teacher_0/loss", "timing_s/train", "baseline/student_sft_gold/reward"} <= set(tags)
    # every optimizer step, as it happened, at the agent's run-wide step: loss, lr, gradient norm, tokens/s
    assert {"train/student/lr", "train/student/grad_norm", "train/student/tokens_per_s"} <= set(tags)
    steps = [e.step for e in events.Scalars("train/student/loss")]
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = sum(e["train"]["student"]["steps"] for e in logged if e["event"] == "stage" and "student" in e.get("train", {}))
    assert steps == list(range(1, trained + 1))  # one point per optimizer step, none missing
    rows = [e for e in logged if e["event"] == "train_step" and e["agent"] == "student"]
    assert [r["global_step"] for r in rows] == steps and all(r["lr"] > 0 and r["grad_norm"] >= 0 for r in rows)

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the run's default store is a file store
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    [mlflow_run] = client.search_runs([client.get_experiment_by_name("w2s-test").experiment_id])
    for (index, agent, metric), value in expected.items():
        history = {m.step: m.value for m in client.get_metric_history(mlflow_run.info.run_id, f"eval/{agent}/{metric}")}
        assert history[index] == pytest.approx(value, abs=1e-9)
    assert mlflow_run.data.params["seed"] == "0" and mlflow_run.data.params["teachers/count"] == "1"
    assert mlflow_run.info.status == "FINISHED"
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    # each round's answers to the first test prompts as a table: the rows of eval/round_<N>/<agent>.jsonl
    answers = [json.loads(line)["answer"] for line in (run_dir / "eval" / "round_1" / "student.jsonl").read_text().splitlines()]
    [text] = events.Tensors("samples/round_1/text_summary")
    shown = text.tensor_proto.string_val[0].decode()
    assert shown.startswith("| agent | prompt | answer | reference | score |") and shown.count("| student |") == 8
    assert all(f"| {answer.replace(chr(10), ' ')} |" in shown for answer in answers[:8])
    table = json.loads(Path(client.download_artifacts(mlflow_run.info.run_id, "samples/round_1.json", str(tmp_path))).read_text())
    student_rows = [row for row in table["data"] if row[table["columns"].index("agent")] == "student"]
    assert [row[table["columns"].index("answer")] for row in student_rows] == answers[:8]
    [wandb_table] = list((run_dir / "wandb").glob("offline-run-*/files/media/table/samples/round_1_*.table.json"))
    assert json.loads(wandb_table.read_text())["columns"] == ["agent", "prompt", "answer", "reference", "score"]
    assert json.loads((run_dir / "summary.json").read_text())["rounds"] == summary["rounds"]
    # credentials in the config reach no file of the run: config.yaml, metrics, TensorBoard, MLflow, W&B
    written = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(written) > 10 and not [str(p) for p in written for s in secrets if s.encode() in p.read_bytes()]
    assert mlflow_run.data.params["storage_options/secret"] == "<redacted>"
