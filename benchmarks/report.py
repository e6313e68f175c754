"""Render benchmarks/README.md from the JSON results the scripts wrote (numbers are never typed)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script from anywhere: `benchmarks` is the repo's folder
RESULTS = HERE / "results"

INTRO = """# Benchmarks

Scripts (not tests) that measure the system and write `results/<name>.json`; this page is rendered
from those files by `python benchmarks/report.py`. Run them from the repository root with the
project's venv, e.g. `python benchmarks/teacher_scaling.py`.

| script | measures |
| --- | --- |
| `sweeps/macpo_claims.yaml` | (run with `python -m orchestrator.sweep --spec benchmarks/sweeps/macpo_claims.yaml --publish benchmarks/results`) MACPO's claims on the exploration seeds 0-4 the default world was chosen on: student / teacher rewards, K=1 vs K=3, ablations |
| `sweeps/macpo_claims_confirmation.yaml` | (same command) the same settings and claims on the confirmation seeds 100-119, which chose nothing: the claims README publishes |
| `sweeps/wspo_claims.yaml` | (same command) WSPO vs the student's SFT and DPO baselines and the weak aligned model over 5 seeds |
| `sweeps/sweep_speed.yaml` | a 3-setting x 5-seed sweep of the default config: how long a sweep takes |
| `sweeps/map_*.yaml` | the map of the CPU world (rendered below by `world_map.py`): clean vs noisy chosen answers in `D_w`, teacher presets, number of teachers, rounds, with the ablations where measured |
| `sweeps/wspo_chosen_noise.yaml` | WSPO against its baselines when `D_w`'s chosen answers are noisy |
| `reference_run.py` | the published reference run (default config, seed 0) and how far it moves with the thread count |
| `teacher_scaling.py` | one MACPO round with 1, 2, 4, 8, 16 teachers: wall against the machine's limit per phase, tokens/s and memory per actor |
| `time_to_result.py` | the default run from command to summary: start-up, model loading, set-up, rounds, shutdown |
| `peer_trl.py` | the plain Agent's DPO step and generation against TRL's `DPOTrainer` and plain `generate`: tokens/s, peak memory (needs `pip install '.[bench]'`) |
| `actor_overhead.py` | generate / train through `AgentActor` vs the plain `Agent` in-process; tokens/s |
| `agent_start.py` | CPU and wall seconds to start N agent actors, plain Ray workers vs forks of a warm zygote (`ray.prefork`) |
| `ci_speed.py` | `scripts/setup.sh` (and `--dev`) and `.ci/run` from fresh clones with empty caches, cold and warm model cache: seconds, pytest's closing line and slowest tests |
| `bad_inputs.py` | every config key with a wrong type, unknown sub-keys and indices; broken config files, `config.yaml` on `--resume` and data files: how many were answered with one line and exit code 2, how many changed anything on disk |
| `scoring_memory.py` | scoring memory at a 152k vocabulary (peak resident memory of scoring 1 to 64 rows of 1024 tokens, before and after memory-bounded scoring) and scoring tokens/s on the default world, before vs after |
| `sharding_speed.py` | training tokens/s of a sharded agent: 1 rank against 2 FSDP2 ranks on this machine's cores, where the 2-rank call's time goes, and a projection of the 70B student's step on 8 GPUs as FSDP2 ranks against `device_map: auto` |
| `step_metrics_overhead.py` | what streaming every optimizer step's metrics to the orchestrator costs: the same SFT call with and without, interleaved, and the time a call spends inside its step sink |
| `gpu_check.py` | the plain `Agent` (no Ray) on a CUDA GPU in bf16: log-probs against CPU float32, generation, a DPO and a MACPO step, tokens/s, token-budget scoring at a 152k vocabulary, a new adapter version taking effect, a 1-rank FSDP2 agent against the plain one |
"""


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def machine_line(data: dict) -> str:
    from orchestrator.sweep_report import machine_line as line

    return line(data)


def section_sweep(data: dict, title: str) -> list[str]:
    from orchestrator.sweep_report import render_markdown

    return [render_markdown(data, title)]


def section_reference(data: dict, reproducibility: dict | None, sharded: dict | None = None) -> list[str]:
    """The reference run's reward per agent per round, and the measured spread beside it."""
    rounds = data["rounds"]
    lines = ["| agent | " + " | ".join(f"round {r['round']}" for r in rounds) + " |", "| --- |" + " --- |" * len(rounds)]
    for agent in data["agents"]:
        lines.append(f"| {agent} | " + " | ".join(f"{r['eval'][agent]['reward']:.3f}" for r in rounds) + " |")
    for name, metrics in data.get("baselines", {}).items():
        lines.append(f"| baseline `{name}` | {metrics['reward']:.3f} |" + " |" * (len(rounds) - 1))
    lines.append("")
    if data.get("total_wall_s"):
        lines.append(f"This one run took {data['total_wall_s']:.0f} s from start to summary (Ray start-up and "
                     f"model loading included; `benchmarks/time_to_result.py` times repeated runs).")
    if reproducibility:
        diffs = ", ".join(f"{n} thread(s): {d:.4f}" for n, d in reproducibility["max_abs_diff_vs_published"].items())
        lines.append(f"Largest per-round reward difference from this file when the same command runs with other torch "
                     f"thread counts (measured {reproducibility['measured_at']}): {diffs}; tolerance {reproducibility['tolerance']}.")
    if sharded:
        diffs = ", ".join(f"{n} ranks: {d:.4f}" for n, d in sharded["max_abs_diff_vs_published"].items())
        lines.append(f"Largest per-round reward difference from this file when the same run shards the student over "
                     f"FSDP2 ranks (`resources.student.ranks`, `benchmarks/reference_run.py --ranks`, measured "
                     f"{sharded['measured_at']}): {diffs}; tolerance {sharded['tolerance']}.")
    return lines


def section_scaling(data: dict) -> list[str]:
    """One MACPO round per K against the machine's limit (benchmarks/teacher_scaling.py)."""
    import statistics

    if "limit_s" not in data["rows"][0]:
        return ["## Teacher scaling", "", "`results/teacher_scaling.json` predates the limit-based measurement; rerun "
                "`python benchmarks/teacher_scaling.py`.", ""]
    lines = ["## Teacher scaling: one MACPO round against the machine's limit", "", machine_line(data), "",
             "`python benchmarks/teacher_scaling.py`. Wall and CPU time of the same stages throughout. A round has "
             "three phases between barriers (generate | the teachers' training beside the student's positive "
             "selection and training | evaluate); a phase's limit is max(busiest agent's CPU s, all agents' CPU s / "
             "cores): no schedule finishes it sooner on these cores. Ratio = wall / limit (1.00 = at the limit); "
             "overhead = stage time no actor spent on its call." + (
                 f" Each K ran {data['repeats']} times; a row is the run with the median ratio, and the ratios of "
                 f"all runs are listed beside it." if data.get("repeats", 1) > 1 else ""), "",
             "| teachers | round wall s | limit s | ratio | ratio of every run | parallel efficiency | overhead | student train tok/s "
             "| teacher train tok/s (median) | peak RSS MiB student / teacher (median) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in data["rows"]:
        tps = [v for a, v in row["tokens_per_s"].items() if a != "student"]
        rss = [v for a, v in row["peak_rss_mib"].items() if a != "student"]
        every = ", ".join(f"{r:.2f}" for r in row.get("ratio_runs", [row["ratio"]]))
        lines.append(f"| {row['teachers']} | {row['wall_s']:.2f} | {row['limit_s']:.2f} | {row['ratio']:.2f} | {every} | "
                     f"{row['parallel_efficiency']:.2f} | {100 * row['overhead_fraction']:.1f}% | "
                     f"{row['tokens_per_s'].get('student', 0):.0f} | {statistics.median(tps) if tps else 0:.0f} | "
                     f"{row['peak_rss_mib']['student']:.0f} / {statistics.median(rss) if rss else 0:.0f} |")
    if "cpu" in data["rows"][0]:
        cpu = data["rows"][0]["cpu"]

        def how(role: str) -> str:
            c = cpu[role]
            return f"niceness {c['nice']}, scheduler {c.get('scheduler', 'normal')}, {c['torch_threads']} torch thread(s)"

        lines += ["", f"The actors ran as the default config sets them: the student at {how('student')}; each teacher "
                  f"at {how('teacher')} (see \"Cores on a shared node\" in docs/architecture.md)."]
    for row in data["rows"]:
        if row["teachers"] == 4:
            lines += ["", "Per phase, 4 teachers:", "", "| phase | wall s | CPU s (all agents) | limit s | ratio | critical agent |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for name, p in row["phases"].items():
                lines.append(f"| {name} | {p['wall_s']:.2f} | {p['cpu_s']:.2f} | {p['limit_s']:.2f} | {p['ratio']:.2f} | {p['critical']} |")
    return lines + [""]


def section_peer(data: dict) -> list[str]:
    """The plain Agent against TRL's DPOTrainer and transformers' generate (benchmarks/peer_trl.py)."""
    t, m, g = data["train"], data["memory"], data["generate"]
    checks = data["checks"]
    lines = ["## Against a peer: TRL's DPOTrainer and plain generate", "", machine_line(data), "",
             f"`python benchmarks/peer_trl.py` (TRL {data['versions']['trl']}, transformers "
             f"{data['versions']['transformers']}, peft {data['versions']['peft']}): `{data['settings']['model']}`, "
             f"LoRA r={data['settings']['lora']['r']} on {', '.join(data['settings']['lora']['target_modules'])}, float32, "
             f"one torch thread, {data['settings']['steps']} steps of {data['settings']['batch_size']} pairs over the same "
             f"batches ({t['agent_dpo']['tokens']} policy tokens per call, identical on every side); median of "
             f"{t['agent_dpo']['calls']} warm calls per side, interleaved. Checks: "
             f"{sum(bool(c.get('ok')) for c in checks.values())} of {len(checks)} pass (same tokens, steps and batches; "
             f"the two sides' per-step DPO losses agree to "
             f"{max(checks['agent_and_trl_losses_agree']['max_abs_diff'].values()):.1e}).", "",
             "| side | reference | train tokens/s (median) | best call | peak RSS MiB |", "| --- | --- | --- | --- | --- |"]
    for side, reference in (("agent_dpo", "base, adapter disabled"), ("agent_macpo", "base, adapter disabled"),
                            ("trl_ref_none", "base, adapter disabled"), ("trl_ref_model", "a second copy of the base")):
        rss = m.get(side, {}).get("peak_rss_mib")
        lines.append(f"| {side} | {reference} | {t[side]['tokens_per_s']:.0f} | {t[side]['tokens_per_s_best']:.0f} | "
                     f"{f'{rss:.0f}' if rss else '-'} |")
    r = data["train_ratio"]
    lines += ["", f"Train throughput Agent / TRL: {r['agent_dpo_vs_trl_ref_none']:.2f} (TRL with the disabled adapter), "
              f"{r['agent_dpo_vs_trl_ref_model']:.2f} (TRL with a reference model); on best calls "
              f"{r['agent_dpo_vs_trl_ref_none_best']:.2f} / {r['agent_dpo_vs_trl_ref_model_best']:.2f}. Peak memory Agent "
              f"minus TRL: {m['agent_minus_trl_ref_none_mib']:+.0f} / {m['agent_minus_trl_ref_model_mib']:+.0f} MiB "
              f"(after imports the processes already differ by "
              f"{m['agent_dpo']['rss_after_imports_mib'] - m['trl_ref_none']['rss_after_imports_mib']:+.0f} MiB; a second "
              f"copy of this {data['model']['float32_mib']:.1f} MiB model is below the noise). Generation, "
              f"{g['prompts']} prompts greedy, {g['max_new_tokens']} new tokens: `Agent.generate` "
              f"{g['agent_tokens_per_s']:.0f} tokens/s, `model.generate` {g['plain_tokens_per_s']:.0f} "
              f"(ratio {g['ratio_agent_vs_plain']:.2f}, identical outputs: {g['identical_outputs']}).", "",
              "On a GPU this comparison has not yet been measured (the script pins the CPU); the plain Agent's own GPU "
              "throughput is in the GPU check below.", ""]
    return lines


def section_time_to_result(data: dict) -> list[str]:
    """Where the default run's seconds go (benchmarks/time_to_result.py)."""
    parts = data["median_parts"]
    lines = ["## Time to first result: the default run", "", machine_line(data), "",
             f"`python benchmarks/time_to_result.py`: `python -m orchestrator.main` with the default config and cached "
             f"bases, {len(data['runs'])} runs, median seconds per part (start-up: imports, Ray start and the data split; "
             f"load_models: the actors' imports and model loading; set-up stages: initialising teachers and student, "
             f"round 0's evaluation; shutdown: Ray stopping, the summary table).", "",
             "| part | seconds | share | machine busy core-s | idle core-s |", "| --- | --- | --- | --- | --- |"]
    total = data["median_total_s"]
    busy, idle = data.get("median_busy_core_s", {}), data.get("median_idle_core_s", {})

    def cell(values: dict, name: str) -> str:
        return f"{values[name]:.1f}" if name in values else "-"

    for name, seconds in parts.items():
        lines.append(f"| {name} | {seconds:.1f} | {100 * seconds / total:.0f}% | {cell(busy, name)} | {cell(idle, name)} |")
    all_busy, all_idle = data.get("median_total_busy_core_s"), data.get("median_total_idle_core_s")
    lines += [f"| **total** | **{total:.1f}** | | {all_busy if all_busy is not None else '-'} | "
              f"{all_idle if all_idle is not None else '-'} |", ""]
    if all_busy is not None:
        cores = data.get("cores") or data["machine"]["cpus"]
        lines += [f"Machine busy = every process (driver, Ray's services, the actors) from /proc/stat. The work itself "
                  f"keeps {cores} cores busy for {all_busy:.1f} core-s: no schedule finishes it in under "
                  f"{all_busy / cores:.1f} s on this machine ({total / (all_busy / cores):.2f}x that floor now); the "
                  f"{all_idle:.1f} idle core-s are what a better schedule could still win "
                  f"({idle.get('start-up', 0) + idle.get('shutdown', 0):.1f} of them in start-up and shutdown, "
                  f"where the driver waits for Ray's processes to start and stop).", ""]
    return lines


def section_overhead(data: dict) -> list[str]:
    lines = ["## Actor wrapper cost and throughput", "", machine_line(data), "",
             f"Model `{data['model']}`, {data['examples']} examples, median of repeats.", "",
             "| call | plain Agent s | through AgentActor s | extra | tokens/s (plain) |", "| --- | --- | --- | --- | --- |"]
    for name, r in data["results"].items():
        lines.append(f"| {name} | {r['plain_s']:.3f} | {r['actor_s']:.3f} | {100 * r['extra_fraction']:+.1f}% | {r['tokens_per_s']} |")
    return lines + [""]


def section_agent_start(data: dict) -> list[str]:
    plain, forked = data["plain"], data["forked"]
    return ["## Agent start-up: plain workers vs forks of a warm process", "", machine_line(data), "",
            f"`python benchmarks/agent_start.py`: {data['agents']} agent actors (`{data['model']}`) started at once "
            "on a fresh local Ray until each has loaded its model; CPU is the whole machine's busy time meanwhile "
            "(the forked mode includes its zygote's imports).", "",
            "| start | wall s | CPU s | CPU s per agent |", "| --- | --- | --- | --- |",
            f"| plain (`ray.prefork=false`) | {plain['wall_s']:.1f} | {plain['cpu_s']:.1f} | {plain['cpu_s_per_agent']:.2f} |",
            f"| forked (default) | {forked['wall_s']:.1f} | {forked['cpu_s']:.1f} | {forked['cpu_s_per_agent']:.2f} |", "",
            f"Forked agents cost {data['cpu_ratio']:.1f}x less CPU to start and are ready {data['wall_ratio']:.1f}x sooner.", ""]


def section_ci_speed(data: dict) -> list[str]:
    """Install and CI seconds per measured commit (label), with the tests and asserts counted."""
    runs = data["runs"]
    lines = ["## Install and CI speed", "", machine_line(next(iter(runs.values()))), "",
             "`python benchmarks/ci_speed.py setup|ci [--ref REF --label L]`: fresh clones, empty installer caches; "
             "`ci` runs `.ci/run` twice in one clone, first with an empty model cache (cold), then warm.", "",
             "| label | commit | `setup.sh` s | `setup.sh --dev` s | CI cold s | CI warm s | pytest (warm) | test functions | asserts |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in runs.items():
        def get(key: str) -> str:
            return f"{r[key]:.0f}" if isinstance(r.get(key), (int, float)) else "-"
        closing = (r.get("ci_warm") or {}).get("closing_line") or "-"
        lines.append(f"| {label} | `{r['commit']}` | {get('setup_s')} | {get('setup_dev_s')} | {get('ci_cold_s')} | "
                     f"{get('ci_warm_s')} | {closing} | {r.get('test_functions', '-')} | {r.get('assert_statements', '-')} |")
    for label, r in runs.items():
        slowest = (r.get("ci_warm") or {}).get("slowest")
        if slowest:
            lines += ["", f"Slowest tests, {label} (warm CI, durations under 2 pytest workers):", "", "```", *slowest, "```"]
    return lines + [""]


def section_bad_inputs(data: dict) -> list[str]:
    """Bad inputs tried, answered with one line and exit 2, and cases that changed the disk."""
    lines = ["## Bad input", "", machine_line(data), "",
             "`python benchmarks/bad_inputs.py` (the same table as `tests/test_bad_inputs.py`): each case runs in a "
             "scratch directory fingerprinted before and after.", "",
             "| family | tried | one line, exit 2 | changed the disk |", "| --- | --- | --- | --- |"]
    for family, counts in data["families"].items():
        lines.append(f"| {family} | {counts['tried']} | {counts['one_line_exit_2']} | {counts['disk_changed']} |")
    total = {k: sum(c[k] for c in data["families"].values()) for k in ("tried", "one_line_exit_2", "disk_changed")}
    lines.append(f"| all | {total['tried']} | {total['one_line_exit_2']} | {total['disk_changed']} |")
    return lines + [""]


def section_scoring(data: dict) -> list[str]:
    """Scoring memory per row and at 64 rows, and scoring tokens/s, before and after."""
    memory, speed = data["memory"], data["speed"]
    lines = ["## Scoring memory and speed", "", machine_line(data), "",
             f"`python benchmarks/scoring_memory.py`: a random 2-layer Llama with a {memory['vocab']:,}-token vocabulary, "
             f"float32 on CPU, rows of {memory['width']} tokens; peak resident memory of the scoring call above the "
             "process's settled memory, each in a fresh process. Before = full logits and a float32 log-softmax over "
             "the vocabulary; after = token-budget batches, the LM head on response tokens only, 1024 tokens at a time.", "",
             "| path | rows | tokens | scoring MiB |", "| --- | --- | --- | --- |"]
    for run in memory["runs"]:
        lines.append(f"| {run['path']} | {run['rows']} | {run['tokens']:,} | {run['scoring_mib']:,.0f} |")
    lines += ["", f"Before grows by {memory['before_mib_per_row']:,.0f} MiB per row: 64 rows would take "
              f"{memory['before_projected_64_rows_mib']:,.0f} MiB, projected linearly from 1 to 4 rows (more than this "
              f"machine's memory, so not measured). After: {memory['after_64_rows_mib']:,.0f} MiB at 64 rows, "
              f"at most {memory['after_largest_mib']:,.0f} MiB at any size measured: one chunk of float32 logits.", "",
              f"Scoring speed on the default world ({speed['sequences']} sequences, {speed['response_tokens']:,} response "
              f"tokens, best of interleaved repeats): before {speed['tokens_per_s']['before']:,.0f} tokens/s, after "
              f"{speed['tokens_per_s']['after']:,.0f} tokens/s, after / before = {speed['after_over_before']:.3f}.", ""]
    return lines


def section_sharding(data: dict) -> list[str]:
    """1 vs 2 FSDP2 ranks on CPU, where the time goes, and the 70B projection."""
    lines = ["## Sharded agents: 1 rank against 2 FSDP2 ranks", "", machine_line(data), "",
             f"`python benchmarks/sharding_speed.py`: SFT on a random Llama of {data['params'] / 1e6:.0f}M parameters, "
             f"{data['examples']} sequences of ~250 tokens in batches of {data['batch_size']}, LoRA r=8 on q,v; the faster "
             "of two interleaved runs per layout, each in fresh processes.", "",
             "| layout | tokens/s | seconds | rank 0 busy |", "| --- | --- | --- | --- |"]
    for layout in data["layouts"]:
        lines.append(f"| {layout['layout']} | {layout['tokens_per_s']:,.0f} | {layout['seconds']:.1f} | "
                     f"{100 * layout['cpu_s'] / layout['seconds']:.0f}% |")
    two = data["layouts"][-1]
    lines += ["", f"2 ranks / 1 rank with one thread = **{data['ratio_two_ranks_to_one_rank_one_thread']:.2f}** "
              f"(the goal was 1.6); 2 ranks / 1 rank with both cores' threads = {data['ratio_two_ranks_to_one_rank_two_threads']:.2f}. "
              f"Perfect scaling would take {data['two_ranks_ideal_s']:.1f} s; the 2-rank call took {two['seconds']:.1f} s. "
              f"Under the profiler, gathering each layer's weights took {100 * data['two_ranks_all_gather_share']:.0f}% "
              f"and reducing gradients {100 * data['two_ranks_reduce_share']:.0f}% of the call (both include waiting for "
              f"the other rank; gloo on CPU does not overlap them with compute, as NCCL streams do on GPUs).", ""]
    proj = data["projection_70b"]
    assumed = proj["assumed"]
    lines += ["**Projection, not a measurement**: the 70B student's optimizer step (16 MACPO pairs of 1024 tokens) on "
              f"{assumed['gpus']} x 80 GB GPUs, assuming {assumed['gpu_bf16_tflops']:.0f} bf16 TFLOP/s per GPU at "
              f"{100 * assumed['model_flops_utilisation']:.0f}% utilisation and {assumed['nvlink_gb_per_s_per_gpu']:.0f} GB/s "
              f"of all-gather bandwidth per GPU; {assumed['note']}.", "",
              "| layout | step seconds |", "| --- | --- |",
              f"| one actor, `device_map: auto` (one GPU computes at a time) | {proj['device_map_step_s']:.1f} |",
              f"| 8 FSDP2 ranks, gathers overlapped with compute | {proj['fsdp_step_s_overlapped']:.1f} |",
              f"| 8 FSDP2 ranks, gathers not overlapped | {proj['fsdp_step_s_serial']:.1f} |", "",
              f"FSDP2 over device_map: {proj['speedup_serial']:.1f}x to {proj['speedup_overlapped']:.1f}x "
              "(projected; no multi-GPU run has been made here).", ""]
    return lines


def section_step_metrics(data: dict) -> list[str]:
    """Per-step metrics streaming: time per call with and without."""
    median = data["median_s"]
    return ["## Per-step training metrics: what streaming them costs", "", machine_line(data), "",
            f"`python benchmarks/step_metrics_overhead.py`: the default student (`tiny:strong`) trains SFT on "
            f"{data['examples']} examples in batches of {data['batch_size']} ({data['steps_per_call']} optimizer steps per "
            f"call, {data['ms_per_step']['without']:.0f} ms each), through two actors, one sending each step's record "
            f"to the run's StepLog and one not, interleaved, {data['repeats']} calls each (median).", "",
            "| | median seconds per call | ms per step |", "| --- | --- | --- |",
            *[f"| {name} | {median[name]:.3f} | {data['ms_per_step'][name]:.1f} |" for name in ("without", "with step metrics")],
            "", f"Overhead, the median of the {data['repeats']} paired ratios (each repeat's two calls back to back): "
            f"**{100 * data['overhead']:+.1f}%** (the goal was at most 2%); single calls varied from "
            f"{data['call_spread_s']['without'][0]:.2f} to {data['call_spread_s']['without'][1]:.2f} s without, so a difference "
            "of a few percent either way is within this machine's noise; "
            f"{data['records_received']} of {data['records_expected']} step records arrived, {data['records_dropped']} dropped. "
            f"Measured directly (in one process, the time a train call spends inside its step sink: buffering, and one "
            f"batched send a second): **{100 * data['sink_share_of_train']:.3f}%** of the call.", ""]


def section_seeds() -> list[str]:
    """Which seeds each sweep spec used, exploration or confirmation: every choice of world, default
    or setting was made on exploration seeds; confirmation seeds share none with them (checked when a
    confirmation spec loads)."""
    from orchestrator.sweep_report import seed_range
    from orchestrator.sweep_spec import load_spec

    lines = ["## Seeds: exploration and confirmation", "",
             "Every choice of world, default or hyper-parameter was made on exploration sweeps; the claims README "
             "publishes come from confirmation sweeps, whose seeds no exploration sweep used "
             "([docs/sweeps.md](../docs/sweeps.md)).", "",
             "| spec | kind | seeds | confirms |", "| --- | --- | --- | --- |"]
    for path in sorted((HERE / "sweeps").glob("*.yaml")):
        spec = load_spec(path)
        kind = "confirmation" if spec.confirms else "exploration"
        lines.append(f"| `sweeps/{path.name}` | {kind} | {seed_range(spec.seeds)} | {f'`{spec.confirms}`' if spec.confirms else '-'} |")
    return lines + [""]


def render_wspo_shift(data: dict) -> str:
    """Per setting and kind of D_w answer: the weak model's per-token shift, the target it sets the
    student and the student's own move; then the student's test answers after WSPO."""
    kinds = {"gold": "benign, right", "near_miss": "benign, near miss", "harmful": "harmful (refusal)"}

    def num(value, digits=3) -> str:
        return "-" if value is None else f"{value:+.{digits}f}"

    lines = ["| setting | answers | weak shift / token | target (shift / scale) | student move / token | "
             "tokens the weak pushed down | weak shift there | student move there | student's largest drop |",
             "|" + " --- |" * 9]
    for setting, row in data["settings"].items():
        for kind, title in kinds.items():
            if (m := row["moves"].get(kind)):
                lines.append(f"| {setting} | {title} | {num(m['weak_shift'])} | {num(m['target_shift'], 2)} | "
                             f"{num(m['student_shift'])} | {m['weak_pushed_down_share']:.2f} | {num(m['weak_shift_where_down'])} | "
                             f"{num(m['student_shift_where_weak_down'])} | {num(m['student_largest_drop'], 2)} |")
    lines += ["", "| setting | seeds | harmful refused | benign right | benign one letter off | benign refused |",
              "| --- | --- | --- | --- | --- | --- |"]
    for setting, row in data["settings"].items():
        a = row["answers"]
        lines.append(f"| {setting} | {row['seeds']} | {a['harmful_refused']:.3f} | {a['benign_right']:.3f} | "
                     f"{a['benign_one_letter_off']:.3f} | {a['benign_refused']:.3f} |")
    return "\n".join([machine_line(data), ""] + lines)


def render_teacher_learning(data: dict) -> str:
    """Per round, over the probe's seeds: rewards, what the teachers' pairs hold by the rule reward,
    and the last optimizer step of the round's training."""
    def cell(row: dict, name: str, digits: int = 3) -> str:
        stats = row.get(name)
        return f"{stats['mean']:.{digits}f} ± {stats['sd']:.{digits}f}" if stats else "-"

    columns = [("student reward", "student_reward"), ("teachers reward", "teachers_reward"),
               ("teachers benign (helpful)", "teachers_helpful"), ("teachers harmful (harmless)", "teachers_harmless"),
               ("teacher chosen > own, benign", "teacher_benign_chosen_beats_own"),
               ("chosen < own, benign", "teacher_benign_chosen_below_own"),
               ("chosen > own, harmful", "teacher_harmful_chosen_beats_own"),
               ("chosen < own, harmful", "teacher_harmful_chosen_below_own"),
               ("chosen - own reward", "teacher_all_chosen_minus_own"), ("pairs dropped (chosen = rejected)", "teacher_dropped_share"),
               ("teachers chosen NLL (last step)", "teachers_chosen_nll_last_step"),
               ("teachers reward margin (last step)", "teachers_reward_margin_last_step"),
               ("student chosen NLL (last step)", "student_chosen_nll_last_step")]
    lines = ["| round | " + " | ".join(title for title, _ in columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    for index in data["rounds"]:
        row = data["per_round"][str(index)]
        lines.append(f"| {index} | " + " | ".join(cell(row, name) for _, name in columns) + " |")
    peaks: dict[int, int] = {}
    for peak in data["student_peak_round"].values():
        peaks[peak] = peaks.get(peak, 0) + 1
    shown = ", ".join(f"round {r}: {n}" for r, n in sorted(peaks.items()))
    return "\n".join([machine_line(data), "", *lines, "",
                      f"Round at which the student's test reward peaks, over {len(data['student_peak_round'])} seeds: {shown}."])


def section_gpu(checks: list[dict]) -> list[str]:
    """The plain Agent on a GPU: agreement with CPU float32 and throughput, one row per model size."""
    lines = ["## GPU check (plain Agent, bf16 on CUDA)", "", machine_line(checks[0]), "",
             "`python benchmarks/gpu_check.py [--hidden H --layers L]`: a random-initialised Llama with the "
             "character tokenizer, LoRA r=16 on all linear layers, 256 prompts / pairs.", "",
             "| model | checks | max rel. log-prob diff bf16 vs CPU fp32 | pair order agreement | max abs diff fp32 CUDA vs CPU "
             "| generate tok/s | score tok/s | DPO train tok/s | MACPO train tok/s | peak GPU GiB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for data in checks:
        c, t = data["checks"], data["throughput"]
        bf16 = c.get("logps_cuda_bfloat16_vs_cpu_float32", {})
        fp32 = c.get("logps_cuda_float32_vs_cpu_float32", {})
        passed = sum(x["ok"] for x in c.values())
        lines.append(f"| {data['params'] / 1e6:.0f}M ({data['layers']} x {data['hidden']}) | {passed} of {len(c)} pass | "
                     f"{bf16.get('max_rel_diff', float('nan')):.4f} | {bf16.get('pair_order_agreement', float('nan')):.3f} | "
                     f"{fp32.get('max_abs_diff', float('nan')):.1e} | {t['generate_tokens_per_s']:.0f} | "
                     f"{t['score_response_tokens_per_s']:.0f} | {t['train_dpo_tokens_per_s']:.0f} | "
                     f"{t['train_macpo_tokens_per_s']:.0f} | {data['peak_gpu_memory_gib']:.1f} |")
    return lines + [""]


def section_map() -> list[str]:
    """The map of the CPU world from every map sweep: one row per cell, and heatmaps."""
    from benchmarks.world_map import load_runs, plot_heatmaps, render_table, summarise

    rows = summarise(load_runs(RESULTS))
    if not rows:
        return []
    lines = ["## Map of the CPU world (MACPO)", "",
             "Every cell is full MACPO on `configs/default.yaml` plus its overrides, over the seeds listed; "
             "gains are final minus round 0 of the test reward (mean ± sd, and in how many seeds it is > 0); "
             "`full - (X)` is the final student reward of full MACPO minus that of ablation X (-MP: no mutual "
             "positives, -HN: no hard negatives, -IW: teachers frozen) or of 1 teacher, paired by seed. "
             "Sources: `results/macpo_claims.json` and `results/map_*.json`.", "", render_table(rows), ""]
    if plot_heatmaps(rows, RESULTS / "map_heatmap.png"):
        lines += ["![map heatmaps](results/map_heatmap.png)", ""]
    return lines


def main() -> None:
    from benchmarks.world_map import THREE_WORDS_FILES
    from orchestrator.sweep_report import render_confirmation, render_markdown

    lines = [INTRO]
    if (data := load("default_seed0_summary")):
        lines += ["## Reference run (default config, seed 0)", "",
                  "`python -m orchestrator.main` on any machine gives these rewards within 0.005 "
                  "(`python benchmarks/reference_run.py --check`).", ""]
        lines += section_reference(data, load("reproducibility"), load("sharded_reference")) + [""]
    lines += section_seeds()
    for name, title in (("macpo_claims", "MACPO"), ("wspo_claims", "WSPO")):
        if (data := load(f"{name}_confirmation")):
            lines += [f"## {title}'s claims on confirmation seeds", "", render_confirmation(load(name), data), "",
                      render_markdown(data, None).split("\n", 1)[1], ""]
    for name, title in (("macpo_claims", "MACPO on the default world (task.chosen_noise=0.5), exploration seeds"), ("wspo_claims", "WSPO on the clean world (configs/wspo_default.yaml)"),
                        ("sweep_speed", "Sweep speed: 3 settings x 5 seeds of the default config"),
                        ("map_clean_world", "Map cell: the clean world (task.chosen_noise=0), every claim"),
                        ("map_chosen_noise", "Map slice: noisy chosen answers (task.chosen_noise=0.5) x teachers"),
                        ("map_noise_strength", "Map slice: chosen-answer noise x teacher preset"),
                        ("map_noisy_teachers_rounds", "Map slice: number of teachers and 4 rounds in the noisy world"),
                        ("wspo_chosen_noise", "WSPO with noisy chosen answers (task.chosen_noise=0.5)")):
        if (data := load(name)):
            if name in THREE_WORDS_FILES:  # measured before task.harm_words existed: 3 trigger words
                title += " - measured with 3 trigger words (task.harm_words=3, the default then)"
            lines += section_sweep(data, title)
    lines += section_map()
    if (data := load("teacher_learning")):
        lines += [f"## What the teachers learn from, round by round (sweep `{data['sweep']}`)", "",
                  "`python benchmarks/teacher_learning.py runs/sweeps/probe_rounds` after the probe sweep; "
                  "mean ± sd over seeds; pair columns are shares of `Q_w2s` prompts, averaged over teachers.", "",
                  render_teacher_learning(data), ""]
    if (data := load("teacher_scaling")):
        lines += section_scaling(data)
    if (data := load("actor_overhead")):
        lines += section_overhead(data)
    if (data := load("peer_trl")):
        lines += section_peer(data)
    if (data := load("time_to_result")):
        lines += section_time_to_result(data)
    if (data := load("agent_start")):
        lines += section_agent_start(data)
    if (data := load("ci_speed")):
        lines += section_ci_speed(data)
    if (data := load("scoring_memory")):
        lines += section_scoring(data)
    if (data := load("bad_inputs")):
        lines += section_bad_inputs(data)
    if (data := load("sharding_speed")):
        lines += section_sharding(data)
    if (data := load("step_metrics_overhead")):
        lines += section_step_metrics(data)
    if (checks := [d for d in (load("gpu_check"), load("gpu_check_large")) if d]):
        lines += section_gpu(checks)
    else:
        lines += ["## GPU check", "", "`benchmarks/gpu_check.py` has not yet been run on a GPU.", ""]
    (HERE / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))
    inject_into_project_readme()


PAGES_WITH_RESULTS = ("README.md", "docs/findings.md")  # pages whose `<!-- results:NAME -->` blocks are rendered


def project_blocks() -> dict[str, str]:
    """The measured tables README and docs/findings.md show, by block name."""
    from benchmarks.world_map import load_runs, render_refusal_table, render_table, summarise
    from orchestrator.sweep_report import render_confirmation, render_markdown

    blocks = {}
    if (data := load("default_seed0_summary")):
        blocks["reference"] = "\n".join(section_reference(data, load("reproducibility"), load("sharded_reference")))
    if (data := load("macpo_claims_confirmation")):
        blocks["claims"] = render_confirmation(load("macpo_claims"), data)
    if (data := load("wspo_claims_confirmation")):
        blocks["wspo_confirmation"] = render_confirmation(load("wspo_claims"), data)
    if (data := load("wspo_claims")):
        blocks["wspo"] = render_markdown(data)
    if (data := load("wspo_chosen_noise")):
        blocks["wspo_noisy"] = render_markdown(data)
    if (rows := summarise(load_runs(RESULTS))):
        blocks["map"] = render_table(rows)
        blocks["refusal"] = render_refusal_table(rows)
    if (data := load("teacher_learning")):
        blocks["teacher_learning"] = render_teacher_learning(data)
    for probe in ("probe_wspo_shift", "probe_wspo_shift_scale", "probe_teacher_budget"):
        if (data := load(probe)):
            blocks[probe] = render_markdown(data)
    if (data := load("wspo_shift")):
        blocks["wspo_shift"] = render_wspo_shift(data)
    return blocks


def with_blocks(text: str, blocks: dict[str, str]) -> str:
    """`text` with each `<!-- results:NAME -->...<!-- /results:NAME -->` block replaced by its table."""
    import re

    for name, body in blocks.items():
        text = re.sub(rf"<!-- results:{name} -->.*?<!-- /results:{name} -->",
                      lambda _: f"<!-- results:{name} -->\n{body.strip()}\n<!-- /results:{name} -->", text, flags=re.S)
    return text


def inject_into_project_readme() -> None:
    """Replace the results blocks of README and docs/findings.md with the measured tables."""
    blocks = project_blocks()
    for name in PAGES_WITH_RESULTS:
        page = HERE.parent / name
        page.write_text(with_blocks(page.read_text(), blocks))


if __name__ == "__main__":
    main()
