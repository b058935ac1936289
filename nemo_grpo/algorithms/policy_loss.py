"""Batch-level policy loss: surrogate + KL + entropy bonus + extras, with global normalisers.

Contract (what the training loop passes, per micro-batch):

* :class:`LossBatch` tensors of shape [B, T] (response positions only, right-padded):
  ``logprobs`` current policy (differentiable, temperature-scaled), ``mask`` 0/1,
  ``advantages`` ([B, T] or [B]), optionally ``old_logprobs`` (policy that produced the data, or the
  pre-update snapshot; None = on-policy shortcut ``logprobs.detach()``), ``ref_logprobs`` (reference
  model, needed when a KL coefficient is non-zero), ``gen_logprobs`` (rollout engine's log-probs,
  for importance-sampling correction and ``token_mult_prob_error``), ``entropy`` (needed for the
  entropy bonus, top-entropy masking and Archer; differentiable if the bonus is on), ``sample_mask``
  [B] (0 drops a whole response) and ``rewards`` [B] (for the positive-example NLL).
* a :class:`~nemo_grpo.algorithms.aggregation.Normalizer` with the token and sequence counts of the
  WHOLE optimisation batch across all micro-batches and data-parallel ranks.

Then ``sum over micro-batches and ranks of policy_loss(...)[0]`` equals the loss of the full batch
computed in one piece, and so does the sum of their gradients. With DDP (which AVERAGES gradients
over ``world_size`` ranks) multiply each rank's loss by ``world_size``; with a SUM all-reduce use it
as is. Exceptions, documented where they occur: Archer's split KL terms and the positive-example
NLL are normalised by their own token counts (as in Archer / NeMo) unless global counts are passed,
and top-entropy masking takes its quantile over the micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nemo_grpo.algorithms.aggregation import Normalizer, aggregate
from nemo_grpo.algorithms.archer import archer_ranges, entropy_split
from nemo_grpo.algorithms.config import LossConfig
from nemo_grpo.algorithms.importance import rollout_importance_weights
from nemo_grpo.algorithms.kl import kl_estimate, kl_weight
from nemo_grpo.algorithms.losses import clipped_surrogate, get_policy_loss


@dataclass
class LossBatch:
    """Per-token inputs of :func:`policy_loss` (see the module docstring)."""

    logprobs: torch.Tensor
    mask: torch.Tensor
    advantages: torch.Tensor
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    gen_logprobs: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    sample_mask: torch.Tensor | None = None
    rewards: torch.Tensor | None = None


def _frac(flag: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return (flag & keep).sum().float() / keep.sum().clamp(min=1)


def _surrogate(batch, cfg, adv, old, keep, generator):
    if cfg.archer.enabled:
        if batch.entropy is None:
            raise ValueError("loss.archer.enabled needs LossBatch.entropy (per-token entropy of the current policy)")
        threshold, low, high = entropy_split(batch.entropy, keep, cfg.archer.entropy_quantile)
        lo, hi = archer_ranges(low, cfg.archer)
        d = batch.logprobs - old
        if cfg.log_ratio_clamp is not None:
            d = d.clamp(-cfg.log_ratio_clamp, cfg.log_ratio_clamp)
        loss, flags = clipped_surrogate(torch.exp(d), adv, lo, hi, cfg.dual_clip_c)
        flags.update(low_entropy=low, high_entropy=high, entropy_threshold=threshold)
        return loss, flags
    fn = get_policy_loss(cfg.name)
    if cfg.name == "clip_cov":
        return fn(batch.logprobs, old, adv, keep, cfg, generator=generator)
    return fn(batch.logprobs, old, adv, keep, cfg)


# Metrics that are a micro-batch's share of a term aggregated over the whole optimizer step (divided
# by the step's global normaliser): like the loss, they add up over micro-batches and ranks.
SHARE_METRICS = frozenset({"pg_loss", "entropy_term", "kl_ref"})


def _kl_terms(batch, cfg, old, keep, normalizer, flags, metrics):
    """KL loss term(s); Archer splits it into low/high-entropy parts with their own counts."""
    if batch.ref_logprobs is None:
        raise ValueError("a KL coefficient is set but LossBatch.ref_logprobs is None")
    w = kl_weight(cfg.kl_weight, batch.logprobs, old, batch.gen_logprobs)
    k = kl_estimate(batch.logprobs, batch.ref_logprobs, cfg.kl_type,
                    input_clamp=cfg.kl_input_clamp, output_clamp=cfg.kl_output_clamp, weight=w)
    if not cfg.archer.enabled:
        term = aggregate(k, keep, cfg.aggregation, normalizer)
        metrics["kl_ref"] = term.detach()
        return cfg.kl_coef * term
    total = torch.zeros((), dtype=k.dtype, device=k.device)
    for part, coef in (("low_entropy", cfg.archer.low_entropy_kl_coef), ("high_entropy", cfg.archer.high_entropy_kl_coef)):
        part_mask = flags[part]
        local = Normalizer.from_mask(part_mask, norm_constant=normalizer.norm_constant)
        if local.num_tokens == 0:
            continue
        term = aggregate(k, part_mask, cfg.aggregation, local)
        metrics[f"kl_ref_{part}"] = term.detach()
        total = total + coef * term
    return total


def policy_loss(
    batch: LossBatch,
    cfg: LossConfig,
    normalizer: Normalizer,
    *,
    num_positive_tokens: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss of one micro-batch and its metrics (detached scalars over this micro-batch).

    ``total = agg(w * L_pg) + kl_coef * agg(k(logp, ref)) - entropy_coef * agg(H)
    + positive_nll_coef * NLL_pos`` where ``agg`` uses ``cfg.aggregation`` and the global
    ``normalizer``; ``w`` is the importance-sampling correction (if enabled). ``generator`` feeds the
    random token choice of clip_cov. Metrics: ``pg_loss``, ``clipfrac_low/high/dual``, ``clipfrac``,
    ``ratio_mean/min/max``, ``approx_kl_old`` (mean of old - logp), ``kl_ref``, ``entropy``,
    ``token_mult_prob_error`` (mean of exp(|old - gen|), with gen log-probs).
    """
    keep = batch.mask.bool()
    if batch.sample_mask is not None:
        keep = keep & batch.sample_mask.bool().reshape(-1, 1)
    logp = batch.logprobs
    adv = batch.advantages
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1)
    adv = adv.expand_as(logp).to(logp.dtype)
    old = logp.detach() if batch.old_logprobs is None else batch.old_logprobs
    per_token, flags = _surrogate(batch, cfg, adv, old, keep, generator)
    if cfg.top_entropy_quantile < 1.0:
        if batch.entropy is None:
            raise ValueError("loss.top_entropy_quantile < 1 needs LossBatch.entropy")
        h = batch.entropy.detach()
        cut = torch.quantile(h[keep].float(), 1.0 - cfg.top_entropy_quantile)
        per_token = per_token * (h >= cut).to(per_token.dtype)
    if cfg.importance_sampling.level != "none":
        if batch.gen_logprobs is None:
            raise ValueError("loss.importance_sampling.level is set but LossBatch.gen_logprobs is None")
        isc = cfg.importance_sampling
        per_token = per_token * rollout_importance_weights(
            old, batch.gen_logprobs, keep, level=isc.level, truncation=isc.truncation,
            cap_max=isc.cap_max, cap_min=isc.cap_min)
    pg = aggregate(per_token, keep, cfg.aggregation, normalizer)
    metrics = _metrics(batch, flags, keep, old)
    metrics["pg_loss"] = pg.detach()
    total = pg
    if cfg.kl_loss_term or cfg.archer_kl:
        total = total + _kl_terms(batch, cfg, old, keep, normalizer, flags, metrics)
    if batch.entropy is not None:
        ent = aggregate(batch.entropy, keep, cfg.aggregation, normalizer)
        metrics["entropy_term"] = ent.detach()
        if cfg.entropy_coef != 0.0:
            total = total - cfg.entropy_coef * ent
    elif cfg.entropy_coef != 0.0:
        raise ValueError("loss.entropy_coef != 0 needs LossBatch.entropy")
    if cfg.positive_nll_coef != 0.0:
        if batch.rewards is None:
            raise ValueError("loss.positive_nll_coef needs LossBatch.rewards")
        pos = keep & (batch.rewards.reshape(-1, 1) > 0)
        count = float(pos.sum()) if num_positive_tokens is None else num_positive_tokens
        nll = torch.where(pos, -logp, torch.zeros_like(logp)).sum() / max(count, 1.0)
        metrics["positive_nll"] = nll.detach()
        total = total + cfg.positive_nll_coef * nll
    return total, metrics


def _metrics(batch, flags, keep, old) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    ratio = flags["ratio"].detach()
    valid = ratio[keep]
    if valid.numel():
        out.update(ratio_mean=valid.mean(), ratio_min=valid.min(), ratio_max=valid.max())
    for name in ("clip_low", "clip_high", "dual"):
        if name in flags:
            out[f"clipfrac_{name.removeprefix('clip_')}"] = _frac(flags[name], keep)
    if "clip_low" in flags:
        out["clipfrac"] = _frac(flags["clip_low"] | flags["clip_high"], keep)
    d = (old - batch.logprobs).detach()
    out["approx_kl_old"] = d[keep].sum() / keep.sum().clamp(min=1)
    if batch.entropy is not None:
        out["entropy"] = batch.entropy.detach()[keep].float().mean()
    if batch.gen_logprobs is not None:
        err = torch.exp((old - batch.gen_logprobs).detach().abs())
        out["token_mult_prob_error"] = err[keep].mean()
    return out
