"""Packed micro-batches: the plan (ranks, token budget, equal micro-batch counts) and the layout."""

import random

import pytest
import torch

from nemo_grpo.algorithms.batch import pack_rollouts
from nemo_grpo.algorithms.packing import (
    balance_ranks, pack, pack_layout, packed_shares, plan_packed, row_lengths, unpack,
)


def _check_plan(lengths, world, budget):
    plan = plan_packed(lengths, world, budget)
    assert len(plan) == world
    placed = sorted(row for rank in plan for micro in rank for row in micro)
    assert placed == list(range(len(lengths))), "every row placed exactly once"
    counts = {len(rank) for rank in plan}
    assert len(counts) == 1, f"ranks run different numbers of micro-batches: {counts}"
    for rank in plan:
        for micro in rank:
            assert sum(lengths[i] for i in micro) <= budget or len(micro) == 1
    return plan


@pytest.mark.parametrize("seed", range(200))
def test_random_plans_are_complete_within_budget_equal_and_balanced(seed):
    rng = random.Random(seed)
    world = rng.choice([1, 2, 3, 4, 8])
    rows = rng.randint(0, 40)
    budget = rng.randint(8, 200)
    lengths = [rng.randint(1, budget) for _ in range(rows)]
    plan = _check_plan(lengths, world, budget)
    loads = [sum(lengths[i] for micro in rank for i in micro) for rank in plan]
    if lengths:
        assert max(loads) - min(loads) <= max(lengths), (loads, lengths)
        # first fit leaves at most one micro-batch at most half full, so a rank's count is below
        # 2 * tokens / budget + 1; the common count is the largest rank's
        assert len(plan[0]) < 2 * max(loads) / budget + 1


def test_longer_than_budget_row_gets_its_own_micro_batch():
    plan = _check_plan([50, 3, 4, 5], 1, 10)
    assert [0] in plan[0]


def test_fewer_rows_than_ranks_give_empty_micro_batches():
    plan = _check_plan([5], 3, 10)
    assert plan == [[[0]], [[]], [[]]]


def test_ranks_with_fewer_micro_batches_split_rather_than_idle():
    # rank 0: one long row alone; rank 1: several short ones that fit one micro-batch -> split
    lengths = [9, 3, 3, 3]
    plan = _check_plan(lengths, 2, 10)
    assert all(all(micro for micro in rank) for rank in plan), plan


def test_balance_ranks_lpt():
    # 7 -> r0, 5 -> r1, 4 -> r1 (5 < 7), 3 -> r0 (7 < 9), 1 -> r1 (9 < 10): 10 and 10 tokens
    assert balance_ranks([7, 5, 4, 3, 1], 2) == [[0, 3], [1, 2, 4]]

def _batch(rows=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 50, (int(torch.randint(1, 6, (1,), generator=gen)),), generator=gen).tolist()
               for _ in range(rows)]
    responses = [torch.randint(0, 50, (int(torch.randint(1, 5, (1,), generator=gen)),), generator=gen).tolist()
                 for _ in range(rows)]
    return pack_rollouts(prompts, responses, [[-0.5] * len(r) for r in responses], torch.randn(rows, generator=gen),
                         torch.zeros(rows), pad_id=0)


def test_layout_round_trip():
    batch = _batch()
    layout = pack_layout(batch.attention_mask)
    lengths = row_lengths(batch)
    ids = pack(batch.input_ids, layout)
    assert ids.shape == (1, sum(lengths))
    assert layout.cu_seqlens.tolist() == [0] + list(torch.tensor(lengths).cumsum(0).tolist())
    assert layout.position_ids[0].tolist() == [p for n in lengths for p in range(n)]
    # "predictions" of the packed sequence = the next packed token; unpacked, they are the
    # next token of each row exactly where the row has one, zero elsewhere
    pred = ids[0, 1:].float()
    out = unpack(pred, layout)
    expected = torch.where(layout.valid, batch.input_ids[:, 1:].float(), torch.zeros(()))
    assert torch.equal(out, expected)
    assert bool((batch.mask.bool() <= layout.valid).all()), "every response token is a valid prediction"


def test_unpack_is_differentiable_and_zero_outside():
    batch = _batch()
    layout = pack_layout(batch.attention_mask)
    pred = torch.randn(layout.total - 1, requires_grad=True)
    unpack(pred, layout).sum().backward()
    # each packed prediction except those across a row boundary is used exactly once
    boundary = set((layout.cu_seqlens[1:-1] - 1).tolist())
    assert pred.grad.tolist() == [0.0 if i in boundary else 1.0 for i in range(layout.total - 1)]


def test_packed_shares_keep_rows_and_pad_empty_micro_batches():
    batch = _batch(rows=3)
    shares = packed_shares(batch, 4, 16)
    seen = sorted(r for s in shares for r in s.rows if r >= 0)
    assert seen == [0, 1, 2]
    for share in shares:
        assert share.batch is not None and len(share.batch) == sum(share.sizes) == len(share.rows)
        for pos, row in enumerate(share.rows):
            n = int(share.batch.attention_mask[pos].sum())
            if row < 0:
                assert share.batch.mask[pos].sum() == 0
            else:
                assert torch.equal(share.batch.input_ids[pos, :n], batch.input_ids[row, :n])
                assert torch.equal(share.batch.mask[pos, : n - 1], batch.mask[row, : n - 1])
    assert {len(s.sizes) for s in shares} == {1}
