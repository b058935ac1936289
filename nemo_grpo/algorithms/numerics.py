"""Numerics guard: how far the engine's sampling log-probs are from the trainer's.

Both functions take per-token log-probs of the same sampled tokens, shaped [batch, seq], and a
mask of the response tokens (1 = counts). Logged every step as `train/token_mult_prob_error`
and `train/gen_kl_error`; with matching weights and numerics the first is 1 and the second 0.
"""

from __future__ import annotations

import torch


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    count = mask.sum()
    if count == 0:
        raise ValueError("numerics metric over an empty mask: no response tokens")
    return (values * mask).sum() / count


def _check(train_logprobs: torch.Tensor, gen_logprobs: torch.Tensor, mask: torch.Tensor) -> None:
    if not (train_logprobs.shape == gen_logprobs.shape == mask.shape):
        raise ValueError(
            f"shape mismatch: train {tuple(train_logprobs.shape)}, gen {tuple(gen_logprobs.shape)}, "
            f"mask {tuple(mask.shape)}"
        )


def token_mult_prob_error(train_logprobs: torch.Tensor, gen_logprobs: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over response tokens of exp(|logp_train - logp_gen|): 1.0 when they agree exactly."""
    _check(train_logprobs, gen_logprobs, mask)
    diff = (train_logprobs.double() - gen_logprobs.double()).abs()
    diff = torch.where(mask.bool(), diff, torch.zeros_like(diff))  # padding may hold -inf/nan
    return float(_masked_mean(diff.exp(), mask))


def gen_train_kl(train_logprobs: torch.Tensor, gen_logprobs: torch.Tensor, mask: torch.Tensor) -> float:
    """KL(gen || train) estimated on the sampled tokens (drawn from the generator) with the
    non-negative k3 estimator: mean of r - 1 - log r, r = p_train / p_gen."""
    _check(train_logprobs, gen_logprobs, mask)
    log_ratio = train_logprobs.double() - gen_logprobs.double()
    log_ratio = torch.where(mask.bool(), log_ratio, torch.zeros_like(log_ratio))
    return float(_masked_mean(log_ratio.exp() - 1 - log_ratio, mask))
