"""Turning one step's rollouts into optimizer steps: pure bookkeeping, no models.

* `split_minibatches`: the rollout batch is cut, in order, into minibatches of
  `train_global_batch_size` sequences (one optimizer step each).
* `trainable_rows`: rows whose advantages are all zero contribute nothing to the policy gradient;
  when the loss has no term that is independent of the advantage (KL to the reference, entropy
  bonus), they can skip the backward pass without changing the update. The normaliser is still
  computed over the WHOLE minibatch, so the loss and gradient are exactly those of the full batch.
* `distribute`: a minibatch's rows are spread over the data-parallel ranks so that every rank runs
  the same number of micro-batches (FSDP's collectives need that); short ranks get padding rows
  with an all-zero mask, which add nothing.
"""

from __future__ import annotations

import math

import torch

from nemo_grpo.algorithms.aggregation import Normalizer
from nemo_grpo.algorithms.batch import TrainBatch, split_even


def split_minibatches(n: int, global_batch_size: int) -> list[slice]:
    if n % global_batch_size:
        raise ValueError(
            f"{n} responses per step is not a multiple of policy.train_global_batch_size={global_batch_size}: "
            "set num_prompts_per_step x num_generations_per_prompt to a multiple of it"
        )
    return [slice(i, i + global_batch_size) for i in range(0, n, global_batch_size)]


def trainable_rows(batch: TrainBatch, *, skip_zero_advantage: bool) -> torch.Tensor:
    """Indices of the rows to run forward/backward on."""
    if not skip_zero_advantage:
        return torch.arange(len(batch))
    return torch.nonzero((batch.advantages.abs() * batch.mask).sum(-1) > 0).flatten()


def minibatch_normalizer(batch: TrainBatch, norm_constant: float | None) -> Normalizer:
    return Normalizer.from_mask(batch.mask, norm_constant=norm_constant)


def distribute(batch: TrainBatch, world_size: int, micro_batch_size: int) -> list[TrainBatch | None]:
    """Per-rank shares that all run k = ceil(max share / micro_batch_size) micro-batches.

    A rank whose share would give fewer micro-batches gets just enough zero-mask padding rows.
    An empty batch gives `None` for every rank (each rank then steps with zero gradients).
    """
    if len(batch) == 0:
        return [None] * world_size
    shares = [batch.select(s) for s in split_even(len(batch), world_size)]
    k = math.ceil(max(len(s) for s in shares) / micro_batch_size)
    template = batch.select(slice(0, 1))
    out = []
    for share in shares:
        need = (k - 1) * micro_batch_size + 1  # fewest rows that still make k micro-batches
        if len(share) >= need:
            out.append(share)
        elif len(share) == 0:
            out.append(_padding_rows(template, need))
        else:
            out.append(concat([share, _padding_rows(template, need - len(share))]))
    return out


def _padding_rows(template: TrainBatch, count: int) -> TrainBatch | None:
    if count <= 0:
        return None
    rows = template.select(torch.zeros(count, dtype=torch.long))
    rows.mask = torch.zeros_like(rows.mask)
    rows.advantages = torch.zeros_like(rows.advantages)
    return rows


def concat(batches: list[TrainBatch]) -> TrainBatch:
    width = max(b.input_ids.shape[1] for b in batches)

    def pad(t: torch.Tensor | None, w: int, value: float = 0) -> torch.Tensor | None:
        if t is None or t.dim() == 1:
            return t
        return torch.nn.functional.pad(t, (0, w - t.shape[1]), value=value)

    fields = {}
    for name in ("input_ids", "attention_mask"):
        fields[name] = torch.cat([pad(getattr(b, name), width) for b in batches])
    for name in ("mask", "advantages", "gen_logprobs", "old_logprobs", "ref_logprobs"):
        parts = [getattr(b, name) for b in batches]
        fields[name] = None if any(p is None for p in parts) else torch.cat([pad(p, width - 1) for p in parts])
    fields["rewards"] = torch.cat([b.rewards for b in batches])
    return TrainBatch(**fields)
