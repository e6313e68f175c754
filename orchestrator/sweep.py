"""`python -m orchestrator.sweep`: a grid of settings x seeds, each trial a full run, on Ray Tune.

    python -m orchestrator.sweep --config configs/default.yaml --grid teachers.count=1,3 --seeds 0-4
    python -m orchestrator.sweep --spec benchmarks/sweeps/macpo_claims.yaml

Why Tune and not a loop: each trial is one run whose orchestrator (the trial itself) and agents live
inside the trial's own placement group (one bundle per actor, built from the run's `resources`), so
trials pack onto a cluster without oversubscribing it; Tune keeps the experiment state, so running
the same command again resumes an interrupted sweep without redoing finished trials (an interrupted
trial continues from its run's last committed round); a failing trial is recorded with its one-line
error while the others go on. Under `ray job submit` or a Ray client it uses that cluster.

A sweep directory holds `runs/<trial>/` (every trial's ordinary run directory), `tune/` (Tune's
state), `results.json` (per trial: overrides, seed, metrics, per-round rewards, PGR, wall time; per
setting mean/sd; per claim "holds in k of n"), `results.md` and `plots/`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.logger import JsonLoggerCallback
import yaml

from orchestrator.config import ConfigError, RunConfig, load_config
from orchestrator.redaction import redact, redact_override
from orchestrator.run_dir import RunDirectory, write_json_atomic
from orchestrator.sweep_spec import SweepSpec, aggregate, grid_settings, load_spec, parse_claim, parse_seeds, trial_metrics

log = logging.getLogger("orchestrator.sweep")
EXIT_BAD_INPUT = 2


# ---------------------------------------------------------------- one trial
def trial_bundles(config: RunConfig) -> list[dict[str, float]]:
    """The trial's placement group: the orchestrator (the trial process) first, then one bundle per
    actor in the order the run starts them (student, reward model, teachers)."""
    from orchestrator.placement import bundle

    res = config.resources
    return [bundle({"num_cpus": res.orchestrator_cpus})] + [
        bundle(asdict(getattr(res, role))) for role in config.actor_roles() for _ in range(getattr(res, role).ranks)]


def default_concurrency(configs) -> int | None:
    """Trials at once when not given: on CPUs, as many as the cluster has cores for the threads a
    trial keeps busy (every actor runs `torch_threads` threads; the fractional `num_cpus` of the
    default configs are scheduling shares, which would let a 2-core machine start 3 trials that then
    crawl). With GPUs, the placement groups alone decide."""
    import ray

    if any(c.resources.student.num_gpus or c.resources.teacher.num_gpus for c in configs):
        return None
    busy = max(len(c.actor_roles()) * c.resources.torch_threads for c in configs)
    return max(1, int(ray.cluster_resources().get("CPU", 1) // busy))


def run_trial(params: dict, spec: dict, sweep_dir: str, cwd: str) -> None:
    """Tune's function trainable: one full run, reporting each round; resumes its own run directory
    when an earlier attempt committed a round (Tune restored an interrupted sweep)."""
    from orchestrator.core import OrchestratorCore

    os.chdir(cwd)  # Tune starts trials in their own folder; config and data paths are the user's
    trial = params["trial"]
    sweep = SweepSpec(**spec)
    run_dir = Path(sweep_dir) / "runs" / trial["trial_id"]
    # the directory is set on the config itself, never through an override string (a path holding
    # ` #` or `=` would be cut by the override parser)
    config = load_config(sweep.config, sweep.run_overrides(trial["setting"], trial["seed"]))
    config.output_dir, config.progress = str(run_dir), False
    # the sweep's runs grouped in W&B / MLflow, each tagged with its setting and seed
    config.logging.group = config.logging.group or sweep.name
    config.logging.tags = [*config.logging.tags, f"setting:{trial['setting']}", f"seed:{trial['seed']}"]
    resume = run_dir.is_dir() and RunDirectory(run_dir).latest_checkpoint() is not None
    if resume:
        check_unchanged(trial["trial_id"], RunDirectory(run_dir).read_config(), config)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)  # a trial that died before its first checkpoint
    core = OrchestratorCore(config, resume_dir=str(run_dir) if resume else None)
    try:
        core.setup()
        tune.report(_round_report(core.rounds[-1]))
        while core.round_index < core.algorithm.total_rounds():
            tune.report(_round_report(core.run_round()))
    finally:
        core.shutdown()


def check_unchanged(trial_id: str, saved: dict, config) -> None:
    """A resumed trial continues only the run its spec still describes: refuse, naming the keys,
    when the trial's resolved config differs from the one its run started with."""
    now = redact(config.to_dict())
    changed = sorted(set(_leaves(saved)) ^ set(_leaves(now)))
    if changed:
        keys = sorted({key for key, _ in changed})
        raise ConfigError(f"trial {trial_id}: its config changed since its run started ({', '.join(keys[:5])}); "
                          f"restore the spec or remove runs/{trial_id} to start it again")


def _leaves(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(data, dict):
        return [leaf for key, value in data.items() for leaf in _leaves(value, f"{prefix}.{key}" if prefix else str(key))]
    return [(prefix, json.dumps(data, sort_keys=True))]


def _round_report(record: dict) -> dict[str, float]:
    return {"round": record["round"], **{f"{agent}_reward": m["reward"] for agent, m in record["eval"].items()}}


# ---------------------------------------------------------------- the sweep
def run_sweep(spec: SweepSpec, sweep_dir: str | Path, max_concurrent: int | None = None,
              retry_failed: bool = False) -> dict:
    """Run (or resume) the sweep and return its results dict (also written to results.json)."""
    import ray

    from orchestrator.api import connect

    spec.validate()
    sweep_dir = Path(sweep_dir).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(sweep_dir / "spec.json", spec.shown())  # credentials redacted
    configs = {name: load_config(spec.config, [*spec.overrides, *o]) for name, o in spec.settings.items()}
    # Tune's own loggers minus tensorboardX (not a dependency): JSON keeps each trial's time and last result
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    started = connect(next(iter(configs.values())), log_to_driver=False)
    if max_concurrent is None:
        max_concurrent = default_concurrency(configs.values())
    start = time.perf_counter()
    try:
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, spec=asdict(spec), sweep_dir=str(sweep_dir), cwd=os.getcwd()),
            resources=lambda params: tune.PlacementGroupFactory(trial_bundles(configs[params["trial"]["setting"]])),
        )
        experiment = sweep_dir / "tune"
        if tune.Tuner.can_restore(str(experiment)):
            log.info("resuming sweep %s (finished trials are kept%s)", sweep_dir, "; failed ones rerun" if retry_failed else "")
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=False, restart_errored=retry_failed)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search(spec.trials())},
                tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent,
                                            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
                run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir), verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                                          callbacks=[_TrialLines(), JsonLoggerCallback()]),
            )
        grid = tuner.fit()
        outcomes = {}
        for result in grid:
            trial_id = result.config["trial"]["trial_id"]
            outcomes[trial_id] = {"error": _error_line(result.error) if result.error else None,
                                  "wall_s": (result.metrics or {}).get("time_total_s")}
    finally:
        if started:
            ray.shutdown()
    results = collect(spec, sweep_dir, outcomes)
    # wall time over every invocation of this sweep (a resumed sweep adds to what it had spent)
    earlier = sweep_dir / "results.json"
    spent = json.loads(earlier.read_text()).get("sweep_wall_s", 0.0) if earlier.is_file() else 0.0
    results["sweep_wall_s"] = round(spent + time.perf_counter() - start, 1)
    write_results(results, sweep_dir)
    return results


def collect(spec: SweepSpec, sweep_dir: Path, outcomes: dict[str, dict]) -> dict:
    """Read every trial's summary.json back and aggregate (the run directories are the truth)."""
    from orchestrator.sweep_report import machine

    trials = []
    for trial in spec.trials():
        outcome = outcomes.get(trial["trial_id"], {})
        path = sweep_dir / "runs" / trial["trial_id"] / "summary.json"
        row = {**trial, "overrides": [redact_override(o) for o in spec.run_overrides(trial["setting"], trial["seed"])],
               "wall_s": outcome.get("wall_s") or run_wall_s(path.parent)}
        if outcome.get("error") or not path.is_file():
            row.update(status="failed", error=outcome.get("error") or "no summary.json (trial did not run)")
        else:
            summary = json.loads(path.read_text())
            saved = path.parent / "config.yaml"  # the resolved config the trial ran (credentials already redacted)
            row.update(status="done", metrics=trial_metrics(summary),
                       config=yaml.safe_load(saved.read_text()) if saved.is_file() else None,
                       per_round={a: [r["eval"][a]["reward"] for r in summary["rounds"] if a in r["eval"]]
                                  for a in summary["agents"]},
                       baselines=summary.get("baselines", {}), pgr=summary.get("pgr"))
        trials.append(row)
    table, claims = aggregate(spec, trials)
    return {"name": spec.name, "spec": spec.shown(), "machine": machine(),
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "trials": trials, "table": table, "claims": claims}


def run_wall_s(run_dir: Path) -> float | None:
    """Seconds from a run's first to its last logged event (when Tune kept no time for the trial)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    times = [json.loads(line)["time"] for line in path.read_text().splitlines() if line.strip()]
    return round(times[-1] - times[0], 1) if len(times) > 1 else None


def write_results(results: dict, sweep_dir: Path) -> None:
    from orchestrator.sweep_report import plot_rounds, render_markdown

    write_json_atomic(sweep_dir / "results.json", results)
    (sweep_dir / "results.md").write_text(render_markdown(results))
    plot_rounds(results, sweep_dir / "plots" / "rewards_per_round.png")


def _trial_name(trial: Any) -> str:
    return trial.config["trial"]["trial_id"]


def _error_line(error: BaseException) -> str:
    from orchestrator.main import one_line

    return one_line(error)


class _TrialLines(tune.Callback):
    """One line per finished or failed trial (Tune's own tables are switched off: quiet job logs)."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        print(f"trial {_trial_name(trial)} done: student {last.get('student_reward', float('nan')):.3f} "
              f"after round {last.get('round')} ({last.get('time_total_s', 0):.0f}s)", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"trial {_trial_name(trial)} failed (its error is in results.json)", flush=True)


# ---------------------------------------------------------------- CLI
def build_spec(args: argparse.Namespace) -> SweepSpec:
    if args.spec:
        spec = load_spec(args.spec)
        if args.seeds:
            spec.seeds = parse_seeds(args.seeds)
        if args.grid:
            raise ConfigError("--grid and --spec: put the settings in the spec file")
    else:
        settings = grid_settings(args.grid or [])
        spec = SweepSpec(name=args.name or "sweep", config=args.config, settings=settings,
                         seeds=parse_seeds(args.seeds or "0"))
    if args.name:
        spec.name = args.name
    if args.config and args.spec:
        spec.config = args.config
    spec.overrides = [*spec.overrides, *args.overrides]
    spec.claims += [parse_claim(text) for text in args.claim or []]
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.sweep", description=__doc__.splitlines()[0],
                                     epilog="Example: --grid teachers.count=1,3 --grid ablation.hard_negatives=true,false --seeds 0-4 "
                                            "--claim 'student.final > student.round0'")
    parser.add_argument("--spec", help="sweep spec YAML (settings, seeds, columns, claims)")
    parser.add_argument("--config", help="run config YAML (default configs/default.yaml)")
    parser.add_argument("--grid", action="append", metavar="KEY=V1,V2", help="one axis of the grid (repeatable)")
    parser.add_argument("--seeds", help="e.g. 0-4 or 0,1,2 (default 0, or the spec's)")
    parser.add_argument("--claim", action="append", help="e.g. 'student.final > student.round0' (repeatable)")
    parser.add_argument("--name", help="sweep name (default: the spec's name, else 'sweep')")
    parser.add_argument("--output-dir", help="sweep directory (default runs/sweeps/<name>); rerun to resume")
    parser.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: as resources allow)")
    parser.add_argument("--retry-failed", action="store_true", help="on resume, rerun trials that failed")
    parser.add_argument("--publish", metavar="DIR", help="also copy results.json to DIR/<name>.json")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every trial")
    args = parser.parse_intermixed_args(argv)  # key=value may follow options
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        for flag, value in (("--output-dir", args.output_dir), ("--publish", args.publish)):
            if value and "://" in value:  # Ray Tune keeps a sweep's trials in a local folder
                raise ConfigError(f"{flag}={value}: a sweep directory must be a local path (or one every node "
                                  "mounts); a storage URI would be written as a local folder named after it")
        spec = build_spec(args)
        spec.validate()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sweep_dir = Path(args.output_dir or Path("runs") / "sweeps" / spec.name)
    print(f"sweep {spec.name}: {len(spec.settings)} settings x {len(spec.seeds)} seeds -> {sweep_dir}", flush=True)
    results = run_sweep(spec, sweep_dir, max_concurrent=args.max_concurrent, retry_failed=args.retry_failed)
    from orchestrator.sweep_report import render_markdown

    print(render_markdown(results))
    if args.publish:
        target = Path(args.publish) / f"{spec.name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(target, results)
        print(f"published {target}")
    failed = [t for t in results["trials"] if t["status"] != "done"]
    return 1 if failed and len(failed) == len(results["trials"]) else 0


if __name__ == "__main__":
    sys.exit(main())
