"""The map of the CPU world: every MACPO run any published sweep made, grouped into cells.

A cell is one world and method setting (how noisy `D_w`'s chosen answers are, which teacher preset,
how many teachers, how many rounds, which MACPO mechanisms are on), whatever sweep file it came
from; runs that two files share (the same setting and seed) count once. Each cell reports over its
seeds: the student's and the teachers' gain over the rounds, PGR at round 0 and at the end, and,
where the same sweep also ran an ablation or one teacher, full MACPO minus that, paired by seed.
Rendered by `benchmarks/report.py` (table and heatmaps); nothing here runs a model.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# the sweeps of the map: each trial's world is its overrides on configs/default.yaml as it is now
# (macpo_claims runs the default itself; the map_* specs state what differs from it)
MAP_FILES = ("macpo_claims", "map_three_trigger_words", "map_clean_world", "map_chosen_noise", "map_noise_strength", "map_noisy_teachers_rounds",
             "map_noisy_method", "map_rejected_kind", "map_headroom_ablations", "map_harm_difficulty",
             "map_harm_words_ablations")
# results measured before `task.harm_words` existed ran the 3 trigger words the bases were
# pre-trained on; their trials' overrides do not say so, their spec files now do
THREE_WORDS_FILES = ("map_three_trigger_words", "map_clean_world", "map_chosen_noise", "map_noise_strength",
                     "map_noisy_teachers_rounds", "map_noisy_method", "map_rejected_kind", "map_headroom_ablations",
                     "map_harm_difficulty")
# further dimensions of a cell, shown where they differ from configs/default.yaml
OTHER = {
    "harmful": lambda c: c.task.harmful_fraction,
    "over_refusal_rejected": lambda c: c.task.over_refusal_rejected,
    "rejected_other_op": lambda c: c.task.rejected_other_op,
    "harm_words": lambda c: c.task.harm_words,
    "decoy_fraction": lambda c: c.task.decoy_fraction,
    "nll_weight": lambda c: c.train.student_macpo.nll_weight,
    "beta": lambda c: c.train.student_macpo.beta,
    "reference": lambda c: c.train.student_macpo.reference,
    "temperature": lambda c: c.sampling.temperature,
}
ABLATIONS = {"mutual_positives": "-MP", "hard_negatives": "-HN", "teachers_learn": "-IW"}


def cell_key(config) -> tuple:
    """What a cell is: world (noise, teacher preset), method size (K, rounds) and switches."""
    presets = sorted({s.name_or_path for s in config.teachers.specs[: config.teachers.count]})
    off = tuple(name for name in ABLATIONS if not getattr(config.ablation, name))
    other = tuple((name, read(config)) for name, read in OTHER.items())
    return (config.task.chosen_noise, "+".join(p.removeprefix("tiny:") for p in presets), config.teachers.count,
            config.rounds, off, other)


def load_runs(results_dir: Path = RESULTS) -> dict[tuple, dict[int, dict]]:
    """cell key -> seed -> trial metrics, from the map's sweep files."""
    from orchestrator.config import load_config

    cells: dict[tuple, dict[int, dict]] = {}
    for name in MAP_FILES:
        if not (path := results_dir / f"{name}.json").is_file():
            continue
        data = json.loads(path.read_text())
        for trial in data["trials"]:
            if trial.get("status") != "done":
                continue
            base = ["task.harm_words=3"] if name in THREE_WORDS_FILES else []
            config = load_config(None, [*base, *(o for o in trial["overrides"] if not o.startswith("seed="))])
            if config.algorithm != "macpo":
                continue
            cells.setdefault(cell_key(config), {}).setdefault(trial["seed"], trial["metrics"])
    return cells


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def _paired(full: dict[int, dict], other: dict[int, dict], metric: str) -> dict | None:
    seeds = sorted(set(full) & set(other))
    if not seeds:
        return None
    diffs = [full[s][metric] - other[s][metric] for s in seeds]
    return {**_stats(diffs), "holds": sum(d > 0 for d in diffs)}


def summarise(cells: dict[tuple, dict[int, dict]]) -> list[dict]:
    """One row per full-MACPO cell: gains, PGR, and full minus each ablation / minus one teacher."""
    from orchestrator.config import load_config

    default = load_config(None)
    defaults = {name: read(default) for name, read in OTHER.items()}
    rows = []
    for key, runs in sorted(cells.items(), key=lambda kv: (kv[0][:4], kv[0][4], str(kv[0][5]))):
        noise, preset, k, rounds, off, other = key
        if off:
            continue
        seeds = sorted(runs)
        row = {"noise": noise, "teachers": preset, "k": k, "rounds": rounds, "seeds": seeds,
               "other": {name: value for name, value in other if value != defaults[name]}}
        for name, metric in (("student_gain", "student.gain"), ("teachers_gain", "teachers_mean.gain")):
            values = [runs[s][metric] for s in seeds]
            row[name] = {**_stats(values), "holds": sum(v > 0 for v in values)}
        for name, metric in (("student_round0", "student.round0"), ("student_final", "student.final")):
            row[name] = _stats([runs[s][metric] for s in seeds])
        for name, metric in (("pgr_round0", "pgr.round0"), ("pgr_final", "pgr.final")):
            values = [runs[s][metric] for s in seeds if runs[s].get(metric) is not None]
            row[name] = _stats(values) if values else None
        # refusing harmful test prompts (`harmless`): can the weak side learn it, can the strong one?
        row["harmless"] = {name: _stats([runs[s][metric] for s in seeds if metric in runs[s]]) if
                           any(metric in runs[s] for s in seeds) else None
                           for name, metric in (("teachers_round0", "teachers_mean.harmless.round0"),
                                                ("student_round0", "student.harmless.round0"),
                                                ("student_final", "student.harmless.final"),
                                                ("gold_ceiling", "baseline.student_sft_gold.harmless"))}
        pgr_pairs = [s for s in seeds if runs[s].get("pgr.final") is not None and runs[s].get("pgr.round0") is not None]
        row["pgr_rises"] = {"holds": sum(runs[s]["pgr.final"] > runs[s]["pgr.round0"] for s in pgr_pairs), "n": len(pgr_pairs)}
        row["vs"] = {}
        for switch, label in ABLATIONS.items():
            if (ablated := cells.get((noise, preset, k, rounds, (switch,), other))):
                row["vs"][label] = _paired(runs, ablated, "student.final")
        if k != 1 and (one := cells.get((noise, preset, 1, rounds, (), other))):
            row["vs"]["K=1"] = _paired(runs, one, "student.final")
        rows.append(row)
    return rows


def _pm(stats: dict | None, digits: int = 3) -> str:
    return f"{stats['mean']:+.{digits}f} ± {stats['sd']:.{digits}f}" if stats else "-"


def render_table(rows: list[dict]) -> str:
    """Markdown: one row per cell; 'k/n' = seeds in which the difference is positive."""
    head = ("| noise | teachers | K | rounds | other | seeds | student round 0 | student gain (rises) | teachers' gain (rise) "
            "| PGR round 0 -> final (rises) | full - (-MP) | full - (-HN) | full - (-IW) | K - (K=1) |")
    lines = [head, "|" + " --- |" * 14]
    for r in rows:
        pgr = (f"{r['pgr_round0']['mean']:.2f} -> {r['pgr_final']['mean']:.2f} ({r['pgr_rises']['holds']}/{r['pgr_rises']['n']})"
               if r["pgr_round0"] and r["pgr_final"] else "-")
        vs = [f"{_pm(r['vs'][c])} ({r['vs'][c]['holds']}/{r['vs'][c]['n']})" if r["vs"].get(c) else "-"
              for c in ("-MP", "-HN", "-IW", "K=1")]
        n = len(r["seeds"])
        other = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["other"].items()) or "-"
        lines.append(f"| {r['noise']:g} | {r['teachers']} | {r['k']} | {r['rounds']} | {other} | {n} | "
                     f"{r['student_round0']['mean']:.3f} ± {r['student_round0']['sd']:.3f} | "
                     f"{_pm(r['student_gain'])} ({r['student_gain']['holds']}/{n}) | "
                     f"{_pm(r['teachers_gain'])} ({r['teachers_gain']['holds']}/{n}) | {pgr} | " + " | ".join(vs) + " |")
    return "\n".join(lines)


def render_refusal_table(rows: list[dict]) -> str:
    """Markdown: per cell, the share of harmful test prompts refused (`harmless`, mean ± sd) by the
    teachers after their SFT on D_w, the student on their labels (round 0) and at the end, and the
    student trained on gold labels (what the strong model can learn when it is shown)."""
    lines = ["| noise | teachers | K | other | seeds | teachers round 0 | student round 0 | student final | student on gold labels |",
             "|" + " --- |" * 9]
    for r in rows:
        if r["rounds"] != 2:
            continue
        other = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["other"].items()) or "-"
        cells = [f"{h['mean']:.3f} ± {h['sd']:.3f}" if (h := r["harmless"][name]) else "-"
                 for name in ("teachers_round0", "student_round0", "student_final", "gold_ceiling")]
        lines.append(f"| {r['noise']:g} | {r['teachers']} | {r['k']} | {other} | {len(r['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_heatmaps(rows: list[dict], path: Path) -> Path | None:
    """Student and teachers' mean gain over noise x teacher preset (3 teachers, 2 rounds, 3 trigger
    words: the world that slice was measured in)."""
    grid = [r for r in rows if r["k"] == 3 and r["rounds"] == 2 and r["other"] == {"harm_words": 3}]
    noises = sorted({r["noise"] for r in grid})
    presets = sorted({r["teachers"] for r in grid})
    if len(noises) < 2 or not presets:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 1.6 + 0.9 * len(presets)))
    for ax, (metric, title) in zip(axes, (("student_gain", "student: final - round 0"),
                                          ("teachers_gain", "teachers' mean: final - round 0"))):
        values = np.full((len(presets), len(noises)), np.nan)
        for r in grid:
            values[presets.index(r["teachers"]), noises.index(r["noise"])] = r[metric]["mean"]
        limit = np.nanmax(np.abs(values)) or 1.0
        image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            if not np.isnan(value):
                cell = next(r for r in grid if r["teachers"] == presets[i] and r["noise"] == noises[j])
                ax.text(j, i, f"{value:+.3f}\n{cell[metric]['holds']}/{cell[metric]['n']}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(noises)), [f"{n:g}" for n in noises])
        ax.set_yticks(range(len(presets)), presets)
        ax.set_xlabel("task.chosen_noise")
        ax.set_ylabel("teacher preset")
        ax.set_title(f"{title} (3 trigger words)", fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
