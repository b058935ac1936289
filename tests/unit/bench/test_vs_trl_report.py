"""The report of bench/vs_trl.py: medians over the steps, the ratio ours/TRL, phases one side lacks,
and our step times read from a run's metrics.jsonl."""

from __future__ import annotations

import json

import pytest

from bench.vs_trl import Side, medians, ours_steps, render

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
    report = render("# header", Side(OURS, "vllm", 100.0, "0.1 -> 2.0"), Side(TRL, "HF generate", 80.0, "2.0 -> 2.1"))
    lines = report.splitlines()
    assert lines[:2] == ["# header", "generation: ours vllm, TRL HF generate"]
    assert "ratio ours/TRL, median step: 0.44   total wall: 1.25" in report  # 20 / 45, 100 / 80
    row = {line.split()[0]: line.split()[1:] for line in lines[3:8]}
    assert row == {"step": ["20.0", "45.0"], "generation": ["5.0", "22.5"], "reward": ["-", "-"],
                   "train": ["12.0", "21.5"], "refit": ["1.0", "-"]}  # TRL has no refit
    assert "per step (s): ours 10.0 30.0 20.0 | TRL 40.0 50.0" in report
    assert "ours 0.1 -> 2.0, TRL 2.0 -> 2.1" in report


def test_report_without_steps_says_which_side_logged_none():
    with pytest.raises(SystemExit, match="ours logged 3 steps, TRL 0"):
        render("# header", Side(OURS, "vllm"), Side([], "HF generate"))


def test_our_steps_come_from_the_timing_keys_of_step_rows(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": 0, "val/arithmetic/avg@4": 0.0},  # a validation row: no step time
            {"step": 1, "timing/step_s": 9.0, "timing/generation_s": 3.0, "timing/train_s": 5.0,
             "timing/reward_s": 0.5, "generation/backend": "vllm"},
            {"step": 2, "timing/step_s": 11.0, "timing/generation_s": 3.5, "timing/train_s": 6.0,
             "timing/reward_s": 0.5, "timing/refit_s": 1.0, "generation/backend": "vllm"}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = ours_steps(metrics)
    assert got["generation"] == "vllm"
    assert got["rows"] == [{"step_s": 9.0, "generation_s": 3.0, "reward_s": 0.5, "train_s": 5.0, "refit_s": 0.0},
                           {"step_s": 11.0, "generation_s": 3.5, "reward_s": 0.5, "train_s": 6.0, "refit_s": 1.0}]
