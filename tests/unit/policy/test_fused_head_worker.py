"""A real PolicyWorker (one rank of a gloo group) gives the same log-probs, statistics, loss,
gradients and updated weights with the fused output layer (policy.fused_lm_head, the default) as
with full logits, padded and packed, with a separate head and with tied embeddings."""

from __future__ import annotations

import pytest
import torch

from nemo_grpo.models.build import build_random_model, tiny_config
from nemo_grpo.policy.fused_head import can_fuse_head, causal_logprobs_and_entropy
from tests.integration.tiny_run import write_problems
from tests.unit.policy.test_packed_worker import ATOL, BUDGET, RTOL, WEIGHT_ATOL, _run


@pytest.mark.timeout(300)
@pytest.mark.parametrize("tied,packed", [(False, False), (True, True)])
def test_fused_head_worker_equals_full_logits(tmp_path, monkeypatch, tied, packed):
    import nemo_grpo.policy.fused_head as fused_head

    calls = []
    real = fused_head.linear_logprobs_and_entropy
    monkeypatch.setattr(fused_head, "linear_logprobs_and_entropy",
                        lambda *a, **k: calls.append(tuple(a[0].shape)) or real(*a, **k))
    model_dir = tmp_path / "model"
    build_random_model(tiny_config("qwen2", vocab_size=256, tie_word_embeddings=tied), seed=0).save_pretrained(model_dir)
    write_problems(model_dir / "problems.jsonl")
    extra = [f"policy.max_tokens_per_micro_batch={BUDGET}"] if packed else []
    full = _run(model_dir, tmp_path / "full", "policy.fused_lm_head=false", *extra)
    assert not calls
    fused = _run(model_dir, tmp_path / "fused", *extra)
    assert calls  # the default path is the fused one
    # ... and its output layer sees the response positions only (rows x hidden), never a prompt's
    response_tokens = int(fused[0].mask.sum())
    assert all(len(shape) == 2 and shape[0] <= response_tokens for shape in calls), (calls, response_tokens)

    torch.testing.assert_close(fused[0].old_logprobs, full[0].old_logprobs, rtol=RTOL, atol=ATOL)
    for key in full[1]:
        assert fused[1][key] == pytest.approx(full[1][key], rel=RTOL, abs=ATOL), key
    for step in (0, 1):
        for key in ("loss", "grad_norm", "entropy", "approx_kl_old"):
            assert fused[2][step][key] == pytest.approx(full[2][step][key], rel=RTOL, abs=ATOL), (step, key)
    assert ("lm_head.weight" in full[4]) != tied
    for name, grad in full[4].items():
        torch.testing.assert_close(fused[4][name], grad, rtol=RTOL, atol=ATOL, msg=name)
    for name, value in full[3].items():
        torch.testing.assert_close(fused[3][name], value, rtol=RTOL, atol=WEIGHT_ATOL, msg=name)


def test_architectures_that_change_the_logits_are_not_fused():
    model = build_random_model(tiny_config("qwen2", vocab_size=64), seed=0)
    head_outputs = []
    model.lm_head.register_forward_hook(lambda mod, args, out: head_outputs.append(out.shape[-1]))
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fused = causal_logprobs_and_entropy(model, ids, temperature=0.8, chunk_size=5)
        model.config.model_type = "gemma2"  # Gemma soft-caps the logits after lm_head
        assert not can_fuse_head(model)
        full = causal_logprobs_and_entropy(model, ids, temperature=0.8)
    assert head_outputs == [2, 64]  # (logp, entropy) from the fused head, then full logits
    assert "forward" not in vars(model.lm_head)  # the head is left as it was
    for got, want in zip(fused, full):
        assert got.shape == (2, 5)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
