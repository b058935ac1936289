"""Packing rollouts into aligned tensors, minibatches, skipped rows and rank padding."""

from __future__ import annotations

import math

import pytest
import torch

from nemo_grpo.algorithms.batch import pack_rollouts, split_even
from nemo_grpo.algorithms.config import ArcherConfig, LossConfig
from nemo_grpo.algorithms.minibatch import (
    concat,
    distribute,
    minibatch_normalizer,
    split_minibatches,
    trainable_rows,
)


def sample_batch():
    return pack_rollouts(
        prompt_ids=[[10, 11, 12], [20, 21]], response_ids=[[13, 14], [22, 23, 24]],
        gen_logprobs=[[-0.1, -0.2], [-0.3, -0.4, -0.5]], advantages=torch.tensor([1.5, -0.5]),
        rewards=torch.tensor([1.0, 0.0]), pad_id=0,
    )


def test_pack_aligns_every_tensor_with_the_predicted_token():
    b = sample_batch()
    assert b.input_ids.tolist() == [[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]]
    # column t scores input_ids[:, t + 1]; response tokens are predicted from the last prompt position on
    assert b.mask.tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]
    assert b.gen_logprobs[0, 2:].tolist() == pytest.approx([-0.1, -0.2])
    assert b.gen_logprobs[1, 1:].tolist() == pytest.approx([-0.3, -0.4, -0.5])
    assert b.advantages.tolist() == [[0, 0, 1.5, 1.5], [0, -0.5, -0.5, -0.5]]
    predicted = b.input_ids[:, 1:][b.mask.bool()].tolist()
    assert predicted == [13, 14, 22, 23, 24]


def test_select_trims_padding():
    b = pack_rollouts([[1], [1, 2, 3, 4]], [[5], [6, 7]], [[0.0], [0.0, 0.0]], torch.zeros(2), torch.zeros(2), 0)
    short = b.select(slice(0, 1))
    assert short.input_ids.shape == (1, 2) and short.mask.shape == (1, 1)


def test_split_minibatches_requires_a_multiple():
    assert split_minibatches(16, 8) == [slice(0, 8), slice(8, 16)]
    with pytest.raises(ValueError, match="multiple of policy.train_global_batch_size=6"):
        split_minibatches(16, 6)


def test_trainable_rows_and_the_normaliser_of_the_whole_minibatch():
    b = sample_batch()
    b.advantages[1] = 0.0
    assert trainable_rows(b, skip_zero_advantage=True).tolist() == [0]
    assert trainable_rows(b, skip_zero_advantage=False).tolist() == [0, 1]
    norm = minibatch_normalizer(b, norm_constant=None)
    assert (norm.num_tokens, norm.num_seqs) == (5, 2)  # the skipped row still counts


def test_loss_terms_that_need_every_row():
    def loss(**kw):
        archer = kw.pop("archer", None)
        return LossConfig(**kw, archer=ArcherConfig(**archer) if archer else ArcherConfig())

    assert not loss().needs_all_rows and not loss().needs_reference
    assert loss(kl_coef=0.01).needs_all_rows and loss(kl_coef=0.01).kl_loss_term
    in_reward = loss(kl_coef=0.01, kl_in_reward=True)
    assert not in_reward.needs_all_rows and not in_reward.kl_loss_term and in_reward.needs_reference
    assert loss(entropy_coef=0.01).needs_all_rows and not loss(entropy_coef=0.01).needs_reference
    assert loss(positive_nll_coef=0.1).needs_all_rows
    archer = loss(archer=dict(enabled=True, low_entropy_kl_coef=0.001, high_entropy_kl_coef=0.0))
    assert archer.archer_kl and archer.needs_all_rows and archer.needs_reference
    no_kl = loss(archer=dict(enabled=True, low_entropy_kl_coef=0.0, high_entropy_kl_coef=0.0))
    assert not no_kl.archer_kl and not no_kl.needs_all_rows and not no_kl.needs_reference


@pytest.mark.parametrize("rows, world, micro", [(5, 2, 2), (7, 3, 2), (1, 2, 4), (8, 2, 4), (3, 4, 1)])
def test_distribute_gives_every_rank_the_same_number_of_micro_batches(rows, world, micro):
    b = pack_rollouts([[1, 2]] * rows, [[3, 4, 5]] * rows, [[-1.0] * 3] * rows, torch.arange(1.0, rows + 1),
                      torch.zeros(rows), 0)
    shares = distribute(b, world, micro)
    counts = {math.ceil(len(s) / micro) for s in shares}
    assert len(counts) == 1
    real = torch.cat([s.advantages[s.mask.bool().any(-1)][:, -1] for s in shares])
    assert sorted(real.tolist()) == list(range(1, rows + 1))  # each real row exactly once
    assert sum(float(s.mask.sum()) for s in shares) == float(b.mask.sum())  # padding adds no tokens


def test_distribute_empty_batch():
    b = sample_batch().select(torch.tensor([], dtype=torch.long))
    assert distribute(b, 3, 2) == [None, None, None]


def test_concat_pads_to_the_widest():
    a = sample_batch().select(slice(0, 1))
    b = pack_rollouts([[1]], [[2, 3, 4, 5, 6, 7]], [[0.0] * 6], torch.ones(1), torch.ones(1), 0)
    both = concat([a, b])
    assert both.input_ids.shape == (2, 7) and both.mask.sum() == 2 + 6


def test_split_even():
    assert [s.stop - s.start for s in split_even(7, 3)] == [3, 2, 2]
