"""The driver's handle on the policy ranks: shards batches and prompts, calls every rank, merges
results. The ranks are Ray actors (`launcher="ray"`) or one object in this process (`"local"`)."""

from __future__ import annotations

import dataclasses

import torch

from nemo_grpo.algorithms.minibatch import concat, distribute, minibatch_normalizer, split_minibatches, trainable_rows
from nemo_grpo.generation.interface import Rollout, SamplingParams
from nemo_grpo.logging.metrics import merge_rank_metrics
from nemo_grpo.algorithms.batch import TrainBatch, split_even
from nemo_grpo.algorithms.packing import packed_shares
from nemo_grpo.policy.worker import PolicyWorker


class PolicyGroup:
    def __init__(self, world_size: int, policy_cfg, loss_cfg, *, gpus_per_worker: float, cpus_per_worker: float,
                 launcher: str = "ray", env_vars: dict[str, str] | None = None, num_nodes: int = 1, **worker_kwargs):
        self.world_size, self.policy_cfg, self.launcher = world_size, policy_cfg, launcher
        if launcher == "local":
            from nemo_grpo.distributed.local import LocalWorkerGroup

            if world_size != 1:
                raise ValueError(f"the local launcher runs one rank, not {world_size}")
            self.workers = LocalWorkerGroup(PolicyWorker, init_args=(policy_cfg, loss_cfg), init_kwargs=worker_kwargs)
        else:
            from nemo_grpo.distributed.cluster import WorkerGroup

            self.workers = WorkerGroup(PolicyWorker, world_size, gpus_per_worker=gpus_per_worker,
                                       cpus_per_worker=cpus_per_worker, num_nodes=num_nodes, init_args=(policy_cfg, loss_cfg),
                                       init_kwargs=worker_kwargs, env_vars=env_vars)
        self.get = self.workers.get

    # ---- generation: every rank's engine -------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Rollout]:
        """Whole prompts (with their `n` responses) to the ranks in balanced contiguous shares,
        each sampled by the rank's own engine; the rollouts come back in prompt order. Seeds
        follow each prompt's index in the whole request, so the split does not change them."""
        calls = [(rank, part) for rank, part in enumerate(split_even(len(prompts), self.world_size))
                 if part.stop > part.start]
        outs = self.get([self.workers.call_on(rank, "generate", prompts[part.start : part.stop],
                                              dataclasses.replace(params, prompt_offset=params.prompt_offset + part.start))
                         for rank, part in calls])
        rollouts = []
        for out, (_, part) in zip(outs, calls):
            for rollout in out:
                rollout.prompt_index += part.start
                rollouts.append(rollout)
        return rollouts

    def refit(self, version: int) -> dict[str, float]:
        """Every rank gathers its shards into its own engine (skipped where the engine has
        `version`). Returns the slowest rank's seconds and the bytes each rank gathered."""
        outs = self.workers.run("refit", version)
        return {"seconds": max(o["seconds"] for o in outs), "bytes": outs[0]["bytes"]}

    def sleep_engines(self) -> None:
        self.workers.run("sleep_engine")

    def engine_name(self) -> str:
        return self.workers.run("engine_name")[0]

    def logprobs(self, batch: TrainBatch, *, reference: bool = False) -> torch.Tensor:
        """[B, T-1] log-probs of the whole batch; every rank runs the same number of forwards."""
        result = torch.zeros(batch.mask.shape)
        budget = self.policy_cfg.max_tokens_per_micro_batch
        if budget is not None:  # packed: rows go to ranks by tokens, then come back to their place
            packed = packed_shares(batch, self.world_size, budget, self.policy_cfg.share_prompts)
            outs = self.get(self.workers.call_per_rank("logprobs", [(p.batch, p.sizes) for p in packed],
                                                      reference=reference))
            for out, share in zip(outs, packed):
                for pos, row in enumerate(share.rows):
                    if row >= 0:
                        width = min(out.shape[1], result.shape[1])
                        result[row, :width] = out[pos, :width]
            return result
        size = self.policy_cfg.logprob_micro_batch_size or self.policy_cfg.train_micro_batch_size
        shares = distribute(batch, self.world_size, size)
        outs = self.get(self.workers.call_per_rank("logprobs", [(s,) for s in shares], reference=reference))
        for out, part in zip(outs, split_even(len(batch), self.world_size)):
            count = part.stop - part.start
            result[part.start : part.stop, : out.shape[1]] = out[:count]
        return result

    def train(self, batch: TrainBatch, *, ppo_epochs: int, norm_constant: float | None,
              skip_zero_advantage: bool, metrics_on_skipped_rows: bool = True) -> dict[str, float]:
        """`ppo_epochs` passes over the batch in minibatches of train_global_batch_size, one
        optimizer step each; normalisers count the whole minibatch, skipped rows included."""
        per_rank: list[list[TrainBatch | None]] = [[] for _ in range(self.world_size)]
        sizes: list[list[list[int] | None]] = [[] for _ in range(self.world_size)]
        normalizers, kept, skipped = [], 0, []
        for epoch in range(ppo_epochs):
            for part in split_minibatches(len(batch), self.policy_cfg.train_global_batch_size):
                minibatch = batch.select(part)
                normalizers.append(minibatch_normalizer(minibatch, norm_constant))
                rows = trainable_rows(minibatch, skip_zero_advantage=skip_zero_advantage)
                kept += len(rows)
                if metrics_on_skipped_rows and epoch == 0 and len(rows) < len(minibatch):
                    rest = torch.ones(len(minibatch), dtype=torch.bool)
                    rest[rows] = False
                    skipped.append(minibatch.select(torch.nonzero(rest).flatten()))
                for rank, (share, plan) in enumerate(self._shares(minibatch.select(rows),
                                                                  self.policy_cfg.train_micro_batch_size)):
                    per_rank[rank].append(share)
                    sizes[rank].append(plan)
        skipped_sums = self._stats_of(skipped)  # before the update, like the first minibatch's
        outs = self.get(self.workers.call_per_rank("train", [(mbs, normalizers, plans)
                                                            for mbs, plans in zip(per_rank, sizes)]))
        metrics = merge_rank_metrics(outs)
        metrics["trained_fraction"] = kept / (len(batch) * ppo_epochs)
        trained = metrics.pop("tokens", 0.0)
        metrics["tokens_trained"] = trained  # response tokens through the backward pass, all epochs
        total = trained + skipped_sums["tokens"]
        for key in ("entropy", "token_mult_prob_error", "gen_kl_error"):  # over every response token
            if total:
                metrics[key] = (metrics.get(key, 0.0) * trained + skipped_sums[key]) / total
        return metrics

    def _stats_of(self, batches: list[TrainBatch]) -> dict[str, float]:
        """Entropy and numerics sums of rows that skip training (a forward pass, no backward)."""
        if not batches:
            return {"entropy": 0.0, "token_mult_prob_error": 0.0, "gen_kl_error": 0.0, "tokens": 0.0}
        rows = concat(batches)
        size = self.policy_cfg.logprob_micro_batch_size or self.policy_cfg.train_micro_batch_size
        outs = self.get(self.workers.call_per_rank("forward_stats", self._shares(rows, size)))
        return {key: sum(o[key] for o in outs) for key in outs[0]}

    def _shares(self, batch: TrainBatch, size: int) -> list[tuple[TrainBatch | None, list[int] | None]]:
        """Per rank: its rows and the rows of each packed micro-batch (None: `size` rows each)."""
        budget = self.policy_cfg.max_tokens_per_micro_batch
        if budget is None:
            return [(share, None) for share in distribute(batch, self.world_size, size)]
        shares = packed_shares(batch, self.world_size, budget, self.policy_cfg.share_prompts)
        return [(p.batch, p.sizes) for p in shares]

    def save(self, step_dir: str, step: int | None = None, background: str = "none") -> None:
        """Every rank's shards; with `background` ("process", "thread") the call returns once they are
        staged and `save_done` / `wait_save` tell when they are on disk."""
        self.workers.run("save_checkpoint", step_dir, step, background)

    def save_done(self) -> bool:
        """Whether no rank is still writing a checkpoint (never blocks on the write); raises a rank's
        write error."""
        return all(self.workers.run("save_done"))

    def wait_save(self) -> None:
        self.workers.run("wait_save")

    def state_bytes(self) -> int:
        """Bytes of the model and optimizer state a checkpoint writes (rank 0 sees the global sizes)."""
        return self.workers.run("state_bytes")[0]

    def load(self, step_dir: str) -> tuple[float, float] | None:
        """Restore every rank; (old, new) peak learning rate when the config changed it."""
        return self.workers.run("load_checkpoint", step_dir)[0]

    def fingerprint(self) -> dict:
        return self.workers.run("get_fingerprint")[0]

    def shutdown(self) -> None:
        self.workers.shutdown()
