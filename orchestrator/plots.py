"""The run's plot: headline reward per round for every agent, baselines as dashed lines."""
from __future__ import annotations

from pathlib import Path


def plot_rewards(summary: dict, path: Path) -> Path | None:
    """PNG of the headline reward per round for every agent (and baselines as lines)."""
    rounds = summary.get("rounds", [])
    if not rounds:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
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
