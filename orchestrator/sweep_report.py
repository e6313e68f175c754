"""A sweep's results, for people: a markdown table of mean ± sd per setting, the claims as
"holds in k of n", failed trials with their errors, and a plot of reward per round.

Everything is rendered from the results dict (`results.json`), so README and benchmark pages can be
regenerated from stored files at any time and no figure is ever typed by hand.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> dict:
    """Where a figure was measured (printed beside every table)."""
    import torch

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def machine_line(results: dict) -> str:
    m = results["machine"]
    gpu = f", {m['cuda']}" if m.get("cuda") else ""
    return f"_Measured {results['measured_at']} on {m['cpus']} CPU cores ({m['platform']}, torch {m['torch']}{gpu})._"


def cell(stats: dict | None) -> str:
    if not stats:
        return "-"
    return f"{stats['mean']:.3f} ± {stats['sd']:.3f}"


def render_table(results: dict, columns: list[str] | None = None) -> str:
    columns = columns or results["spec"]["columns"]
    lines = ["| setting | n | " + " | ".join(f"`{c}`" for c in columns) + " |",
             "| --- | --- |" + " --- |" * len(columns)]
    for setting, metrics in results["table"].items():
        n = max((s["n"] for s in metrics.values()), default=0)
        lines.append(f"| {setting} | {n} | " + " | ".join(cell(metrics.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def render_claims(results: dict) -> str:
    """One row per claim: the mean paired difference (in the claim's direction), its 95% interval,
    "holds in k of n" and the verdict, which says *holding* only when the interval excludes zero."""
    from orchestrator.sweep_spec import CI_METHOD, refresh_claims

    claims = refresh_claims(results)["claims"]
    lines = ["| claim | paired difference | 95% interval | holds in | verdict |", "| --- | --- | --- | --- | --- |"]
    for claim in claims:
        interval = claim.get("ci95")
        difference = f"{claim['difference']:+.4f}" if claim.get("difference") is not None else "-"
        shown = f"[{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else "-"
        verdict = "holding" if claim.get("holding") else ("not holding: interval includes zero or lies below"
                                                          if interval else "too few seeds")
        lines.append(f"| `{claim['left']} {claim['op']} {claim['right']}` | {difference} | {shown} | "
                     f"{claim['holds']} of {claim['n']} seeds | {verdict} |")
    return "\n".join(lines + ["", f"_Interval: {CI_METHOD}; the difference is left minus right for `>`._"])


def render_confirmation(exploration: dict | None, confirmation: dict) -> str:
    """Each claim on the confirmation seeds beside the same claim on the exploration seeds the
    choices were made on; the verdict is the confirmation's (its interval above zero or not)."""
    from orchestrator.sweep_spec import CI_METHOD, refresh_claims

    def cells(claim: dict | None) -> str:
        if not claim or claim.get("difference") is None:
            return "- | -"
        interval = claim.get("ci95")
        shown = f" [{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else ""
        return f"{claim['difference']:+.4f}{shown} | {claim['holds']} of {claim['n']}"

    explored = {(c["left"], c["op"], c["right"]): c for c in refresh_claims(exploration)["claims"]} if exploration else {}
    seeds = confirmation["spec"]["seeds"]
    explored_seeds = exploration["spec"]["seeds"] if exploration else []
    lines = [f"| claim | exploration: difference [95% interval] (seeds {seed_range(explored_seeds)}) | holds in "
             f"| confirmation: difference [95% interval] (seeds {seed_range(seeds)}) | holds in | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]
    for claim in refresh_claims(confirmation)["claims"]:
        verdict = "**holding**" if claim.get("holding") else "not holding"
        lines.append(f"| `{claim['left']} {claim['op']} {claim['right']}` | "
                     f"{cells(explored.get((claim['left'], claim['op'], claim['right'])))} | {cells(claim)} | {verdict} |")
    failed = sum(t["status"] != "done" for t in confirmation["trials"])
    return "\n".join([machine_line(confirmation), "", *lines, "",
                      f"_Interval: {CI_METHOD}. Confirmation trials: {len(confirmation['trials'])}, failed: {failed}._"])


def seed_range(seeds: list[int]) -> str:
    """`[100, ..., 119]` -> `100-119`; seeds with gaps listed one by one."""
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def render_failures(results: dict) -> str:
    failed = [t for t in results["trials"] if t["status"] != "done"]
    return "\n".join(f"- trial `{t['trial_id']}` failed: {t['error']}" for t in failed)


def render_markdown(results: dict, title: str | None = None) -> str:
    """Machine line, seeds, the table, the claims and any failures, as one markdown block."""
    spec = results["spec"]
    parts = [f"## {title}" if title else "", machine_line(results), "",
             f"Config `{_relative(spec['config'])}`, seeds {spec['seeds']}"
             + (f", overrides `{' '.join(spec['overrides'])}`" if spec["overrides"] else "")
             + (f"; sweep wall time {results['sweep_wall_s']:.0f} s" if results.get("sweep_wall_s") else "") + ".",
             "", render_table(results), ""]
    if results["claims"]:
        parts += [render_claims(results), ""]
    if (failures := render_failures(results)):
        parts += [failures, ""]
    return "\n".join(parts).strip() + "\n"


def _relative(path: str | None) -> str:
    if not path:
        return "configs/default.yaml"
    root = Path(__file__).resolve().parent.parent
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return path


def plot_rounds(results: dict, path: Path) -> None:
    """Student and teachers' mean reward per round, mean ± sd over seeds, one line per setting."""
    import matplotlib.pyplot as plt

    fig = rounds_figure(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def rounds_figure(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, label in zip(axes, ("student", "teachers_mean")):
        for setting, metrics in results["table"].items():
            rounds = sorted(int(m.split(".r")[1]) for m in metrics if m.startswith(f"{label}.r") and m.split(".r")[1].isdigit())
            if not rounds:
                continue
            means = [metrics[f"{label}.r{k}"]["mean"] for k in rounds]
            sds = [metrics[f"{label}.r{k}"]["sd"] for k in rounds]
            ax.errorbar(rounds, means, yerr=sds, marker="o", capsize=3, label=setting)
        ax.set_title(label.replace("_", " "))
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers: no 0.2, 0.4 ticks
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test reward (mean ± sd over seeds)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig
