"""The size a save is estimated at (checkpoint/manager.py:check_space) comes from a real PolicyWorker:
parameters x dtype bytes plus AdamW's two moments; compared here with the DCP shards it then writes."""

from __future__ import annotations

import pytest

from nemo_grpo.algorithms.minibatch import minibatch_normalizer
from nemo_grpo.checkpoint.manager import folder_size
from nemo_grpo.models.build import build_random_model, tiny_config
from tests.integration.tiny_run import tiny_train_config, write_problems
from tests.integration.trained_checkpoint import free_port, random_rollouts


@pytest.mark.timeout(300)
def test_state_bytes_counts_parameters_and_both_adam_moments_and_matches_the_shards_written(tmp_path):
    from nemo_grpo.policy.worker import PolicyWorker

    model_dir = tmp_path / "model"
    model = build_random_model(tiny_config("qwen2", vocab_size=256), seed=0)
    model.save_pretrained(model_dir)
    write_problems(model_dir / "problems.jsonl")
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    cfg = tiny_train_config(model_dir, tmp_path / "run", "policy.train_micro_batch_size=2",
                            "policy.train_global_batch_size=4", "policy.max_total_sequence_length=16")
    worker = PolicyWorker(0, 1, "127.0.0.1", free_port(), cfg.policy, cfg.loss, device="cpu", temperature=0.9,
                          total_optimizer_steps=2, seed=0, need_reference=False, num_threads=1)
    try:
        assert worker.state_bytes() == 3 * param_bytes  # before the first step: the moments AdamW will create
        batch = random_rollouts(256).select(slice(0, 4))
        batch.old_logprobs = worker.logprobs(batch)
        worker.train([batch], [minibatch_normalizer(batch, None)])
        after = worker.state_bytes()
        assert 3 * param_bytes <= after <= 3 * param_bytes + 8 * len(list(model.parameters()))  # + the step counters
        worker.save_checkpoint(str(tmp_path / "ckpt"))
    finally:
        worker.shutdown()
    written = folder_size(tmp_path / "ckpt" / "policy")
    assert 0.9 * after <= written <= after + (1 << 20), (after, written)  # DCP metadata and the scheduler state
