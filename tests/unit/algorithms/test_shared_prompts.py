"""Packed micro-batches with each distinct prompt once (policy.share_prompts): the units the plan
places, the layout (tokens, positions, pieces, where each prediction comes from), and the model:
every response's log-probs as when its row runs alone."""

import random

import pytest
import torch

from nemo_grpo.algorithms.batch import pack_rollouts
from nemo_grpo.algorithms.packing import packed_shares, plan_batch
from nemo_grpo.algorithms.shared_prompts import prompt_lengths, prompt_units, response_mask, shared_layout


def _batch(prompts, responses, pad_id=0):
    return pack_rollouts(prompts, responses, [[-1.0] * len(r) for r in responses], torch.ones(len(responses)),
                         torch.zeros(len(responses)), pad_id=pad_id)


A, B = [11, 12, 13, 14], [21, 22]
ROWS = ([A, A, B, A, B], [[1, 2], [3], [4, 5, 6], [7, 8, 9], [10]])


def test_prompt_lengths_and_units_group_equal_prompts_in_order_of_first_appearance():
    batch = _batch(*ROWS)
    assert prompt_lengths(batch) == [4, 4, 2, 4, 2]
    units, costs = prompt_units(batch, max_tokens=100)
    assert units == [[0, 1, 3], [2, 4]]
    assert costs == [4 + 2 + 1 + 3, 2 + 3 + 1]
    # a group over the budget is cut into consecutive units that fit (each with its prompt once)
    units, costs = prompt_units(batch, max_tokens=8)
    assert units == [[0, 1], [3], [2, 4]] and costs == [7, 7, 6]


def test_a_row_without_response_tokens_is_all_prompt():
    batch = _batch(*ROWS)
    batch.mask[1] = 0  # a zero-mask padding row, as the packed plan adds for an empty micro-batch
    assert prompt_lengths(batch)[1] == 5  # its whole row: it shares nothing and nothing of it is scored


def test_layout_runs_each_prompt_once_and_maps_every_token():
    batch = _batch(*ROWS)
    layout = shared_layout(batch.input_ids, batch.attention_mask, prompt_lengths(batch))
    packed = batch.input_ids.reshape(-1)[layout.gather].tolist()
    assert packed == A + [1, 2] + [3] + [7, 8, 9] + B + [4, 5, 6] + [10]
    assert layout.position_ids[0].tolist() == [0, 1, 2, 3, 4, 5, 4, 4, 5, 6, 0, 1, 2, 3, 4, 2]
    assert layout.cu_pieces.tolist() == [0, 4, 6, 7, 10, 12, 15, 16]
    assert layout.prefix_piece.tolist() == [-1, 0, 0, 0, -1, 4, 4]
    assert layout.max_len == 4 and layout.total == 16
    # every real token of every row sits where the packed sequence has it; padding maps nowhere
    for row in range(len(batch)):
        n = int(batch.attention_mask[row].sum())
        assert batch.input_ids.reshape(-1)[layout.gather][layout.node[row, :n]].tolist() == \
            batch.input_ids[row, :n].tolist()
        assert (layout.node[row, n:] == -1).all()
    # each row's first response token is predicted from its prompt's one shared last position
    rows, cols, source, targets = layout.predictions(batch.mask.bool(), batch.input_ids)
    lens = prompt_lengths(batch)
    first = {int(r): int(s) for r, c, s in zip(rows, cols, source) if int(c) == lens[int(r)] - 1}
    assert first == {0: 3, 1: 3, 3: 3, 2: 11, 4: 11}
    assert targets.tolist() == list(range(1, 11))  # each response's tokens, row by row


def test_predictions_refuse_a_scored_padding_position():
    batch = _batch(*ROWS)
    layout = shared_layout(batch.input_ids, batch.attention_mask, prompt_lengths(batch))
    scored = batch.mask.bool().clone()
    scored[1, -1] = True  # row 1 has 5 tokens: column 6 predicts nothing
    with pytest.raises(ValueError, match="padding"):
        layout.predictions(scored, batch.input_ids)


def test_response_mask_sees_the_prompt_and_its_own_past():
    assert response_mask(2, 3).int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


@pytest.mark.parametrize("seed", range(50))
def test_shared_plans_keep_groups_together_and_every_rank_equal(seed):
    rng = random.Random(seed)
    world, per_prompt = rng.choice([1, 2, 4]), rng.choice([1, 2, 4, 8])
    heads = [[rng.randint(1, 99) for _ in range(rng.randint(2, 12))] for _ in range(rng.randint(1, 6))]
    prompts = [h for h in heads for _ in range(per_prompt)]
    responses = [[rng.randint(1, 99) for _ in range(rng.randint(1, 20))] for _ in prompts]
    batch = _batch(prompts, responses)
    budget = rng.randint(32, 120)
    plan = plan_batch(batch, world, budget, share_prompts=True)
    placed = sorted(row for rank in plan for micro in rank for row in micro)
    assert placed == list(range(len(batch)))
    assert len({len(rank) for rank in plan}) == 1
    for rank in plan:
        for micro in rank:
            layout = shared_layout(*(t[micro] for t in (batch.input_ids, batch.attention_mask)),
                                   [prompt_lengths(batch)[i] for i in micro])
            assert layout.total <= budget
    shares = packed_shares(batch, world, budget, share_prompts=True)
    assert sorted(r for s in shares for r in s.rows if r >= 0) == list(range(len(batch)))


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_shared_prompt_log_probs_equal_each_row_alone(arch):
    """Two prompts (three and two responses) and a row whose prompt is its own, in one packed
    sequence: each response token's log-prob and entropy, from the fused and from the plain head,
    equal the right-padded batch's."""
    from nemo_grpo.models.build import build_random_model, tiny_config
    from nemo_grpo.policy.fused_head import causal_logprobs_and_entropy, gathered_logprobs_and_entropy
    from nemo_grpo.policy.packed_attention import PACKED_ATTENTION

    model = build_random_model(tiny_config(arch, vocab_size=256), seed=1)
    gen = torch.Generator().manual_seed(0)
    p1, p2, p3 = (torch.randint(1, 256, (n,), generator=gen).tolist() for n in (6, 4, 5))
    prompts = [p1, p1, p2, p1, p2, p3]
    responses = [torch.randint(1, 256, (n,), generator=gen).tolist() for n in (3, 5, 2, 1, 6, 4)]
    batch = _batch(prompts, responses)
    with torch.no_grad():
        expected = causal_logprobs_and_entropy(model, batch.input_ids, temperature=0.9, fused=False,
                                               attention_mask=batch.attention_mask)
        layout = shared_layout(batch.input_ids, batch.attention_mask, prompt_lengths(batch))
        assert layout.total == int(batch.attention_mask.sum()) - 2 * len(p1) - len(p2)
        rows, cols, source, targets = layout.predictions(batch.mask.bool(), batch.input_ids)
        model.set_attn_implementation(PACKED_ATTENTION)
        for fused in (True, False):
            got = gathered_logprobs_and_entropy(
                model, batch.input_ids.reshape(-1)[layout.gather][None], source, targets, temperature=0.9,
                fused=fused, position_ids=layout.position_ids, cu_seq_lens_q=layout.cu_pieces,
                cu_seq_lens_k=layout.cu_pieces, max_length_q=layout.max_len, max_length_k=layout.max_len,
                prefix_piece=layout.prefix_piece)
            for value, reference in zip(got, expected):
                torch.testing.assert_close(value, reference[rows, cols], rtol=1e-5, atol=1e-5)


def test_share_prompts_needs_packed_micro_batches(tmp_path):
    from tests.integration.tiny_run import tiny_train_config

    with pytest.raises(Exception, match="policy.share_prompts.*max_tokens_per_micro_batch"):
        tiny_train_config(tmp_path, tmp_path, "policy.share_prompts=true")
