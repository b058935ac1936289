"""A real PolicyWorker (one rank of a gloo group, tiny random models) gives the same
log-probs, forward statistics, loss, gradient norm and updated weights with packed micro-batches
(policy.max_tokens_per_micro_batch) as with padded ones."""

from __future__ import annotations

import pytest
import torch

from nemo_grpo.algorithms.minibatch import minibatch_normalizer
from nemo_grpo.algorithms.packing import plan_batch, plan_packed, row_lengths
from nemo_grpo.models.build import build_random_model, tiny_config
from tests.integration.tiny_run import tiny_train_config, write_problems
from tests.integration.trained_checkpoint import free_port, grouped_rollouts, random_rollouts

BUDGET = 24  # tokens per packed micro-batch; the rows have 5 to 14 tokens

# fp32 on CPU: packed attention runs SDPA per row where the padded batch runs one masked SDPA, and
# the micro-batches group the rows differently, so sums are in another order: float32 rounding.
RTOL, ATOL = 1e-5, 1e-6
# Adam's first steps move each weight by about lr * g / (|g| + eps): an element whose gradient is
# near eps (1e-8) turns float32 rounding of g into a visible share of lr, so the updated weights
# are compared to a small fraction of the learning rate (the gradients themselves to ATOL).
LR = 1e-3
WEIGHT_ATOL = 0.05 * LR


def _model_dir(tmp_path, arch):
    out = tmp_path / arch
    build_random_model(tiny_config(arch, vocab_size=256), seed=0).save_pretrained(out)
    write_problems(out / "problems.jsonl")
    return out


def _run(model_dir, run_dir, *overrides, rollouts=random_rollouts, rows=8):
    from nemo_grpo.policy.worker import PolicyWorker

    cfg = tiny_train_config(model_dir, run_dir, "policy.train_micro_batch_size=2", "policy.train_global_batch_size=4",
                            "policy.max_total_sequence_length=16", f"policy.optimizer.lr={LR}",
                            "policy.max_grad_norm=0.5", "loss.entropy_coef=0.01", *overrides)
    worker = PolicyWorker(0, 1, "127.0.0.1", free_port(), cfg.policy, cfg.loss, device="cpu", temperature=0.9,
                          total_optimizer_steps=2, seed=0, need_reference=False, num_threads=1)
    try:
        batch = rollouts(256)
        batch.old_logprobs = worker.logprobs(batch)
        stats = worker.forward_stats(batch)
        half = rows // 2
        first, second = batch.select(slice(0, half)), batch.select(slice(half, rows))
        # the gradient of the first step, taken at the same (initial) weights in both runs (read as the
        # optimizer steps: train frees the gradients when it returns)
        grads = {}
        hook = worker.optimizer.register_step_pre_hook(lambda *_: grads.update(
            {n: p.grad.clone() for n, p in worker.model.named_parameters()}))
        metrics = worker.train([first], [minibatch_normalizer(first, None)])
        hook.remove()
        metrics_2 = worker.train([second], [minibatch_normalizer(second, None)])
        weights = worker.full_state_dict()
        return batch, stats, (metrics, metrics_2), weights, grads
    finally:
        worker.shutdown()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_packed_worker_equals_padded(tmp_path, arch):
    model_dir = _model_dir(tmp_path, arch)
    padded = _run(model_dir, tmp_path / "padded")
    packed = _run(model_dir, tmp_path / "packed", f"policy.max_tokens_per_micro_batch={BUDGET}")
    batch = padded[0]
    plan = plan_packed(row_lengths(batch.select(slice(0, 4))), 1, BUDGET)[0]
    assert 1 < len(plan) < 4, f"the test should pack several rows per micro-batch, got {plan}"
    _assert_same_training(arch, padded, packed)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_shared_prompts_worker_equals_padded(tmp_path, arch):
    """policy.share_prompts: 3 prompts x 4 responses, each distinct prompt of a micro-batch run once
    (its last token's hidden state predicting every response's first token)."""
    model_dir = _model_dir(tmp_path, arch)
    rollouts = lambda vocab: grouped_rollouts(vocab, prompts=3, per_prompt=4)  # noqa: E731
    padded = _run(model_dir, tmp_path / "padded", rollouts=rollouts, rows=12)
    shared = _run(model_dir, tmp_path / "shared", f"policy.max_tokens_per_micro_batch={BUDGET}",
                  "policy.share_prompts=true", rollouts=rollouts, rows=12)
    first = padded[0].select(slice(0, 6))
    plan = plan_batch(first, 1, BUDGET, share_prompts=True)[0]
    assert any(len(micro) > 1 for micro in plan), f"the test should share a prompt within a micro-batch, got {plan}"
    _assert_same_training(arch, padded, shared)


def _assert_same_training(arch, padded, packed):
    batch = padded[0]

    torch.testing.assert_close(packed[0].old_logprobs, batch.old_logprobs, rtol=RTOL, atol=ATOL)
    for key in padded[1]:
        assert packed[1][key] == pytest.approx(padded[1][key], rel=RTOL, abs=ATOL), key
    # the loss, its terms (shares of the step's normalisation that add up over micro-batches, however
    # the rows are grouped) and the token means
    for step in (0, 1):
        for key in ("loss", "pg_loss", "entropy_term", "grad_norm", "tokens", "entropy", "approx_kl_old",
                    "gen_kl_error"):
            assert packed[2][step][key] == pytest.approx(padded[2][step][key], rel=RTOL, abs=ATOL), (step, key)
        for metrics in (padded[2][step], packed[2][step]):  # loss = pg_loss - entropy_coef x entropy_term
            assert metrics["loss"] == pytest.approx(metrics["pg_loss"] - 0.01 * metrics["entropy_term"], rel=1e-5)
    assert padded[2][0]["grad_norm"] > 0.5  # the clip binds, so the norm matters to the update
    grad_diff = 0.0
    for name, value in padded[4].items():
        torch.testing.assert_close(packed[4][name], value, rtol=RTOL, atol=ATOL, msg=name)
        grad_diff = max(grad_diff, float((packed[4][name] - value).abs().max()))
    initial = build_random_model(tiny_config(arch, vocab_size=256), seed=0).state_dict()
    moved = 0
    worst = 0.0
    for name, value in padded[3].items():
        torch.testing.assert_close(packed[3][name], value, rtol=RTOL, atol=WEIGHT_ATOL, msg=name)
        moved += int(not torch.equal(value, initial[name]))
        worst = max(worst, float((packed[3][name] - value).abs().max()))
    print(f"{arch}: loss {padded[2][0]['loss']:.9g} vs {packed[2][0]['loss']:.9g}, grad_norm "
          f"{padded[2][0]['grad_norm']:.9g} vs {packed[2][0]['grad_norm']:.9g}, max |grad diff| {grad_diff:.3g}, "
          f"max |weight diff| after 2 steps {worst:.3g}, max |logp diff| "
          f"{float((packed[0].old_logprobs - batch.old_logprobs).abs().max()):.3g}")
    assert moved > 0, "the optimizer steps changed no weight"


def test_budget_below_max_sequence_length_is_refused(tmp_path):
    with pytest.raises(Exception, match="max_tokens_per_micro_batch"):
        tiny_train_config(tmp_path, tmp_path, "policy.max_total_sequence_length=64",
                          "policy.max_tokens_per_micro_batch=32")


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_packed_attention_logits_equal_padded(arch):
    """The registered attention alone: rows of 5, 9, 1 and 7 tokens (one of a single token) packed
    into one sequence give each row's padded logits."""
    from nemo_grpo.algorithms.packing import pack, pack_layout
    from nemo_grpo.policy.packed_attention import PACKED_ATTENTION

    model = build_random_model(tiny_config(arch, vocab_size=256), seed=1)
    lengths = [5, 9, 1, 7]
    ids = torch.randint(0, 256, (len(lengths), max(lengths)), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = ids * mask
    layout = pack_layout(mask)
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).logits
        model.set_attn_implementation(PACKED_ATTENTION)
        cu = layout.cu_seqlens
        packed = model(input_ids=pack(ids, layout), position_ids=layout.position_ids, cu_seq_lens_q=cu,
                       cu_seq_lens_k=cu, max_length_q=layout.max_len, max_length_k=layout.max_len).logits
        with pytest.raises(ValueError, match="cu_seq_lens"):
            model(input_ids=ids[:1], attention_mask=mask[:1])
    expected = padded.reshape(-1, padded.shape[-1])[layout.gather]
    torch.testing.assert_close(packed[0], expected, rtol=RTOL, atol=ATOL)
