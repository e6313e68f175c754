"""The run's plot: headline reward per round for every agent, baselines as dashed lines, and one
panel per judge score beside it."""
from __future__ import annotations

from pathlib import Path

JUDGE_SUFFIXES = ("_score", "_win_rate")


def judge_metrics(summary: dict) -> list[str]:
    """The judge metrics (`rm_score`, `safety_win_rate`, ...) any agent has in any round, in order."""
    seen: dict[str, None] = {}
    for record in summary.get("rounds", []):
        for metrics in record.get("eval", {}).values():
            for key in metrics:
                if key.endswith(JUDGE_SUFFIXES):
                    seen.setdefault(key)
    return sorted(seen, key=lambda k: (not k.startswith("rm_"), k.endswith("_win_rate"), k))


def plot_rewards(summary: dict, path: Path) -> Path | None:
    """PNG of the headline reward per round for every agent (baselines as lines), and each judge's
    mean score per round in a panel of its own."""
    rounds = summary.get("rounds", [])
    if not rounds:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    scores = [m for m in judge_metrics(summary) if m.endswith("_score")]
    fig, axes = plt.subplots(1, 1 + len(scores), figsize=(7 + 5 * len(scores), 4.5), squeeze=False)
    ax = axes[0][0]
    for panel, metric in zip(axes[0][1:], scores):
        _plot_metric(panel, summary, metric)
    for agent in summary.get("agents", []):
        points = [(r["round"], r["eval"][agent]["reward"]) for r in rounds if agent in r.get("eval", {})]
        if points:
            xs, ys = zip(*points)
            style = dict(linewidth=2.5, marker="o") if agent == "student" else dict(linewidth=1.2, marker=".", alpha=0.8)
            ax.plot(xs, ys, label=agent, **style)
    for name, metrics in summary.get("baselines", {}).items():
        if isinstance(metrics, dict) and "reward" in metrics:
            ax.axhline(metrics["reward"], linestyle="--", linewidth=1, color="gray")
            ax.annotate(name, (rounds[0]["round"], metrics["reward"]), fontsize=7, color="gray",
                        xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("round")
    ax.set_ylabel("reward (test split)")
    ax.set_title(f"{summary.get('algorithm', '').upper()}: reward per round")
    ax.set_xticks([r["round"] for r in rounds])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_metric(ax, summary: dict, metric: str) -> None:
    rounds = summary["rounds"]
    for agent in summary.get("agents", []):
        points = [(r["round"], r["eval"][agent][metric]) for r in rounds if metric in r.get("eval", {}).get(agent, {})]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=agent, linewidth=2.5 if agent == "student" else 1.2, marker="o" if agent == "student" else ".")
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    ax.set_title(f"judge: {metric}")
    ax.set_xticks([r["round"] for r in rounds])
    ax.grid(alpha=0.3)
