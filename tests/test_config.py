"""Run configuration: defaults, overrides with type conversion, teacher cycling, one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import CONFIG_DIR, ConfigError, RunConfig, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_default_config_loads_typed():
    cfg = load_config()
    assert cfg.algorithm == "macpo" and cfg.rounds >= 2 and cfg.teachers.count == 3
    assert cfg.student.name_or_path.startswith("tiny:")
    assert isinstance(cfg.train.student_macpo.lr, float)


def test_overrides_convert_types():
    cfg = load_config(overrides=["rounds=1", "teachers.count=5", "ablation.hard_negatives=false",
                                 "train.student_macpo.beta=0.5", "train.student_sft.lr=3e-4", "algorithm=wspo", "output_dir=/tmp/x", "seed=3"])
    assert cfg.rounds == 1 and cfg.teachers.count == 5 and cfg.ablation.hard_negatives is False
    assert cfg.train.student_sft.lr == 3e-4
    assert cfg.train.student_macpo.beta == 0.5 and cfg.algorithm == "wspo" and cfg.output_dir == "/tmp/x"


def test_teacher_count_cycles_specs_with_distinct_seeds():
    cfg = load_config(overrides=["teachers.count=7"])
    specs = cfg.teachers.resolved()
    assert len(specs) == 7
    listed = len(cfg.teachers.specs)
    assert [s.name_or_path for s in specs] == [cfg.teachers.specs[i % listed].name_or_path for i in range(7)]
    assert len({(s.name_or_path, s.seed) for s in specs}) == 7
    assert len(load_config(overrides=["teachers.count=1"]).teachers.resolved()) == 1


@pytest.mark.parametrize("override, key", [
    ("rounds=-1", "rounds=-1"),
    ("teachers.count=0", "teachers.count=0"),
    ("train.student_macpo.beta=0", "train.student_macpo.beta=0.0"),
    ("train.teacher_sft.beta=-1", "train.teacher_sft.beta=-1.0"),
    ("roundz=2", "roundz: unknown key"),
    ("student.lora.rank=4", "student.lora.rank: unknown key"),
    ("rounds=two", "rounds='two'"),
    ("ablation.teachers_learn=maybe", "ablation.teachers_learn='maybe'"),
    ("algorithm=ppo", "algorithm='ppo'"),
    ("task.name=hh_rlhf", "task"),
    ("student.name_or_path=/no/such/model", "student.name_or_path='/no/such/model'"),
    ("sampling.top_p=0", "sampling.top_p=0.0"),
    ("train.student_macpo.reference=policy", "train.student_macpo.reference='policy'"),
    ("reward_model.name_or_path=/no/such/rm", "reward_model.name_or_path='/no/such/rm'"),
    ("reward_model.batch_size=0", "reward_model.batch_size=0"),
    ("reward_model.name_or_path=tiny:strong", "reward_model.name_or_path='tiny:strong'"),
    ("reward_model.template=chatml", "reward_model.template='chatml'"),
    ("resources.reward_model.num_gpus=-1", "resources.reward_model.num_gpus=-1.0"),
    ("resources.teacher.nice=-5", "resources.teacher.nice=-5"),
    ("resources.teacher.scheduler=realtime", "resources.teacher.scheduler='realtime'"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: 1\nteachers: [unclosed\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(bad)


@pytest.mark.parametrize("name", ["default", "wspo_default", "macpo_hh_helpful", "macpo_hh_harmless", "macpo_pku_saferlhf",
                                  "wspo_hh_rlhf", "wspo_ultrafeedback"])
def test_shipped_configs_load_and_resolve(name):
    cfg = load_config(CONFIG_DIR / f"{name}.yaml")
    assert cfg.teachers.resolved()
    if name.startswith("macpo_"):
        assert cfg.resources.teacher.num_gpus >= 1 and all(s.backend == "vllm" for s in cfg.teachers.specs)
        # the 70B student: 8 FSDP2 ranks (not device_map), decoding with transformers, each rank a
        # whole share of every training batch
        assert cfg.resources.student.ranks == 8 == cfg.resources.student.num_gpus and not cfg.student.device_map
        assert cfg.student.backend == "hf" and cfg.student.gradient_checkpointing
        assert cfg.train.student_sft.batch_size % 8 == 0 and cfg.train.student_macpo.batch_size % 8 == 0
        assert cfg.train.student_macpo.beta == 0.1 and cfg.train.student_macpo.nll_weight == 0.2
        assert cfg.student.lora.r == 8 and cfg.student.lora.alpha == 16
        assert cfg.sampling.temperature == 0.95 and cfg.sampling.top_p == 0.7 and cfg.sampling.top_k == 50
        assert cfg.student.template == ("vicuna" if "hh" in name else "alpaca")
        # the official scripts' schedule: SFT effective batch 32, DPO rounds batch 16 without warm-up
        for key in ("teacher_sft", "negative_sft", "student_sft"):
            stage = getattr(cfg.train, key)
            assert stage.batch_size * stage.grad_accum == 32 and stage.lr == 5e-5
        for key in ("teacher_macpo", "student_macpo"):
            stage = getattr(cfg.train, key)
            assert stage.warmup_ratio == 0.0 and stage.batch_size * stage.grad_accum == 16 and stage.lr == 1e-5
        # the paper's split sizes: 5k labelled / 5k unlabelled, 2k (HH) or 1k (PKU) test
        assert (cfg.task.n_labelled, cfg.task.n_unlabelled) == (5000, 5000)
        assert cfg.task.n_test == (2000 if "hh" in name else 1000)
        # the authors' negative data: the first teacher's negative agent answers for the student's
        assert cfg.macpo.student_negatives_from == "first_teacher"
        # the authors' test decoding: LLaMA-Factory's default sampling
        assert (cfg.eval_sampling.temperature, cfg.eval_sampling.top_p, cfg.eval_sampling.top_k) == (0.95, 0.7, 50)
    if name.startswith("macpo_hh"):
        assert cfg.task.data_dir == name.removeprefix("macpo_hh_") + "-base"
    if name.startswith(("macpo_", "wspo_hh")):  # judged on helpfulness and harmlessness, as the model cards read them
        assert set(cfg.judges()) == {"reward_model", "safety_model"}
        assert "helpful" in cfg.reward_model.name_or_path and "harmless" in cfg.safety_model.name_or_path
        assert all(j.template == "hh" and j.pair_input for j in (cfg.reward_model, cfg.safety_model))
    if name.startswith("wspo_") and name != "wspo_default":  # the authors' LoRA example
        wspo, weak_dpo = cfg.train.wspo, cfg.train.weak_dpo
        # effective batch 32: 1 per device x 8 accumulation x 4 GPUs, here accumulated on one
        assert wspo.lr == 5e-6 and wspo.epochs == 3 and wspo.batch_size * wspo.grad_accum == 32
        assert cfg.task.labelled_share == 1.0 and cfg.task.n_labelled == 0  # every training pair
        assert wspo.warmup_ratio == 0.1 and wspo.shift_scale == 0.1
        assert weak_dpo.beta == 0.01 and weak_dpo.epochs == 3 and weak_dpo.reference == "round_start"
        assert cfg.student.template == "qwen" and "Instruct" in cfg.student.name_or_path
        assert len(cfg.student.lora.target_modules) == 7 and cfg.wspo.weak_reference == "sft"
    if name == "wspo_ultrafeedback":  # the authors' data and cutoff
        assert (cfg.task.path, cfg.task.train_split, cfg.task.test_split) == (
            "HuggingFaceH4/ultrafeedback_binarized", "train_prefs", "test_prefs")
        assert cfg.student.max_length == 4096


def test_cli_prints_one_line_and_exits_2_on_bad_config():
    proc = subprocess.run([sys.executable, "-m", "orchestrator.main", "teachers.count=0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines == ["error: teachers.count=0: need at least one teacher"]


def test_print_config_and_dry_run_start_nothing_and_write_nothing(tmp_path, capsys):
    from orchestrator.main import main

    out = tmp_path / "run"
    assert main(["--print-config", "rounds=1", f"output_dir={out}", "storage_options={key: AKIAEXAMPLE, secret: s3cr3t}"]) == 0
    printed = capsys.readouterr().out
    assert "rounds: 1" in printed and "<redacted>" in printed and "s3cr3t" not in printed and "AKIAEXAMPLE" not in printed
    assert main(["--dry-run", "resources.student.ranks=2", f"output_dir={out}"]) == 0
    checked = capsys.readouterr().out
    assert "(2 ranks)" in checked and "preflight passed" in checked
    assert main(["--dry-run", "resources.studnet.ranks=2"]) == 2
    assert capsys.readouterr().err.strip() == ("error: resources.studnet: unknown key (did you mean resources.student? "
                                               "valid keys: orchestrator_cpus, reward_model, student, teacher, torch_threads)")
    assert not out.exists()  # neither wrote anything


def test_configs_compose_with_a_defaults_list(tmp_path):
    """`defaults`: files merged in order, the file's own keys on top; the HH-Harmless paper config
    is the HH-Helpful one on the other subset."""
    helpful = load_config(CONFIG_DIR / "macpo_hh_helpful.yaml", ["task.data_dir=harmless-base"])
    assert load_config(CONFIG_DIR / "macpo_hh_harmless.yaml").to_dict() == helpful.to_dict()
    (tmp_path / "base.yaml").write_text("rounds: 5\nteachers: {count: 2}\ntrain: {student_sft: {lr: 0.5}}\n")
    (tmp_path / "more.yaml").write_text("defaults: [base.yaml]\nteachers: {count: 4}\n")
    (tmp_path / "run.yaml").write_text("defaults: [more.yaml]\ntrain: {student_sft: {epochs: 7}}\n")
    config = load_config(tmp_path / "run.yaml", ["rounds=6"])
    assert (config.rounds, config.teachers.count) == (6, 4)  # overrides last, then the nearest file
    assert (config.train.student_sft.lr, config.train.student_sft.epochs) == (0.5, 7)  # mappings merge key by key
    (tmp_path / "a.yaml").write_text("defaults: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("defaults: [a.yaml]\n")
    with pytest.raises(ConfigError, match=r"defaults form a cycle \(a.yaml -> b.yaml -> a.yaml\)"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("defaults: [missing.yaml]\n")
    with pytest.raises(ConfigError, match="defaults entry 'missing.yaml' not found"):
        load_config(tmp_path / "c.yaml")


def test_hydra_style_overrides_and_interpolation(tmp_path):
    """`+key` adds a key the file does not set, `++key` sets either way, `~key` brings the default
    back; `${key}` takes another key's value (typed when it is the whole value)."""
    (tmp_path / "run.yaml").write_text("seed: 3\nrounds: 4\noutput_dir: runs/seed_${seed}\n"
                                       "train: {student_sft: {lr: 0.25}, teacher_sft: {lr: '${train.student_sft.lr}'}}\n")
    config = load_config(tmp_path / "run.yaml", ["+cache_dir=/tmp/bases", "++seed=5", "~rounds"])
    assert (config.cache_dir, config.seed, config.rounds) == ("/tmp/bases", 5, RunConfig().rounds)
    assert config.output_dir == "runs/seed_5" and config.train.teacher_sft.lr == 0.25  # resolved after overrides
    with pytest.raises(ConfigError, match=r"'\+seed=1': seed is already set in this config; change it with seed="):
        load_config(tmp_path / "run.yaml", ["+seed=1"])
    with pytest.raises(ConfigError, match=r"'~cache_dir': cache_dir is not set in this config, nothing to remove"):
        load_config(tmp_path / "run.yaml", ["~cache_dir"])
    with pytest.raises(ConfigError, match=r"output_dir='\$\{sed\}': \$\{sed\} refers to a key this config does not set"):
        load_config(tmp_path / "run.yaml", ["output_dir=${sed}"])
    with pytest.raises(ConfigError, match=r"interpolation cycle \(output_dir -> cache_dir -> output_dir\)"):
        load_config(tmp_path / "run.yaml", ["cache_dir=${output_dir}", "output_dir=${cache_dir}"])
    with pytest.raises(ConfigError, match=r"train.(student|teacher)_sft.lr='x': expected a number"):
        load_config(tmp_path / "run.yaml", ["train.student_sft.lr=x"])


def test_help_config_lists_every_key_with_the_comment_beside_its_field(capsys):
    import dataclasses

    from orchestrator.config import RunConfig
    from orchestrator.config_help import entries
    from orchestrator.main import main

    assert main(["--help-config", "resources.student.ranks"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("resources.student.ranks = 1  # FSDP2 ranks of each agent of this role")
    keys = [key for key, _, _ in entries(RunConfig, RunConfig())]
    assert "train.student_macpo.beta" in keys and "student.gradient_checkpointing" in keys and len(keys) == len(set(keys))
    assert all(not dataclasses.is_dataclass(value) for _, value, _ in entries(RunConfig, RunConfig()))
    assert main(["--help-config", "nosuch"]) == 2


def test_a_failed_run_leaves_its_traceback_in_error_log(tmp_path, monkeypatch, capsys):
    """The terminal gets one line; the run directory gets the whole traceback; --debug prints it."""
    import orchestrator.api
    from orchestrator.main import main

    def failing_run(config, **kwargs):
        import os

        os.makedirs(config.output_dir, exist_ok=True)

        def deep_inside():
            raise RuntimeError("the stage broke")

        deep_inside()

    monkeypatch.setattr(orchestrator.api, "run", failing_run)
    out = tmp_path / "run"
    assert main([f"output_dir={out}", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "error: RuntimeError: the stage broke" in err and f"traceback: {out / 'error.log'}" in err
    assert "deep_inside" in err  # --debug: the traceback on the terminal too
    log = (out / "error.log").read_text()
    assert "Traceback" in log and "deep_inside" in log and "the stage broke" in log


def test_both_macpo_ablations_at_once_are_refused():
    with pytest.raises(ConfigError, match="every pair would be an answer against itself"):
        load_config(overrides=["ablation.mutual_positives=false", "ablation.hard_negatives=false"])


def test_gamma_is_named_apart():
    cfg = load_config(overrides=["train.student_macpo.nll_weight=0.5", "train.wspo.shift_scale=0.2"])
    assert cfg.train.student_macpo.nll_weight == 0.5 and cfg.train.wspo.shift_scale == 0.2
    with pytest.raises(ConfigError, match="gamma: unknown key"):
        load_config(overrides=["train.wspo.gamma=0.1"])


def test_progress_printer_prints_each_stage_and_round_once(capsys):
    """Outside a terminal (job logs, CI) progress is one line per finished stage and round, however
    often the driver polls; `progress=false` prints rounds only."""
    from orchestrator.api import ProgressPrinter

    polls = [{"stage_lines": [], "last_round": None, "stage_progress": {"stage": "a", "count": 1, "done": 0, "total": 2}},
             {"stage_lines": [(1, "stage a 1.0s")], "last_round": None,
              "stage_progress": {"stage": "b", "count": 2, "done": 1, "total": 2}},
             {"stage_lines": [(1, "stage a 1.0s"), (2, "stage b 2.0s")], "last_round": {"round": 0, "line": "round 0 done"},
              "stage_progress": {"stage": "b", "count": 2, "done": 2, "total": 2}}]
    printer = ProgressPrinter(show=True, bars=False)
    for info in polls + polls[-1:] * 3:
        printer.update(info)
    printer.round(0, "round 0 done")
    assert capsys.readouterr().out.splitlines() == ["stage a 1.0s", "stage b 2.0s", "round 0 done"]
    quiet = ProgressPrinter(show=False, bars=False)
    for info in polls:
        quiet.update(info)
    assert capsys.readouterr().out.splitlines() == ["round 0 done"]


def test_progress_inside_a_long_stage_shows_steps_and_eta(capsys, monkeypatch):
    """Job logs get a line on the running stage's steps (at most every STEP_LINE_S); a terminal's
    bar carries them as its postfix."""
    from orchestrator import api

    clock = iter([100.0, 110.0, 140.0, 141.0])
    monkeypatch.setattr(api.time, "monotonic", lambda: next(clock))

    def poll(step, eta):
        return {"stage_lines": [], "last_round": None, "stage_progress": {
            "stage": "train", "count": 1, "done": 0, "total": 1,
            "steps": {"student": {"step": step, "total": 40, "loss": 0.5312, "eta_s": eta}}}}

    printer = api.ProgressPrinter(show=True, bars=False)
    for info in (poll(3, 74.0), poll(4, 72.0), poll(12, 56.0), poll(13, 54.0)):
        printer.update(info)
    assert capsys.readouterr().out.splitlines() == ["  train: student step 3/40 loss 0.531 eta 74s",
                                                    "  train: student step 12/40 loss 0.531 eta 56s"]
    assert api.steps_text({"student": {"step": 40, "total": 40, "loss": None, "eta_s": 0.0}}) == "student step 40/40"


def test_checkpoint_retention_keeps_last_best_and_newest(tmp_path):
    from orchestrator.run_dir import RunDirectory, retained_rounds

    rounds = [{"round": i, "eval": {"student": {"reward": r}}} for i, r in enumerate([0.5, 0.9, 0.7, 0.6])]
    assert retained_rounds(rounds, 1, None) == {3}
    assert retained_rounds(rounds, 2, "student.reward") == {1, 2, 3}
    assert retained_rounds(rounds, 0, None) == {0, 1, 2, 3}
    assert retained_rounds(rounds, 1, "teacher_9.reward") == {3}  # an agent never evaluated keeps nothing extra
    run_dir = RunDirectory(tmp_path / "run")
    for i in range(4):
        run_dir.commit_checkpoint(run_dir.new_checkpoint(i), i, {"round": i})
    assert run_dir.prune_checkpoints({1, 3}) == [0, 2]
    assert sorted(os.listdir(run_dir.checkpoints)) == ["round_1", "round_3"]
    assert os.path.basename(run_dir.latest_checkpoint()) == "round_3"
    with pytest.raises(ConfigError, match="checkpoint.keep_best='reward'"):
        load_config(None, ["checkpoint.keep_best=reward"])
    with pytest.raises(ConfigError, match="checkpoint.keep_last=-1"):
        load_config(None, ["checkpoint.keep_last=-1"])


def test_default_output_dir_outlives_a_ray_job(tmp_path, monkeypatch):
    """In a Ray job's temporary working_dir copy, runs go under the storage root, never into the copy."""
    from orchestrator.run_dir import STORAGE_ENV, ensure_output_dir

    copy = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    copy.mkdir(parents=True)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ensure_output_dir(load_config(None)).startswith("runs/")  # a plain local run: as before
    monkeypatch.chdir(copy)
    unset = ensure_output_dir(load_config(None))
    assert unset.startswith(str(tmp_path / "home" / "w2s-runs")) and "_ray_pkg_" not in unset
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "store"))
    assert ensure_output_dir(load_config(None, ["output_dir=runs/mine"])) == str(tmp_path / "store" / "runs" / "mine")
    assert ensure_output_dir(load_config(None, [f"output_dir={tmp_path}/abs"])) == f"{tmp_path}/abs"
    monkeypatch.setenv(STORAGE_ENV, "s3://bucket/runs/")  # a storage URI root: joined as a URI, not a path
    assert ensure_output_dir(load_config(None, ["output_dir=runs/mine"])) == "s3://bucket/runs/runs/mine"
    assert ensure_output_dir(load_config(None)).startswith("s3://bucket/runs/2")
    with pytest.raises(ConfigError, match=r"output_dir='s3://': a storage URI is"):
        load_config(None, ["output_dir=s3://"])


def test_a_partial_stage_keeps_that_stage_s_own_defaults():
    """Overriding one key of a training stage keeps the rest of *that stage's* defaults (WSPO's
    epochs, batch and gamma; the weak DPO's reference), not TrainConfig's generic ones."""
    cfg = load_config(None, ["algorithm=wspo", "train.wspo.lr=1e-3", "train.weak_dpo.lr=5e-3"])
    assert (cfg.train.wspo.lr, cfg.train.wspo.epochs, cfg.train.wspo.batch_size, cfg.train.wspo.shift_scale) == (1e-3, 3, 8, 0.1)
    assert cfg.train.weak_dpo.reference == "round_start" and cfg.train.weak_dpo.lr == 5e-3
    sampled = load_config(None, ["sampling={max_new_tokens: 5}"])
    assert (sampled.sampling.temperature, sampled.sampling.top_p, sampled.sampling.max_new_tokens) == (0.95, 0.7, 5)


def test_loading_a_config_loads_no_torch():
    """The driver only reads and checks the config: torch (1.5 s of imports) belongs to the actors."""
    code = ("import sys; from orchestrator.config import load_config, preflight; preflight(load_config(None, [])); "
            "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_a_fresh_run_never_writes_into_an_earlier_runs_directory(tmp_path):
    from orchestrator.run_dir import check_fresh_output_dir, default_output_dir

    used = tmp_path / "old"
    used.mkdir()
    (used / "metrics.jsonl").write_text("{}\n")
    config = load_config(None, [f"output_dir={used}"])
    with pytest.raises(ConfigError, match=r"is not empty .*--resume .*overwrite_output_dir=true"):
        check_fresh_output_dir(config)
    assert (used / "metrics.jsonl").exists()
    config.overwrite_output_dir = True  # said explicitly: the old files go first, nothing mixes
    check_fresh_output_dir(config)
    assert not used.exists()
    check_fresh_output_dir(load_config(None, [f"output_dir={tmp_path / 'new'}"]))  # absent: fine
    assert len({default_output_dir() for _ in range(50)}) == 50  # unique within one second
