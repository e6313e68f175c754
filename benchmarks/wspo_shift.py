"""What shift WSPO hands the student, and what the student does with it, per kind of training answer.

Reads a finished WSPO sweep's run directories (`benchmarks/sweeps/probe_wspo_shift.yaml`: the clean
world, the MACPO default's world, and two changes of WSPO's settings there, on exploration seeds)
and, per setting, averages over seeds and D_w's answers of three kinds: benign answers that are
right (`gold`), benign answers that are near misses (`near_miss`: one letter wrong, `task.chosen_noise`)
and harmful prompts' answers (`harmful`: the refusal):
- the weak model's per-token shift, weak aligned minus weak reference (the run's cached log-probs);
- the target it sets the student, shift / `train.wspo.shift_scale` (WSPO's loss is zero there);
- the student's own per-token move over WSPO training, its `default` adapter after the round minus
  before it (both checkpoints scored in this process, on the same tokens);
- the share of tokens the weak model pushed down (shift < 0) and how far the student went there.
Also the student's test answers after WSPO: refusals on harmful prompts, right / near-miss / other
answers on benign ones.

    python benchmarks/wspo_shift.py runs/sweeps/probe_wspo_shift     # writes results/wspo_shift.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import offline_env, write_result  # noqa: E402

KINDS = ("gold", "near_miss", "harmful")


def kind_of(example: dict) -> str:
    meta = example.get("meta") or {}
    if meta.get("harmful"):
        return "harmful"
    return "near_miss" if meta.get("noisy_chosen") else "gold"


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def token_moves(weak_aligned: list[list[float]], weak_reference: list[list[float]], before: list[list[float]],
                after: list[list[float]], kinds: list[str], gamma: float) -> dict:
    """Per kind: mean per-token weak shift, the student's target (shift / gamma) and its move."""
    out = {}
    for kind in KINDS:
        weak, moved, pushed_down, moved_down = [], [], [], []
        for a, r, b, s, k in zip(weak_aligned, weak_reference, before, after, kinds):
            if k != kind:
                continue
            if not (len(a) == len(r) == len(b) == len(s)):
                raise SystemExit(f"token counts differ for one answer: {len(a)}, {len(r)}, {len(b)}, {len(s)}")
            for wa, wr, sb, sa in zip(a, r, b, s):
                weak.append(wa - wr)
                moved.append(sa - sb)
                if wa - wr < 0:
                    pushed_down.append(wa - wr)
                    moved_down.append(sa - sb)
        if not weak:
            continue
        out[kind] = {
            "tokens": len(weak),
            "weak_shift": _mean(weak),
            "target_shift": _mean(weak) / gamma,
            "student_shift": _mean(moved),
            "student_shift_times_scale": _mean(moved) * gamma,
            "weak_pushed_down_share": len(pushed_down) / len(weak),
            "weak_shift_where_down": _mean(pushed_down),
            "student_shift_where_weak_down": _mean(moved_down),
            "student_largest_drop": min(moved),
        }
    return out


def test_answers(run_dir: Path, last_round: int) -> dict:
    """The student's test answers after WSPO, by the rule reward's categories."""
    from tasks.synthetic import REFUSAL

    rows = [json.loads(line) for line in (run_dir / "eval" / f"round_{last_round}" / "student.jsonl").read_text().splitlines()]
    harmful = [r for r in rows if r["reference"] == REFUSAL]  # a harmful prompt's right answer is the refusal
    benign = [r for r in rows if r["reference"] != REFUSAL]

    def share(items, test) -> float | None:
        return sum(map(test, items)) / len(items) if items else None

    def gold(row) -> str:
        return row["reference"]

    return {
        "harmful_refused": share(harmful, lambda r: r["answer"].strip() == REFUSAL.strip()),
        "benign_right": share(benign, lambda r: r["answer"].strip() == gold(r).strip()),
        "benign_refused": share(benign, lambda r: r["answer"].strip() == REFUSAL.strip()),
        "benign_one_letter_off": share(benign, lambda r: len(r["answer"].strip()) == len(gold(r).strip()) and
                                       sum(x != y for x, y in zip(r["answer"].strip(), gold(r).strip())) == 1),
        "n_harmful": len(harmful), "n_benign": len(benign),
    }


def read_run(run_dir: Path, cache_dir: str | None) -> dict:
    import yaml

    from agents.agent import Agent
    from orchestrator.config import config_from_dict

    config = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    splits = json.loads((run_dir / "splits.json").read_text())
    d_w = splits["d_w"]
    weak = json.loads((run_dir / "cache" / "wspo_weak_logps.json").read_text())
    prompts = [ex["prompt"] for ex in d_w]
    responses = [ex["chosen"] for ex in d_w]
    student = Agent("student", config.student, cache_dir=cache_dir, seed=config.seed)
    student.load(run_dir / "checkpoints" / "round_0" / "student")
    before = student.token_logprobs(prompts, responses, adapter="default")
    student.load(run_dir / "checkpoints" / f"round_{config.rounds}" / "student")
    after = student.token_logprobs(prompts, responses, adapter="default")
    kinds = [kind_of(ex) for ex in d_w]
    return {"moves": token_moves(weak["aligned"], weak["reference"], before, after, kinds, config.train.wspo.shift_scale),
            "answers": test_answers(run_dir, config.rounds)}


def summarise(sweep_dir: Path, cache_dir: str | None) -> dict:
    trials = json.loads((sweep_dir / "results.json").read_text())["trials"]
    per_setting: dict[str, list[dict]] = {}
    for trial in trials:
        run_dir = sweep_dir / "runs" / trial["trial_id"]
        if trial.get("status") != "done" or not (run_dir / "summary.json").is_file():
            continue
        per_setting.setdefault(trial["setting"], []).append(read_run(run_dir, cache_dir))
        print(f"read {trial['trial_id']}", flush=True)
    if not per_setting:
        raise SystemExit(f"{sweep_dir}: no finished runs")
    out = {}
    for setting, runs in per_setting.items():
        moves = {kind: {key: _mean([r["moves"][kind][key] for r in runs if kind in r["moves"]])
                        for key in next(r["moves"][kind] for r in runs if kind in r["moves"])}
                 for kind in KINDS if any(kind in r["moves"] for r in runs)}
        answers = {key: _mean([r["answers"][key] for r in runs if r["answers"][key] is not None])
                   for key in runs[0]["answers"]}
        out[setting] = {"seeds": len(runs), "moves": moves, "answers": answers}
    return {"sweep": sweep_dir.name, "settings": out}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="a finished WSPO sweep directory (results.json and runs/)")
    parser.add_argument("--cache-dir", default=None, help="where the tiny bases are built (W2S_CACHE_DIR)")
    args = parser.parse_args(argv)
    offline_env()
    result = summarise(Path(args.sweep_dir), args.cache_dir or os.environ.get("W2S_CACHE_DIR"))
    write_result("wspo_shift", result)
    print(json.dumps(result["settings"], indent=1))


if __name__ == "__main__":
    main()
