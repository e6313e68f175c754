"""Bad input, tried systematically (benchmarks/bad_inputs.py builds the table): every CLI override
of every config key with a wrong type, an unknown sub-key, a key under a plain value or an index
past a list's end; config files that are not UTF-8, empty, not a mapping or not YAML; `--resume`
of a run whose config.yaml is broken; data files truncated, with an invalid byte, the wrong columns
or empty. Each must be one line and exit 2, and nothing on disk may change."""
from __future__ import annotations

import pytest

from benchmarks.bad_inputs import all_cases, try_case

CASES = all_cases()


def test_the_table_covers_every_family_and_every_config_key():
    families = {case.family for case in CASES}
    assert families == {"override", "config file", "resume", "data file"}
    assert sum(case.family == "override" for case in CASES) > 300


@pytest.mark.parametrize("family", ["override", "config file", "resume", "data file"])
def test_every_bad_input_is_one_line_exit_2_and_changes_nothing(family):
    results = [try_case(case) for case in CASES if case.family == family]
    wrong = [r for r in results if not r["one_line_exit_2"] or r["disk_changed"]]
    assert not wrong, wrong[:5]
