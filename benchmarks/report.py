"""Render benchmarks/README.md from the JSON results the scripts wrote (numbers are never typed)."""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

INTRO = """# Benchmarks

Scripts (not tests) that measure the system and write `results/<name>.json`; this page is rendered
from those files by `python benchmarks/report.py`. Run them from the repository root with the
project's venv, e.g. `python benchmarks/teacher_scaling.py`.

| script | measures |
| --- | --- |
| `claims.py` | whether the default world shows MACPO working: student / teacher rewards over seeds, K=1 vs K=3, ablations |
| `wspo_claims.py` | WSPO vs the student's SFT and DPO baselines over seeds |
| `teacher_scaling.py` | one MACPO round with 1, 2, 4, 8 teachers: wall time per stage, parallel efficiency, orchestration overhead |
| `actor_overhead.py` | generate / train through `AgentActor` vs the plain `Agent` in-process; tokens/s |
"""


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def machine_line(data: dict) -> str:
    m = data["machine"]
    return f"_Measured {data['measured_at']} on {m['cpus']} CPU cores ({m['platform']}, torch {m['torch']}{', ' + m['cuda'] if m.get('cuda') else ''})._"


def section_claims(data: dict, title: str) -> list[str]:
    lines = [f"## {title}", "", machine_line(data), "", f"Seeds: {data['seeds']}", "", data["table"], ""]
    for claim, per_seed in data.get("claims_per_seed", {}).items():
        lines.append(f"- `{claim}`: holds in {sum(per_seed)} of {len(per_seed)} seeds")
    return lines + [""]


def section_scaling(data: dict) -> list[str]:
    lines = ["## Teacher scaling (one MACPO round)", "", machine_line(data), "",
             "| teachers | round wall s | actor CPU s | parallel efficiency | orchestration overhead | time ratio vs K=1 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in data["rows"]:
        lines.append(f"| {row['teachers']} | {row['round_wall_s']:.2f} | {row['actor_cpu_s']:.2f} | {row['parallel_efficiency']:.2f} | "
                     f"{100 * row['overhead_fraction']:.1f}% | {row['time_ratio_vs_first']:.2f} |")
    lines += ["", "Per stage, largest K:", "", "| stage | wall s | actor CPU s (sum) | efficiency | overhead |", "| --- | --- | --- | --- | --- |"]
    for stage, s in data["rows"][-1]["stages"].items():
        lines.append(f"| {stage} | {s['wall_s']:.2f} | {s['actor_cpu_s']:.2f} | {s['parallel_efficiency']:.2f} | {100 * s['overhead_fraction']:.1f}% |")
    return lines + [""]


def section_overhead(data: dict) -> list[str]:
    lines = ["## Actor wrapper cost and throughput", "", machine_line(data), "",
             f"Model `{data['model']}`, {data['examples']} examples, median of repeats.", "",
             "| call | plain Agent s | through AgentActor s | extra | tokens/s (plain) |", "| --- | --- | --- | --- | --- |"]
    for name, r in data["results"].items():
        lines.append(f"| {name} | {r['plain_s']:.3f} | {r['actor_s']:.3f} | {100 * r['extra_fraction']:+.1f}% | {r['tokens_per_s']} |")
    return lines + [""]


def main() -> None:
    lines = [INTRO]
    if (data := load("claims")):
        lines += section_claims(data, "MACPO on the default world")
    if (data := load("wspo_claims")):
        lines += section_claims(data, "WSPO on the default world")
    if (data := load("teacher_scaling")):
        lines += section_scaling(data)
    if (data := load("actor_overhead")):
        lines += section_overhead(data)
    (HERE / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))
    inject_into_project_readme()


def inject_into_project_readme() -> None:
    """Replace the `<!-- results:NAME -->` blocks of the top-level README with measured tables."""
    import re

    readme = HERE.parent / "README.md"
    text = readme.read_text()
    blocks = {}
    if (data := load("claims")):
        blocks["claims"] = section_claims(data, "")[2:]
    if (data := load("wspo_claims")):
        blocks["wspo"] = section_claims(data, "")[2:]
    for name, lines in blocks.items():
        body = "\n".join(lines).strip()
        text = re.sub(rf"<!-- results:{name} -->.*?<!-- /results:{name} -->",
                      f"<!-- results:{name} -->\n{body}\n<!-- /results:{name} -->", text, flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    main()
