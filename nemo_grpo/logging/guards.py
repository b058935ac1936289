"""Collapse guards: rules over the metrics history that warn about, or stop, a run going wrong.

A rule watches one metric and has one of two forms:

* threshold: ``{metric: train/entropy, op: "<", value: 2.0, after_step: 50}`` fires at a logged
  value that satisfies ``value op threshold`` at a step after ``after_step``;
* relative change: ``{metric: train/response_length_mean, drop: 0.8, window: 20}`` fires at a value
  at most (1 - drop) x the highest value of the ``window`` steps before it ("falls by 80% within
  20 steps"); ``rise: 2.0`` fires at a value at least (1 + rise) x the lowest one. The reference
  must be positive (relative changes of values <= 0 mean nothing), else the rule does not fire.

``for_steps: N`` asks that the condition hold at N logged values in a row. ``action: warn`` logs
one warning per episode (the condition becoming true after being false); ``action: stop`` ends the
run (see :class:`GuardStop`). :func:`evaluate_rule` is pure; :class:`GuardWatch` is the loop's
stateful wrapper (history, episodes, the warning about a metric that is never logged).
"""

from __future__ import annotations

import difflib
import logging
import math
import operator
from dataclasses import dataclass
from typing import Any, Literal

from nemo_grpo.config.validate import REQUIRED

log = logging.getLogger(__name__)

# Exit status of a run that a stop rule ended (2 is a user error, 1 an unexpected failure).
GUARD_EXIT_STATUS = 3

# Rows (steps) after which a rule's metric that never appeared gets a warning (some metrics, such
# as train/entropy on a step that trained nothing, may be missing from a row or two).
MISSING_GRACE_ROWS = 3

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass
class GuardRule:
    """One entry of the `guards:` list (documented in docs/metrics.md)."""

    metric: str = REQUIRED
    action: Literal["warn", "stop"] = "stop"
    op: Literal["<", "<=", ">", ">="] | None = None
    value: float | None = None
    drop: float | None = None
    rise: float | None = None
    window: int | None = None
    after_step: int = 0
    for_steps: int = 1
    name: str | None = None

    def validate(self) -> None:
        threshold = self.op is not None or self.value is not None
        change = self.drop is not None or self.rise is not None
        if threshold == change:
            raise ValueError(f"op: the guard on {self.metric} needs either `op` and `value` (threshold) or "
                             "`drop`/`rise` and `window` (relative change), not both or neither")
        if threshold and (self.op is None or self.value is None):
            raise ValueError(f"op: the threshold guard on {self.metric} needs both `op` (one of < <= > >=, "
                             "quoted in YAML) and `value`")
        if change:
            if self.drop is not None and self.rise is not None:
                raise ValueError(f"drop: the guard on {self.metric} sets `drop` and `rise`; use two rules")
            if self.drop is not None and not 0 < self.drop < 1:
                raise ValueError(f"drop: must be in (0, 1) (0.8 = falls by 80%), got {self.drop}")
            if self.rise is not None and self.rise <= 0:
                raise ValueError(f"rise: must be positive (1.0 = doubles), got {self.rise}")
            if self.window is None or self.window < 1:
                raise ValueError(f"window: a relative-change guard needs `window` >= 1 (steps), got {self.window}")
        elif self.window is not None:
            raise ValueError("window: only relative-change guards (`drop`/`rise`) take a window")
        if self.after_step < 0:
            raise ValueError(f"after_step: must be >= 0, got {self.after_step}")
        if self.for_steps < 1:
            raise ValueError(f"for_steps: must be at least 1, got {self.for_steps}")

    def describe(self) -> str:
        """How the rule reads in messages, e.g. `train/entropy < 2.0 after step 50`."""
        if self.name:
            return self.name
        if self.op is not None:
            text = f"{self.metric} {self.op} {float(self.value)!r}"
        elif self.drop is not None:
            text = f"{self.metric} falls by {_pct(self.drop)} within {self.window} steps"
        else:
            text = f"{self.metric} rises by {_pct(self.rise)} within {self.window} steps"
        if self.for_steps > 1:
            text += f" for {self.for_steps} steps"
        if self.after_step:
            text += f" after step {self.after_step}"
        return text


@dataclass
class Firing:
    """A rule whose condition holds at the newest value of its metric."""

    rule: GuardRule
    step: int
    value: float
    detail: str  # the values that made it fire, for the message

    def message(self) -> str:
        return f"guard '{self.rule.describe()}': {self.detail}"


Series = list[tuple[int, float]]  # (step, value) of one metric, in logging order


def _holds_at(rule: GuardRule, series: Series, i: int) -> str | None:
    """The detail text if the rule's condition holds at point i of the series, else None."""
    step, value = series[i]
    if step <= rule.after_step or not math.isfinite(value):
        return None
    here = f"{rule.metric} = {_num(value)} at step {step}"
    if rule.op is not None:
        return here if _OPS[rule.op](value, rule.value) else None
    earlier = [(s, v) for s, v in series[:i] if step - rule.window <= s < step and math.isfinite(v)]
    if not earlier:
        return None
    if rule.drop is not None:
        ref_step, ref = max(earlier, key=lambda p: p[1])
        if ref > 0 and value <= (1 - rule.drop) * ref:
            return f"{here}, down {_pct(1 - value / ref)} from {_num(ref)} at step {ref_step}"
        return None
    ref_step, ref = min(earlier, key=lambda p: p[1])
    if ref > 0 and value >= (1 + rule.rise) * ref:
        return f"{here}, up {_pct(value / ref - 1)} from {_num(ref)} at step {ref_step}"
    return None


def evaluate_rule(rule: GuardRule, series: Series) -> Firing | None:
    """Whether `rule` fires at the last point of `series` (its condition holding at the last
    `for_steps` points)."""
    if len(series) < rule.for_steps:
        return None
    details = [_holds_at(rule, series, i) for i in range(len(series) - rule.for_steps, len(series))]
    if any(d is None for d in details):
        return None
    if rule.for_steps > 1:
        first = series[-rule.for_steps][0]
        details[-1] += f" (and at every logged step since step {first})"
    step, value = series[-1]
    return Firing(rule, step, value, details[-1])


def metric_series(history: list[dict[str, Any]], metric: str) -> Series:
    """(step, value) of every row of `history` that holds a number for `metric`."""
    return [(int(row["step"]), float(row[metric])) for row in history if _is_number(row.get(metric))]


class GuardStop(Exception):
    """A stop rule fired. `checkpoint` is set by the loop once the step is saved; str() is the
    one-line message the run ends with."""

    exit_status = GUARD_EXIT_STATUS

    def __init__(self, firing: Firing):
        super().__init__(firing.message())
        self.firing = firing
        self.checkpoint: str | None = None
        self.context = ""  # who was stopped, when it is not the whole program (a curriculum's stage)

    def __str__(self) -> str:
        saved = (f"checkpoint saved at {self.checkpoint}" if self.checkpoint
                 else "no checkpoint saved (checkpointing.enabled is false)")
        return f"{self.context}stopped by {self.firing.message()}; {saved}"


class GuardWatch:
    """The loop's guard state: `check(row)` after each metrics row returns a GuardStop to raise
    (after saving a checkpoint) or None; warn rules log one warning per episode."""

    def __init__(self, rules: list[GuardRule], history: list[dict[str, Any]] | None = None):
        self.rules = list(rules)
        self.metrics = {r.metric for r in self.rules}
        self.history = [self._keep(row) for row in history or []]  # earlier rows (a resumed run)
        self.active: set[int] = set()  # warn rules in a firing episode
        self.seen: set[str] = {k for row in history or [] for k in row}
        self.rows_checked = 0
        self.warned_missing: set[str] = set()

    def _keep(self, row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k == "step" or k in self.metrics}

    def check(self, row: dict[str, Any]) -> GuardStop | None:
        if not self.rules:
            return None
        self.seen.update(row)
        self.rows_checked += 1
        self.history.append(self._keep(row))
        self._warn_missing()
        stop = None
        for index, rule in enumerate(self.rules):
            if not _is_number(row.get(rule.metric)):
                continue  # evaluated only when a new value arrives
            firing = evaluate_rule(rule, metric_series(self.history, rule.metric))
            if firing is None:
                self.active.discard(index)
            elif rule.action == "stop":
                stop = stop or GuardStop(firing)
            elif index not in self.active:
                self.active.add(index)
                log.warning("warning from %s", firing.message())
        return stop

    def _warn_missing(self) -> None:
        """A rule's metric that no row has held after a few rows is probably misspelt: say so once
        (validation metrics only once some validation row has been logged)."""
        if self.rows_checked < MISSING_GRACE_ROWS:
            return
        validated = any(k.startswith("val/") for k in self.seen)
        for metric in sorted(self.metrics - self.seen - self.warned_missing):
            if metric.startswith("val/") and not validated:
                continue
            self.warned_missing.add(metric)
            close = difflib.get_close_matches(metric, sorted(self.seen), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            log.warning("guards: metric '%s' has not been logged in %d rows; if misspelt, its rules never fire%s",
                        metric, self.rows_checked, hint)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value: float) -> str:
    return f"{value:.4g}"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.0f}%"
