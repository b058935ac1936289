"""Packed micro-batches under a token budget: the plan and the layout, pure (no model).

With `policy.max_tokens_per_micro_batch` set, a rank's rows are not padded into micro-batches of
`train_micro_batch_size` rows: they are packed, unpadded, into micro-batches of at most that many
tokens, each run as ONE sequence [1, total] whose position ids restart at 0 for every row, with
attention that never crosses rows (`nemo_grpo/policy/packed_attention.py`).

* `plan_packed(lengths, world_size, max_tokens)`: which rows go to which rank and micro-batch.
  Rows go to ranks by longest-processing-time (each row, longest first, to the rank with the
  fewest tokens so far: the ranks' token counts differ by at most the longest row), then each
  rank's rows into micro-batches by first-fit decreasing. Every rank must run the same number of
  micro-batches (FSDP's collectives, as in `minibatch.distribute`): a rank with fewer splits its
  fullest micro-batch in two until it has as many, or, with fewer rows than micro-batches, gets
  empty ones (the driver fills them with a zero-mask padding row). A row longer than the budget
  (the config refuses a budget below `max_total_sequence_length`, so only a row that somehow
  exceeds it) gets a micro-batch of its own: never cut, never dropped.
  With `policy.share_prompts` the plan places units, not rows: the rows of one prompt together,
  costed at the prompt once plus their responses (`algorithms/shared_prompts.py`), so ranks
  balance to within one such unit.
* `packed_shares(batch, world_size, max_tokens, share_prompts)`: the plan applied to a TrainBatch:
  per rank the rows in micro-batch order, the rows per micro-batch, and where each row came from.
* `PackedLayout` / `pack_layout` / `unpack`: a right-padded micro-batch [B, T] to the packed
  [1, total] inputs (ids, position ids, cu_seqlens), and the packed per-token outputs [total-1]
  back to the [B, T-1] layout of `TrainBatch`, so `policy_loss` and the global `Normalizer` see
  exactly the tensors of the unpacked path (zeros where the unpacked path has padding, which every
  mask excludes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nemo_grpo.algorithms.batch import TrainBatch
from nemo_grpo.algorithms.minibatch import concat
from nemo_grpo.algorithms.shared_prompts import prompt_units


def balance_ranks(lengths: list[int], world_size: int) -> list[list[int]]:
    """Row indices per rank: longest row first, each to the rank with the fewest tokens (then the
    fewest rows, then the lowest rank). max - min tokens over ranks <= the longest row."""
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    ranks: list[list[int]] = [[] for _ in range(world_size)]
    loads = [0] * world_size
    for row in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], len(ranks[r]), r))
        ranks[rank].append(row)
        loads[rank] += lengths[row]
    return [sorted(r) for r in ranks]


def first_fit_decreasing(rows: list[int], lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Micro-batches (lists of row indices) of at most `max_tokens` tokens; a row longer than the
    budget gets one of its own."""
    bins: list[list[int]] = []
    loads: list[int] = []
    for row in sorted(rows, key=lambda i: (-lengths[i], i)):
        for b, load in enumerate(loads):
            if load + lengths[row] <= max_tokens:
                bins[b].append(row)
                loads[b] += lengths[row]
                break
        else:
            bins.append([row])
            loads.append(lengths[row])
    return [sorted(b) for b in bins]


def _split_to(bins: list[list[int]], count: int, lengths: list[int]) -> list[list[int]]:
    """`count` micro-batches: split the fullest multi-row one in two (balanced by tokens) while
    there are too few; empty ones once every micro-batch holds a single row."""
    bins = [list(b) for b in bins]
    while len(bins) < count:
        multi = [b for b in range(len(bins)) if len(bins[b]) > 1]
        if not multi:
            bins.append([])
            continue
        fullest = max(multi, key=lambda b: (sum(lengths[i] for i in bins[b]), -b))
        halves: list[list[int]] = [[], []]
        loads = [0, 0]
        for row in sorted(bins[fullest], key=lambda i: (-lengths[i], i)):
            side = 0 if loads[0] <= loads[1] else 1
            halves[side].append(row)
            loads[side] += lengths[row]
        bins[fullest] = sorted(halves[0])
        bins.insert(fullest + 1, sorted(halves[1]))
    return bins


def plan_packed(lengths: list[int], world_size: int, max_tokens: int,
                units: tuple[list[list[int]], list[int]] | None = None) -> list[list[list[int]]]:
    """rank -> micro-batches -> row indices; every rank has the same number of micro-batches
    (none at all when there are no rows). See the module docstring. `units`: rows that go together
    and the tokens each group costs (`shared_prompts.prompt_units`); default: every row alone."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    rows_of, costs = units if units is not None else ([[i] for i in range(len(lengths))], list(lengths))
    per_rank = [[sorted(row for unit in bin_ for row in rows_of[unit])
                 for bin_ in first_fit_decreasing(items, costs, max_tokens)]
                for items in balance_ranks(costs, world_size)]
    count = max(len(bins) for bins in per_rank)
    return [_split_to(bins, count, lengths) for bins in per_rank]


def plan_batch(batch: TrainBatch, world_size: int, max_tokens: int, share_prompts: bool) -> list[list[list[int]]]:
    """`plan_packed` for a batch: its rows alone, or (`share_prompts`) its rows grouped by prompt."""
    units = prompt_units(batch, max_tokens) if share_prompts else None
    return plan_packed(row_lengths(batch), world_size, max_tokens, units)


def row_lengths(batch: TrainBatch) -> list[int]:
    return [int(n) for n in batch.attention_mask.sum(-1)]


@dataclass
class PackedShare:
    batch: TrainBatch | None  # the rank's rows in micro-batch order (padding rows included)
    sizes: list[int]  # rows per micro-batch, in order
    rows: list[int]  # for every row of `batch`, its index in the planned batch (-1: padding)


def packed_shares(batch: TrainBatch, world_size: int, max_tokens: int,
                  share_prompts: bool = False) -> list[PackedShare]:
    """The plan applied to `batch`; an empty micro-batch becomes one zero-mask copy of the shortest
    row (it adds nothing but keeps the rank's forward/backward count)."""
    if len(batch) == 0:
        return [PackedShare(None, [], []) for _ in range(world_size)]
    lengths = row_lengths(batch)
    shortest = min(range(len(batch)), key=lambda i: (lengths[i], i))
    out = []
    for bins in plan_batch(batch, world_size, max_tokens, share_prompts):
        parts, rows = [], []
        for micro in bins:
            if micro:
                parts.append(batch.select(micro))
                rows.extend(micro)
            else:
                pad = batch.select([shortest])
                pad.mask = torch.zeros_like(pad.mask)
                pad.advantages = torch.zeros_like(pad.advantages)
                parts.append(pad)
                rows.append(-1)
        sizes = [max(len(m), 1) for m in bins]
        out.append(PackedShare(concat(parts) if parts else None, sizes, rows))
    return out


@dataclass
class PackedLayout:
    """Where the tokens of a right-padded [B, T] micro-batch sit in its packed [1, total] form."""

    width: int  # T
    gather: torch.Tensor  # [total] flat indices into the [B*T] inputs
    position_ids: torch.Tensor  # [1, total], restarting at 0 for every row
    cu_seqlens: torch.Tensor  # [B+1] int32, row starts in the packed sequence (varlen kernels' form)
    max_len: int  # the longest row
    unpack_index: torch.Tensor  # [B, T-1] index into the packed predictions [total-1]
    valid: torch.Tensor  # [B, T-1] bool: a prediction of a real token of the row

    @property
    def total(self) -> int:
        return int(self.gather.numel())


def pack_layout(attention_mask: torch.Tensor) -> PackedLayout:
    """The layout of a right-padded micro-batch (its `attention_mask` [B, T])."""
    rows, width = attention_mask.shape
    lengths = attention_mask.sum(-1).long().cpu()
    starts = torch.cumsum(lengths, 0) - lengths
    cols = torch.arange(width)
    keep = cols[None, :] < lengths[:, None]
    gather = (torch.arange(rows)[:, None] * width + cols[None, :])[keep]
    position_ids = cols[None, :].expand(rows, width)[keep][None, :]
    cu = torch.zeros(rows + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(lengths, 0).to(torch.int32)
    pred_cols = torch.arange(max(width - 1, 0))
    # the prediction at packed position starts[i] + c (from token c of row i) is of token c+1
    valid = pred_cols[None, :] < (lengths[:, None] - 1)
    index = (starts[:, None] + pred_cols[None, :]).clamp(max=max(int(lengths.sum()) - 2, 0))
    return PackedLayout(width, gather, position_ids, cu, int(lengths.max()) if rows else 0, index, valid)


def pack(values: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """[B, T] -> [1, total] (the real tokens of every row, one after the other)."""
    return values.reshape(-1)[layout.gather.to(values.device)][None, :]


def unpack(packed: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """Packed predictions [total-1] (or [1, total-1]) -> [B, T-1], zero where not `valid`.
    Differentiable: the gradient of a padding position is zero."""
    flat = packed.reshape(-1)
    valid = layout.valid.to(flat.device)
    if flat.numel() == 0:
        return torch.zeros(valid.shape, dtype=flat.dtype, device=flat.device)
    picked = flat[layout.unpack_index.to(flat.device)]
    return torch.where(valid, picked, torch.zeros((), dtype=flat.dtype, device=flat.device))
