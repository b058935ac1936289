"""Collapse guards: threshold and relative-change rules, after_step, for_steps, warn vs stop."""

from __future__ import annotations

import logging

import pytest

from nemo_grpo.config import ConfigError, load_config
from nemo_grpo.trainer.config import TrainConfig
from nemo_grpo.logging.guards import GUARD_EXIT_STATUS, GuardRule, GuardStop, GuardWatch, evaluate_rule


def series(*values, start=1):
    return [(start + i, float(v)) for i, v in enumerate(values)]


def test_threshold_fires_only_after_after_step():
    rule = GuardRule(metric="train/entropy", op="<", value=2.0, after_step=50)
    assert evaluate_rule(rule, [(50, 1.0)]) is None  # "after step 50" means from step 51
    firing = evaluate_rule(rule, [(50, 1.0), (57, 1.73)])
    assert firing.step == 57 and firing.value == pytest.approx(1.73)
    assert firing.message() == "guard 'train/entropy < 2.0 after step 50': train/entropy = 1.73 at step 57"
    assert evaluate_rule(rule, [(57, 2.0)]) is None  # 2.0 is not < 2.0
    assert evaluate_rule(GuardRule(metric="m", op="<=", value=2.0), [(57, 2.0)]) is not None


@pytest.mark.parametrize("op,value,fires", [(">", 5, True), (">=", 6, True), (">", 6, False), ("<", 6, False)])
def test_threshold_operators(op, value, fires):
    assert (evaluate_rule(GuardRule(metric="m", op=op, value=value), series(1, 6)) is not None) == fires


def test_drop_within_window():
    rule = GuardRule(metric="len", drop=0.8, window=20)
    assert evaluate_rule(rule, series(40, 42, 30, 20, 10)) is None  # 10 is 76% below the peak 42
    firing = evaluate_rule(rule, series(40, 42, 30, 20, 8))
    assert firing.detail == "len = 8 at step 5, down 81% from 42 at step 2"
    # the peak must lie within the window before the value: 42 at step 2 is 21 steps before step 23
    late = [(2, 42.0)] + [(s, 30.0) for s in range(3, 23)] + [(23, 8.0)]
    assert evaluate_rule(GuardRule(metric="len", drop=0.8, window=20), late) is None
    assert evaluate_rule(GuardRule(metric="len", drop=0.7, window=20), late) is not None  # 8 <= 0.3 x 30
    assert evaluate_rule(rule, [(1, 8.0)]) is None  # nothing to compare with yet


def test_rise_and_nonpositive_reference():
    rule = GuardRule(metric="ent", rise=1.0, window=5)
    assert evaluate_rule(rule, series(0.5, 0.7, 1.0)).detail.endswith("up 100% from 0.5 at step 1")
    assert evaluate_rule(rule, series(0.5, 0.7, 0.9)) is None
    assert evaluate_rule(GuardRule(metric="adv", drop=0.5, window=5), series(-1.0, -5.0)) is None


def test_for_steps_needs_consecutive_values():
    rule = GuardRule(metric="fmt", op="<", value=0.15625, for_steps=3)  # "fewer than 10 of 64" for 3 steps
    assert evaluate_rule(rule, series(0.1, 0.5, 0.1, 0.1)) is None
    firing = evaluate_rule(rule, series(0.5, 0.1, 0.1, 0.1))
    assert firing.step == 4 and "since step 2" in firing.detail
    assert "for 3 steps" in rule.describe()


def test_watch_stop_returns_guardstop_with_checkpoint_in_message():
    watch = GuardWatch([GuardRule(metric="train/entropy", op="<", value=2.0, after_step=1)])
    assert watch.check({"step": 1, "train/entropy": 1.0}) is None
    stop = watch.check({"step": 2, "train/entropy": 1.5})
    assert isinstance(stop, GuardStop) and stop.exit_status == GUARD_EXIT_STATUS == 3
    stop.checkpoint = "/ckpt/step_2"
    assert str(stop) == ("stopped by guard 'train/entropy < 2.0 after step 1': train/entropy = 1.5 at step 2; "
                         "checkpoint saved at /ckpt/step_2")
    assert "\n" not in str(stop)


def test_watch_warns_once_per_episode(caplog):
    watch = GuardWatch([GuardRule(metric="len", op="<", value=10, action="warn")])
    with caplog.at_level(logging.WARNING, logger="nemo_grpo.logging.guards"):
        for step, value in enumerate([20, 5, 4, 3, 20, 5], start=1):
            assert watch.check({"step": step, "len": value}) is None  # warn rules never stop
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["warning from guard 'len < 10.0': len = 5 at step 2",
                        "warning from guard 'len < 10.0': len = 5 at step 6"]


def test_watch_uses_resumed_history_and_skips_rows_without_the_metric():
    rule = GuardRule(metric="len", drop=0.5, window=10)
    watch = GuardWatch([rule], history=[{"step": 1, "len": 40.0, "other": 1}])
    assert watch.check({"step": 2, "other": 3}) is None  # no value: not evaluated
    assert watch.check({"step": 3, "len": 15.0}) is not None  # 15 <= 0.5 x 40 (step 1, before the resume)


def test_watch_warns_once_about_a_metric_never_logged(caplog):
    watch = GuardWatch([GuardRule(metric="train/entropyy", op="<", value=1),
                        GuardRule(metric="val/math500/accuracy", op="<", value=0.1)])
    with caplog.at_level(logging.WARNING):
        for step in range(1, 6):
            watch.check({"step": step, "train/entropy": 2.0})
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1  # the validation metric waits for a validation row
    assert "'train/entropyy' has not been logged" in messages[0] and "did you mean 'train/entropy'" in messages[0]


def test_config_section_and_its_errors():
    cfg = load_config(None, ['guards=[{metric: train/entropy, op: "<", value: 2, after_step: 50}, '
                             '{metric: train/response_length_mean, drop: 0.8, window: 20, action: warn}]',
                             "policy.model_name=x"], TrainConfig)
    assert cfg.guards[0] == GuardRule(metric="train/entropy", op="<", value=2.0, after_step=50)
    assert cfg.guards[1].describe() == "train/response_length_mean falls by 80% within 20 steps"
    for bad, message in [("{metric: m}", "either `op` and `value`"), ('{metric: m, op: "<"}', "needs both"),
                         ("{metric: m, drop: 0.8}", "window"), ("{metric: m, drop: 1.5, window: 3}", "drop: must be"),
                         ('{metric: m, op: "=", value: 1}', "guards[0].op"), ("{metric: m, op: '<', value: 1, windw: 2}",
                                                                             "did you mean 'guards[0].window'")]:
        with pytest.raises(ConfigError) as err:
            load_config(None, [f"guards=[{bad}]", "policy.model_name=x"], TrainConfig)
        assert message in str(err.value), (bad, str(err.value))
