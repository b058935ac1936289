"""The report of bench/vs_trl.py: medians over the steps, the ratio ours/TRL, phases one side lacks."""

from __future__ import annotations

import pytest

from bench.vs_trl import medians, render

OURS = [{"step_s": 10.0, "generation_s": 4.0, "train_s": 5.0, "refit_s": 0.0},
        {"step_s": 30.0, "generation_s": 6.0, "train_s": 20.0, "refit_s": 2.0},
        {"step_s": 20.0, "generation_s": 5.0, "train_s": 12.0, "refit_s": 1.0}]
TRL = [{"step_s": 40.0, "generation_s": 20.0, "train_s": 19.0},
       {"step_s": 50.0, "generation_s": 25.0, "train_s": 24.0}]


def test_medians_take_every_step_and_only_keys_all_steps_have():
    assert medians(OURS) == {"step_s": 20.0, "generation_s": 5.0, "train_s": 12.0, "refit_s": 1.0}
    assert medians(TRL + [{"step_s": 60.0}]) == {"step_s": 50.0}
    assert medians([]) == {}


def test_report_gives_the_ratio_of_median_steps_and_marks_missing_phases():
    report = render("# header", OURS, 100.0, TRL, 80.0)
    lines = report.splitlines()
    assert lines[0] == "# header"
    assert "ratio ours/TRL, median step: 0.44   total wall: 1.25" in report  # 20 / 45, 100 / 80
    step = next(line for line in lines if line.startswith("step "))
    assert step.split() == ["step", "20.0", "45.0"]
    refit = next(line for line in lines if line.startswith("refit"))
    assert refit.split() == ["refit", "1.0", "-"]  # TRL has no refit
    reward = next(line for line in lines if line.startswith("reward"))
    assert reward.split() == ["reward", "-", "-"]
    assert "per step (s): ours 10.0 30.0 20.0 | TRL 40.0 50.0" in report


def test_report_without_steps_says_which_side_logged_none():
    with pytest.raises(SystemExit, match="ours logged 3 steps, TRL 0"):
        render("# header", OURS, 1.0, [], 1.0)
