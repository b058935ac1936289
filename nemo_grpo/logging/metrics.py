"""Step metrics from rollouts and grades: pure functions over plain lists and tensors."""

from __future__ import annotations

from statistics import mean
from typing import Any

import torch

from nemo_grpo.algorithms.policy_loss import SHARE_METRICS


def rollout_metrics(rollouts: list[Any], grades: list[Any], rewards: torch.Tensor, advantages: torch.Tensor,
                    group_size: int) -> dict[str, float]:
    """Reward, correctness, format, lengths, truncation and group statistics of one step."""
    lengths = [len(r.response_ids) for r in rollouts]
    correct = torch.tensor([float(g.correct) for g in grades])
    groups = correct.reshape(-1, group_size)
    solved = groups.sum(-1)
    return {
        "train/reward_mean": float(rewards.mean()),
        "train/reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "train/correct_rate": float(correct.mean()),
        "train/format_rate": mean(float(g.format_ok) for g in grades),
        "train/answer_rate": mean(float(g.extracted is not None) for g in grades),
        "train/solve_none": float((solved == 0).float().mean()),
        "train/solve_all": float((solved == group_size).float().mean()),
        "train/response_length_mean": mean(lengths),
        "train/response_length_max": float(max(lengths)),
        "train/truncated_rate": mean(float(r.finish_reason == "length") for r in rollouts),
        "train/advantage_mean": float(advantages.mean()),
        "train/advantage_std": float(advantages.std()) if len(advantages) > 1 else 0.0,
        "train/tokens_generated": float(sum(lengths)),
        "reward/grader_failures": float(sum(g.status in ("timeout", "error") for g in grades)),
    }


def throughput_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Tokens per second of generation (generated tokens / generation time) and of training
    (response tokens through forward + backward, over all PPO epochs / train time)."""
    out = {}
    for name, tokens, seconds in (("generation", "train/tokens_generated", "timing/generation_s"),
                                  ("train", "train/tokens_trained", "timing/train_s")):
        if metrics.get(seconds) and tokens in metrics:
            out[f"throughput/{name}_tokens_per_s"] = metrics[tokens] / metrics[seconds]
    return out


def merge_rank_metrics(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """Combine the policy ranks' train metrics: the loss and its terms (`SHARE_METRICS`) add up over
    ranks (each is a share of the global normalisation), grad norm and lr are global, the rest are
    means weighted by the tokens each rank trained on (ranks without trained tokens carry no such
    metrics)."""
    out: dict[str, float] = {}
    tokens = [m.get("tokens", 0.0) for m in per_rank]
    total = sum(tokens)
    keys = {k for m in per_rank for k in m}
    for key in sorted(keys):
        values = [m.get(key, 0.0) for m in per_rank]
        if key in ("loss", "tokens") or key in SHARE_METRICS:
            out[key] = sum(values)
        elif key in ("grad_norm", "lr"):
            out[key] = values[0]
        elif key == "train_time_s" or key.endswith("_max"):
            out[key] = max(m[key] for m in per_rank if key in m)
        elif key.endswith("_min"):
            out[key] = min(m[key] for m in per_rank if key in m)
        elif total:
            out[key] = sum(m[key] * t for m, t in zip(per_rank, tokens) if key in m) / total
    return out
