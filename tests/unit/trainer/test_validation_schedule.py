"""When the loop validates: every val_period steps, and after the last step with val_at_end."""

from __future__ import annotations

from nemo_grpo.trainer.validation import validation_due
from nemo_grpo.trainer.config import GRPOConfig


def due_steps(grpo: GRPOConfig, last_step: int) -> list[int]:
    return [s for s in range(1, last_step + 1) if validation_due(s, grpo, last=s == last_step)]


def test_period_and_end():
    assert due_steps(GRPOConfig(val_period=10, val_at_end=True), 25) == [10, 20, 25]
    assert due_steps(GRPOConfig(val_period=10, val_at_end=False), 25) == [10, 20]
    assert due_steps(GRPOConfig(val_period=0, val_at_end=True), 7) == [7]
    assert due_steps(GRPOConfig(val_period=0, val_at_end=False), 7) == []
    assert due_steps(GRPOConfig(val_period=5, val_at_end=True), 10) == [5, 10]  # no second run at the end
