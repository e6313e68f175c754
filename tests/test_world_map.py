"""The map's bookkeeping: trials from sweep files grouped into cells by the world they ran in, and
full MACPO compared with its ablations and with one teacher seed by seed."""
from __future__ import annotations

import json

import pytest

from benchmarks.world_map import render_table, summarise, load_runs


def trial(setting, seed, overrides, round0, final, teachers=(0.80, 0.81)):
    metrics = {"student.round0": round0, "student.final": final, "student.gain": final - round0,
               "teachers_mean.round0": teachers[0], "teachers_mean.final": teachers[1],
               "teachers_mean.gain": teachers[1] - teachers[0], "pgr.round0": 0.5, "pgr.final": 0.6}
    return {"setting": setting, "seed": seed, "status": "done", "overrides": [*overrides, f"seed={seed}"], "metrics": metrics}


def test_cells_pair_ablations_and_one_teacher_by_seed(tmp_path):
    noisy = ["task.chosen_noise=0.5"]
    trials = [trial("full", s, noisy, 0.90, 0.92 + 0.01 * s) for s in range(3)]
    trials += [trial("no_mp", s, [*noisy, "ablation.mutual_positives=false"], 0.90, 0.93) for s in range(3)]
    trials += [trial("k1", s, [*noisy, "teachers.count=1"], 0.80, 0.85) for s in range(3)]
    trials += [trial("clean", s, ["task.chosen_noise=0.0"], 0.95, 0.94) for s in range(3)]
    trials.append({**trial("full", 9, noisy, 0.0, 0.0), "status": "failed"})  # failures are not data
    (tmp_path / "map_chosen_noise.json").write_text(json.dumps({"spec": {"config": None}, "trials": trials}))
    (tmp_path / "unrelated.json").write_text(json.dumps({"spec": {}, "trials": [trial("x", 0, [], 0, 1)]}))
    rows = summarise(load_runs(tmp_path))
    by_world = {(r["noise"], r["k"]): r for r in rows}
    assert set(by_world) == {(0.5, 3), (0.5, 1), (0.0, 3)}
    full = by_world[(0.5, 3)]
    assert full["seeds"] == [0, 1, 2] and full["student_gain"]["holds"] == 3
    # full - (-MP) per seed: -0.01, 0.00, +0.01 -> holds (> 0) in 1 of 3
    assert full["vs"]["-MP"]["holds"] == 1 and abs(full["vs"]["-MP"]["mean"]) < 1e-9
    assert full["vs"]["K=1"]["holds"] == 3 and "-HN" not in full["vs"]
    assert by_world[(0.0, 3)]["student_gain"]["holds"] == 0 and by_world[(0.0, 3)]["vs"] == {}
    table = render_table(rows)
    # map_chosen_noise ran before task.harm_words existed: its cells are the 3-word worlds, while a
    # trial of macpo_claims without overrides is today's default (12 words)
    assert "| 0.5 | weak | 3 | 2 | harm_words 3 | 3 |" in table and "(1/3)" in table
    (tmp_path / "macpo_claims.json").write_text(json.dumps({"spec": {}, "trials": [trial("macpo", 0, [], 0.8, 0.9)]}))
    default = [r for r in summarise(load_runs(tmp_path)) if r["other"] == {}]
    assert [(r["noise"], r["k"], r["seeds"]) for r in default] == [(0.5, 3, [0])]


def test_wspo_shift_reads_the_weak_shift_its_target_and_the_students_move_per_kind():
    from benchmarks.wspo_shift import kind_of, token_moves

    kinds = [kind_of({"meta": {"harmful": False}}), kind_of({"meta": {"noisy_chosen": True}}), kind_of({"meta": {"harmful": True}})]
    assert kinds == ["gold", "near_miss", "harmful"]
    # per token: weak aligned, weak reference, student before, student after
    aligned, reference = [[-1.0, -2.0], [-1.0, -3.0], [-0.5]], [[-2.0, -2.5], [-1.0, -2.0], [-0.5]]
    before, after = [[-3.0, -3.0], [-2.0, -2.0], [-1.0]], [[-1.0, -2.0], [-1.0, -6.0], [-1.0]]
    moves = token_moves(aligned, reference, before, after, kinds, gamma=0.1)
    gold, near, harmful = moves["gold"], moves["near_miss"], moves["harmful"]
    assert gold["weak_shift"] == pytest.approx(0.75) and gold["target_shift"] == pytest.approx(7.5)
    assert gold["student_shift"] == pytest.approx(1.5) and gold["weak_pushed_down_share"] == 0
    assert near["weak_pushed_down_share"] == 0.5 and near["weak_shift_where_down"] == pytest.approx(-1.0)
    assert near["student_shift_where_weak_down"] == pytest.approx(-4.0) and near["student_largest_drop"] == pytest.approx(-4.0)
    assert harmful["weak_shift"] == 0 and harmful["tokens"] == 1
