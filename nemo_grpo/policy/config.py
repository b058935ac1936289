"""The `policy:` section: the model being trained, its batch sizes, precision and optimizer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nemo_grpo.config.validate import REQUIRED
from nemo_grpo.models.precision import Precision


@dataclass
class OptimizerConfig:
    name: Literal["adamw"] = "adamw"
    lr: float = 1e-6
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optimizer.lr: must be positive, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optimizer.betas: need two values in [0, 1), got {self.betas}")


@dataclass
class SchedulerConfig:
    name: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0


@dataclass
class PolicyConfig:
    model_name: str = REQUIRED
    tokenizer_name: str | None = None
    train_global_batch_size: int = 64
    train_micro_batch_size: int = 1
    logprob_micro_batch_size: int | None = None
    max_total_sequence_length: int = 4096
    max_tokens_per_micro_batch: int | None = None
    share_prompts: bool = False
    precision: Precision = "bfloat16"
    activation_checkpointing: bool = False
    fused_lm_head: bool = True
    logprob_chunk_tokens: int = 1024
    cpu_offload: bool = False
    max_grad_norm: float | None = 1.0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    def validate(self) -> None:
        # each bad value names its own key (a negative global batch size is not the micro batch's fault)
        if self.train_global_batch_size < 1:
            raise ValueError(
                f"policy.train_global_batch_size: {self.train_global_batch_size} responses per optimizer step; it "
                "must be at least 1: set it to a positive multiple of policy.train_micro_batch_size "
                f"({self.train_micro_batch_size}) that divides the responses of a step "
                "(grpo.num_prompts_per_step x grpo.num_generations_per_prompt)")
        if self.train_micro_batch_size < 1:
            raise ValueError(
                f"policy.train_micro_batch_size: {self.train_micro_batch_size} responses per forward and backward; "
                "it must be at least 1: set it to a divisor of policy.train_global_batch_size "
                f"({self.train_global_batch_size}), e.g. 1")
        if self.logprob_micro_batch_size is not None and self.logprob_micro_batch_size < 1:
            raise ValueError(
                f"policy.logprob_micro_batch_size: {self.logprob_micro_batch_size} responses per log-prob forward; it "
                "must be at least 1, or null to use policy.train_micro_batch_size")
        if self.train_global_batch_size % self.train_micro_batch_size:
            raise ValueError(
                f"policy.train_global_batch_size: {self.train_global_batch_size} is not a multiple of "
                f"train_micro_batch_size {self.train_micro_batch_size}; make it one, or pick a micro batch "
                f"size that divides {self.train_global_batch_size}"
            )
        if self.logprob_chunk_tokens < 1:
            raise ValueError(
                f"policy.logprob_chunk_tokens: {self.logprob_chunk_tokens} tokens per chunk of the output layer; it "
                "must be at least 1 (e.g. 1024: a chunk's logits are chunk x vocabulary floats)")
        budget = self.max_tokens_per_micro_batch
        if self.share_prompts and budget is None:
            raise ValueError(
                "policy.share_prompts: true works on packed micro-batches; set policy.max_tokens_per_micro_batch "
                f"(at least policy.max_total_sequence_length, {self.max_total_sequence_length}), or set "
                "policy.share_prompts: false")
        if budget is not None and budget < self.max_total_sequence_length:
            # the budget is a bound on a micro-batch's tokens, so the longest row must fit it
            raise ValueError(
                f"policy.max_tokens_per_micro_batch: {budget} is below policy.max_total_sequence_length "
                f"{self.max_total_sequence_length}; a sequence must fit in one micro-batch"
            )
