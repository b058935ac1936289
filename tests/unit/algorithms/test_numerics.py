"""The numerics-guard metrics: exact values on hand-made log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from nemo_grpo.algorithms.numerics import gen_train_kl, token_mult_prob_error
from nemo_grpo.generation.vllm_refit import chunk_state_dict


def test_identical_logprobs_give_one_and_zero():
    lp = torch.tensor([[-1.0, -2.0, -0.5]])
    mask = torch.ones_like(lp)
    assert token_mult_prob_error(lp, lp, mask) == 1.0
    assert gen_train_kl(lp, lp, mask) == 0.0


def test_mult_prob_error_is_masked_mean_of_exp_abs_diff():
    train = torch.tensor([[-1.0, -2.0, float("-inf")], [-1.0, -1.0, -1.0]])
    gen = torch.tensor([[-1.5, -1.0, 0.0], [-1.0, -1.2, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    expected = (math.exp(0.5) + math.exp(1.0) + 1.0 + math.exp(0.2)) / 4
    assert token_mult_prob_error(train, gen, mask) == pytest.approx(expected)


def test_kl_is_k3_estimator():
    train, gen = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    mask = torch.ones(1, 2)
    r = [math.exp(0.5), math.exp(-1.0)]
    expected = sum(x - 1 - math.log(x) for x in r) / 2
    assert gen_train_kl(train, gen, mask) == pytest.approx(expected)
    assert gen_train_kl(train, gen, mask) > 0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="shape mismatch"):
        token_mult_prob_error(torch.zeros(2, 3), torch.zeros(2, 2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="empty mask"):
        gen_train_kl(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2))


def test_refit_chunks_are_bounded_and_skip_tied_aliases():
    emb = torch.zeros(4, 8)  # 128 bytes
    sd = {"embed": emb, "a": torch.zeros(8), "b": torch.zeros(8), "big": torch.zeros(64), "lm_head": emb}
    chunks = [[n for n, _ in c] for c in chunk_state_dict(sd, chunk_bytes=160)]
    assert chunks == [["embed", "a"], ["b"], ["big"]]  # "big" (256 B) goes alone; lm_head aliases embed
