"""Learning-rate schedule and the merge of the policy ranks' metrics."""

from __future__ import annotations

import pytest

from nemo_grpo.policy.config import SchedulerConfig
from nemo_grpo.logging.metrics import merge_rank_metrics
from nemo_grpo.policy.model import lr_lambda


def test_warmup_then_constant():
    f = lr_lambda(SchedulerConfig(name="constant", warmup_steps=4), total_steps=100)
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_linear_and_cosine_decay_to_the_floor():
    lin = lr_lambda(SchedulerConfig(name="linear", warmup_steps=0, min_lr_ratio=0.1), total_steps=10)
    assert lin(0) == pytest.approx(1.0) and lin(10) == pytest.approx(0.1) and lin(5) == pytest.approx(0.55)
    cos = lr_lambda(SchedulerConfig(name="cosine", warmup_steps=2, min_lr_ratio=0.0), total_steps=12)
    assert cos(2) == pytest.approx(1.0) and cos(7) == pytest.approx(0.5) and cos(12) == pytest.approx(0.0)


def test_merge_rank_metrics():
    ranks = [
        {"loss": 0.2, "pg_loss": 0.25, "grad_norm": 3.0, "lr": 1e-5, "tokens": 30.0, "entropy": 1.0, "ratio_max": 1.2,
         "ratio_min": 0.9},
        {"loss": 0.1, "pg_loss": 0.05, "grad_norm": 3.0, "lr": 1e-5, "tokens": 10.0, "entropy": 2.0, "ratio_max": 1.5,
         "ratio_min": 0.8},
        {"loss": 0.0, "grad_norm": 3.0, "lr": 1e-5, "tokens": 0.0},  # a rank with only padding rows
    ]
    out = merge_rank_metrics(ranks)
    assert out["loss"] == pytest.approx(0.3)  # shares of one global normalisation add up
    assert out["pg_loss"] == pytest.approx(0.3)  # so do the loss's terms
    assert out["entropy"] == pytest.approx(1.25)  # token-weighted
    assert (out["ratio_max"], out["ratio_min"]) == (1.5, 0.8)
    assert out["tokens"] == 40.0 and out["grad_norm"] == 3.0
