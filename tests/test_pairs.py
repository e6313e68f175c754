"""MACPO pair construction for every ablation, and lowest-perplexity positive selection."""
from __future__ import annotations

import pytest

from orchestrator.pairs import lowest_perplexity, student_pairs, teacher_pairs

PROMPTS = ["p0", "p1", "p2"]
OWN = ["own0", "own1", "own2"]
HARD = ["hard0", "hard1", "hard2"]
PEER = ["peer0", "peer1", "peer2"]


def test_lowest_perplexity_picks_per_prompt_minimum():
    candidates = [["a0", "a1", "a2"], ["b0", "b1", "b2"], ["c0", "c1", "c2"]]
    ppl = [[3.0, 1.0, 9.0], [2.0, 5.0, 9.0], [4.0, 0.5, 1.5]]
    chosen, sources = lowest_perplexity(candidates, ppl)
    assert chosen == ["b0", "c1", "c2"] and sources == [1, 2, 2]


def test_empty_candidate_never_wins_and_ties_go_to_first():
    chosen, sources = lowest_perplexity([["", "x"], ["y", "z"]], [[0.1, 2.0], [5.0, 2.0]])
    assert chosen == ["y", "x"] and sources == [1, 0]


@pytest.mark.parametrize("mutual, hard, chosen, rejected", [
    (True, True, PEER, HARD),
    (False, True, OWN, HARD),
    (True, False, PEER, OWN),
])
def test_pairs_follow_ablation_switches(mutual, hard, chosen, rejected):
    for build in (student_pairs, teacher_pairs):
        pairs = build(PROMPTS, OWN, HARD, PEER, mutual, hard).pairs
        assert [p["chosen"] for p in pairs] == chosen
        assert [p["rejected"] for p in pairs] == rejected
        assert [p["prompt"] for p in pairs] == PROMPTS


def test_both_ablations_off_leave_no_signal_and_say_so():
    result = student_pairs(PROMPTS, OWN, HARD, PEER, mutual_positives=False, use_hard_negatives=False)
    assert result.pairs == [] and result.dropped_equal == 3


def test_equal_and_empty_pairs_are_dropped_and_counted():
    result = teacher_pairs(PROMPTS, OWN, ["same", "hard1", "hard2"], ["same", "", "peer2"])
    assert [p["prompt"] for p in result.pairs] == ["p2"]
    assert result.stats() == {"pairs": 1, "dropped_equal": 1, "dropped_empty": 1}
