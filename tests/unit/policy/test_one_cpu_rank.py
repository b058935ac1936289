"""On a single CPU rank the policy is a plain module (FSDP2 would only copy it), and a checkpoint that
one FSDP2 rank wrote (the layout of every one-rank CPU run before that change) still resumes into it:
the same weights, the same AdamW moments and step count."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from nemo_grpo.algorithms.minibatch import minibatch_normalizer
from nemo_grpo.models.build import build_random_model, tiny_config
from nemo_grpo.policy.model import decoder_layers, load_hf_model, lr_lambda, make_optimizer
from tests.integration.tiny_run import tiny_train_config, write_problems
from tests.integration.trained_checkpoint import free_port, random_rollouts


@pytest.mark.timeout(300)
def test_one_cpu_rank_trains_a_plain_module_and_resumes_a_checkpoint_written_by_one_fsdp2_rank(tmp_path):
    from nemo_grpo.policy.worker import PolicyWorker

    model_dir = tmp_path / "model"
    build_random_model(tiny_config("qwen2", vocab_size=256), seed=0).save_pretrained(model_dir)
    write_problems(model_dir / "problems.jsonl")
    cfg = tiny_train_config(model_dir, tmp_path / "run", "policy.train_micro_batch_size=4",
                            "policy.train_global_batch_size=4", "policy.max_total_sequence_length=16",
                            "policy.optimizer.lr=1e-3")
    worker = PolicyWorker(0, 1, "127.0.0.1", free_port(), cfg.policy, cfg.loss, device="cpu", temperature=1.0,
                          total_optimizer_steps=4, seed=0, need_reference=False, num_threads=1)
    try:
        assert not any(isinstance(p, DTensor) for p in worker.model.parameters())
        batch = random_rollouts(256).select(slice(0, 4))
        batch.old_logprobs = worker.logprobs(batch)
        assert worker.train([batch], [minibatch_normalizer(batch, None)])["grad_norm"] > 0
        step_dir = tmp_path / "ckpt" / "step_1"
        worker.save_checkpoint(str(step_dir))  # the scheduler and RNG files; the DCP folders replaced below

        # What one FSDP2 rank wrote: each decoder layer and the root sharded, two AdamW steps taken
        old = load_hf_model(str(model_dir), device=torch.device("cpu"))
        for layer in decoder_layers(old):
            fully_shard(layer, mesh=worker.mesh)
        fully_shard(old, mesh=worker.mesh)
        optimizer = make_optimizer(old, cfg.policy.optimizer)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.policy.scheduler, 4))
        for _ in range(2):
            old(input_ids=batch.input_ids).logits.float().square().mean().backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        policy = step_dir / "policy"
        for name in ("weights", "optimizer"):
            shutil.rmtree(policy / name)
        dcp.save(get_model_state_dict(old), checkpoint_id=str(policy / "weights"))
        dcp.save(get_optimizer_state_dict(old, optimizer), checkpoint_id=str(policy / "optimizer"))

        worker.load_checkpoint(str(step_dir))
        loaded = dict(worker.model.named_parameters())
        for name, param in old.named_parameters():
            assert torch.equal(loaded[name], param.full_tensor()), name
            state, expected = worker.optimizer.state[loaded[name]], optimizer.state[param]
            assert float(state["step"]) == 2.0, name
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(state[key], expected[key].full_tensor()), (name, key)
        # and it trains on from there
        assert worker.train([batch], [minibatch_normalizer(batch, None)])["grad_norm"] > 0
    finally:
        worker.shutdown()
