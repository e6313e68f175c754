"""What a finished round leaves for a person to read: `report.md` in the run directory, with the
headline table, the reward plot, and for a few test prompts each agent's answer at round 0 beside its
answer at the latest round (from the per-sample files `eval/round_<N>/<agent>.jsonl`)."""
from __future__ import annotations

import json
from pathlib import Path

from agents.templates import as_transcript

SHOWN_PROMPTS = 3
SHOWN_CHARS = 300


def format_table(summary: dict) -> str:
    """Reward per agent (rows) per round (columns), then each judge's score and win rate the same
    way; baselines and PGR below."""
    from orchestrator.plots import judge_metrics

    rounds = summary.get("rounds", [])
    agents = summary.get("agents", [])
    head = f"{'agent':<14}" + "".join(f"{'round ' + str(r['round']):>10}" for r in rounds)
    lines = []
    for metric in ["reward", *judge_metrics(summary)]:
        lines += ([] if metric == "reward" else ["", metric]) + [head, "-" * len(head)]
        for agent in agents:
            cells = "".join(f"{r['eval'][agent][metric]:>10.3f}" if metric in r["eval"].get(agent, {}) else f"{'-':>10}"
                            for r in rounds)
            lines.append(f"{agent:<14}{cells}")
    for name, metrics in summary.get("baselines", {}).items():
        if isinstance(metrics, dict) and "reward" in metrics:
            lines.append(f"baseline {name}: {metrics['reward']:.3f}")
    if summary.get("pgr"):
        p = summary["pgr"]
        lines.append(f"PGR (weak {p['weak']:.3f}, ceiling {p['ceiling']:.3f}): round 0 {p['round_0']}, final {p['final']}")
    return "\n".join(lines)


def read_samples(run_dir: Path, round_index: int, agent: str) -> list[dict]:
    """The per-sample rows an evaluation wrote for `agent` at a round ([] when there are none)."""
    path = run_dir / "eval" / f"round_{round_index}" / f"{agent}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _cell(text: object) -> str:
    text = as_transcript(text) if isinstance(text, list) else str(text if text is not None else "")
    text = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."
    return text.replace("|", "\\|").replace("\n", "<br>")


SCORE_KEYS = ("rule_reward", "rm_score", "safety_score")


def sample_score(row: dict) -> tuple[str, float] | None:
    """The score a sample row carries (rule reward, else a judge's), as (name, value), or None."""
    for key in SCORE_KEYS:
        if isinstance(row.get(key), (int, float)):
            return key, float(row[key])
    return None


def sample_table(run_dir: Path, round_index: int, agents: list[str], rows_per_agent: int) -> list[dict]:
    """The first `rows_per_agent` test prompts with each agent's answer at a round, for trackers'
    tables: agent, prompt (a conversation as its transcript), answer, reference and score."""
    table = []
    for agent in agents:
        for row in read_samples(run_dir, round_index, agent)[:rows_per_agent]:
            prompt = row.get("prompt")
            score = sample_score(row)
            table.append({"agent": agent, "prompt": as_transcript(prompt) if isinstance(prompt, list) else str(prompt),
                          "answer": str(row.get("answer", "")), "reference": str(row.get("reference", "")),
                          "score": score[1] if score else None})
    return table


def _score(row: dict) -> str:
    score = sample_score(row)
    return f" ({score[0]} {score[1]:.3f})" if score else ""


def render_report(summary: dict, run_dir: Path) -> str:
    rounds = summary.get("rounds", [])
    lines = [f"# Run report: {summary.get('algorithm', '').upper()}", "", "```", format_table(summary), "```", "",
             "![reward per round](plots/rewards.png)", ""]
    if len(rounds) >= 1:
        first, last = rounds[0]["round"], rounds[-1]["round"]
        agents = summary.get("agents", [])
        before = {a: read_samples(run_dir, first, a) for a in agents}
        after = {a: read_samples(run_dir, last, a) for a in agents}
        count = max((len(rows) for rows in before.values()), default=0)

        def changed(i: int) -> bool:
            return any(len(before[a]) > i and len(after[a]) > i and before[a][i].get("answer") != after[a][i].get("answer")
                       for a in agents)

        # the prompts whose answers changed first (what the rounds did), then the first ones
        shown = ([i for i in range(count) if changed(i)] + [i for i in range(count) if not changed(i)])[:SHOWN_PROMPTS]
        lines += [f"## Answers at round {first} and round {last}", "",
                  f"{len(shown)} test prompts, those whose answers changed first (every answer: "
                  "`eval/round_<N>/<agent>.jsonl`).", ""]
        for i in shown:
            reference = next(rows[i] for rows in before.values() if len(rows) > i)
            lines += [f"### Test prompt {i + 1}", "", f"> {_cell(reference.get('prompt'))}", "",
                      f"Reference answer: {_cell(reference.get('reference'))}", "",
                      f"| agent | round {first} | round {last} |", "| --- | --- | --- |"]
            for agent in summary.get("agents", []):
                was = before[agent][i] if len(before[agent]) > i else {}
                now = after[agent][i] if len(after[agent]) > i else {}
                lines.append(f"| {agent} | {_cell(was.get('answer'))}{_score(was)} | {_cell(now.get('answer'))}{_score(now)} |")
            lines.append("")
    return "\n".join(lines)
