"""A trained checkpoint written the way the trainer writes it, for the export tests.

A `PolicyWorker` (one rank of a gloo group, in this process: a spawned rank would pay the
imports again) takes one optimizer step on random rollouts, saves `policy/` with DCP and records
the trainer's own logits on fixed inputs; the `step_<N>` folder is completed with `config.yaml`,
`tokenizer/` and `meta.json` through `CheckpointManager`, as `save_checkpoint` in
`nemo_grpo.trainer.loop` does.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class TrainedCheckpoint:
    model_dir: Path  # the initial model (the run's policy.model_name)
    step_dir: Path  # <checkpoint_dir>/step_1
    input_ids: torch.Tensor  # [B, T] inputs the trainer's logits were computed on
    logits: torch.Tensor  # [B, T, V] the trainer's logits after the step (fp32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_rollouts(vocab: int, rows: int = 8):
    from nemo_grpo.algorithms.batch import pack_rollouts

    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, vocab, (int(torch.randint(3, 9, (1,), generator=gen)),), generator=gen).tolist()
               for _ in range(rows)]
    responses = [torch.randint(0, vocab, (int(torch.randint(2, 7, (1,), generator=gen)),), generator=gen).tolist()
                 for _ in range(rows)]
    return pack_rollouts(prompts, responses, [[-1.0] * len(r) for r in responses], torch.randn(rows, generator=gen),
                         torch.zeros(rows), pad_id=0)


def grouped_rollouts(vocab: int, prompts: int = 3, per_prompt: int = 3):
    """GRPO-shaped rows: `per_prompt` responses (2 to 6 tokens) to each of `prompts` prompts (3 to 8
    tokens), the groups one after the other, random advantages."""
    from nemo_grpo.algorithms.batch import pack_rollouts

    gen = torch.Generator().manual_seed(1)
    heads = [torch.randint(1, vocab, (int(torch.randint(3, 9, (1,), generator=gen)),), generator=gen).tolist()
             for _ in range(prompts)]
    rows = prompts * per_prompt
    responses = [torch.randint(1, vocab, (int(torch.randint(2, 7, (1,), generator=gen)),), generator=gen).tolist()
                 for _ in range(rows)]
    return pack_rollouts([heads[i // per_prompt] for i in range(rows)], responses,
                         [[-1.0] * len(r) for r in responses], torch.randn(rows, generator=gen), torch.zeros(rows),
                         pad_id=0)


def train_and_checkpoint(model_dir: Path, run_dir: Path, tokenizer) -> TrainedCheckpoint:
    """One optimizer step from `model_dir`, then a complete checkpoint `run_dir/ckpt/step_1`."""
    from nemo_grpo.algorithms.minibatch import minibatch_normalizer
    from nemo_grpo.checkpoint.manager import CheckpointManager
    from nemo_grpo.config import save_config
    from nemo_grpo.policy.model import reshard
    from nemo_grpo.policy.worker import PolicyWorker
    from tests.integration.tiny_run import tiny_train_config

    cfg = tiny_train_config(model_dir, run_dir, "policy.train_micro_batch_size=8")
    worker = PolicyWorker(0, 1, "127.0.0.1", free_port(), cfg.policy, cfg.loss, device="cpu", temperature=1.0,
                          total_optimizer_steps=1, seed=0, need_reference=False)
    try:
        batch = random_rollouts(worker.model.config.vocab_size)
        metrics = worker.train([batch], [minibatch_normalizer(batch, None)])
        manager = CheckpointManager(Path(cfg.checkpointing.checkpoint_dir))
        tmp = manager.begin(1)
        worker.save_checkpoint(str(tmp))
        save_config(cfg, tmp / "config.yaml")
        tokenizer.save_pretrained(tmp / "tokenizer")
        step_dir = manager.finish(tmp, 1, {"step": 1, "metrics": {"train/loss": metrics["loss"]}})
        ids = torch.randint(0, worker.model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            logits = worker.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()
        reshard(worker.model)
    finally:
        worker.shutdown()
    return TrainedCheckpoint(model_dir, step_dir, ids, logits)
