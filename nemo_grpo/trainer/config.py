"""The root config of a training run (`TrainConfig`) and of a staged curriculum (`CurriculumConfig`).

Each top-level YAML section is a dataclass that lives beside the code that reads it
(`policy/config.py`, `generation/config.py`, `data/config.py`, `algorithms/config.py`,
`rewards/config.py`, ...); this module only assembles them, with `grpo:` (the loop's own
settings) and the rules that span sections. Everything is documented once, in `docs/config.md`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nemo_grpo.algorithms.config import AdvantageConfig, DapoConfig, LossConfig, validate_sections
from nemo_grpo.checkpoint.config import CheckpointingConfig
from nemo_grpo.config import load_config
from nemo_grpo.config.validate import REQUIRED
from nemo_grpo.data.config import SAMPLING_KEYS, DataConfig, DatasetConfig, check_scored_sets
from nemo_grpo.distributed.config import ClusterConfig
from nemo_grpo.evals.metrics import logged_ks, metric_names
from nemo_grpo.generation.config import GenerationConfig
from nemo_grpo.logging.config import LoggerConfig
from nemo_grpo.logging.guards import GuardRule
from nemo_grpo.models.precision import Precision
from nemo_grpo.policy.config import PolicyConfig
from nemo_grpo.rewards.config import RewardConfig


@dataclass
class GRPOConfig:
    num_prompts_per_step: int = 8
    num_generations_per_prompt: int = 8
    max_num_steps: int = 100
    max_num_epochs: int = 1
    ppo_epochs: int = 1
    seed: int = 42
    val_period: int = 0
    val_at_start: bool = False
    val_at_end: bool = False
    skip_zero_advantage_groups: bool = True

    def validate(self) -> None:
        for name in ("num_prompts_per_step", "num_generations_per_prompt", "max_num_steps", "max_num_epochs",
                     "ppo_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"grpo.{name}: must be at least 1, got {getattr(self, name)}")
        if self.val_period < 0:
            raise ValueError("grpo.val_period: must be >= 0 (0 turns periodic validation off)")


def validation_metric_names(sets: list[DatasetConfig]) -> list[str]:
    """Every `val/<set>/<metric>` the training loop logs for these validation sets."""
    names = []
    for ds in sets:
        n = ds.num_samples or 1
        names += [f"val/{ds.name}/{m}" for m in metric_names(n, logged_ks(n))]
    return names


@dataclass
class TrainConfig:
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    dapo: DapoConfig = field(default_factory=DapoConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpointing: CheckpointingConfig = field(default_factory=CheckpointingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    guards: list[GuardRule] = field(default_factory=list)

    @property
    def max_response_length(self) -> int:
        """The longest response a training step samples: generation.max_new_tokens, else the whole
        policy.max_total_sequence_length."""
        return self.generation.max_new_tokens or self.policy.max_total_sequence_length

    def validate(self) -> None:
        validate_sections(self.advantage, self.loss, self.dapo)  # rules that span the algorithm sections
        grpo, policy = self.grpo, self.policy
        if grpo.num_generations_per_prompt < 2 and self.advantage.estimator != "raw":
            raise ValueError(
                f"grpo.num_generations_per_prompt: {grpo.num_generations_per_prompt} response per prompt, but "
                f"advantage.estimator '{self.advantage.estimator}' compares each response with the others of its "
                "group, so a group of one has no advantage and trains nothing; use at least 2 (e.g. 8), or "
                "advantage.estimator=raw")
        responses = grpo.num_prompts_per_step * grpo.num_generations_per_prompt
        if responses % policy.train_global_batch_size:
            raise ValueError(
                f"policy.train_global_batch_size: a step samples {grpo.num_prompts_per_step} x "
                f"{grpo.num_generations_per_prompt} = {responses} responses, not a multiple of "
                f"train_global_batch_size={policy.train_global_batch_size}; make it a divisor of {responses}")
        if not self.generation.colocated:
            raise ValueError("generation.colocated: false (an engine on GPUs of its own) is not supported: every "
                             "policy rank samples with its own engine on its own device, and refit never leaves "
                             "the rank; remove the setting (see docs/generation.md)")
        if self.generation.vllm.tensor_parallel_size != 1:
            raise ValueError(f"generation.vllm.tensor_parallel_size: {self.generation.vllm.tensor_parallel_size}, but "
                             "an engine runs in one policy rank (tensor_parallel_size 1): engines that span several "
                             "ranks are not supported yet; use 1 (a 1.5B model fits one GPU at 24K tokens)")
        if self.cluster.world_size > 1 and self.cluster.launcher == "local":
            raise ValueError(f"cluster.launcher: local runs one rank, but the cluster section asks for "
                             f"{self.cluster.world_size}; use launcher ray (or auto)")
        check_scored_sets(self.data.validation, "data.validation")
        for key in SAMPLING_KEYS:
            if getattr(self.data.train, key) is not None:
                raise ValueError(f"data.train.{key}: sampling settings belong to validation sets; training samples "
                                 "follow grpo.num_generations_per_prompt and the generation section")
        ckpt = self.checkpointing
        scheduled = grpo.val_period > 0 or grpo.val_at_start or grpo.val_at_end
        if scheduled and not self.data.validation:
            raise ValueError("data.validation: grpo.val_period / val_at_start / val_at_end ask for validation but no "
                             "set is listed; add one (e.g. [{name: aime24, num_samples: 16}]) or set grpo.val_period=0")
        if ckpt.metric_name and ckpt.metric_name.startswith("val/"):
            valid = validation_metric_names(self.data.validation)
            if ckpt.metric_name not in valid:
                listed = ", ".join(valid) if valid else "none: data.validation is empty"
                raise ValueError(f"checkpointing.metric_name: '{ckpt.metric_name}' names no validation metric; "
                                 f"valid names: {listed}")
            if not scheduled:
                raise ValueError(f"checkpointing.metric_name: '{ckpt.metric_name}' needs validation to run; "
                                 "set grpo.val_period (and/or val_at_end)")


@dataclass
class StageConfig:
    name: str = REQUIRED
    # The stage's training recipe (relative paths are read from the curriculum file's folder).
    config: str = REQUIRED
    overrides: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"name: {self.name!r} is used as a folder name; use letters, digits, '-', '_' or '.'")


@dataclass
class CurriculumConfig:
    """examples/run_curriculum.py: training stages run one after another, each starting from the
    previous stage's Hugging Face export."""

    output_dir: str = "results/curriculum"
    # Which checkpoint of a finished stage is exported and handed on: the last one, or the best by
    # that stage's checkpointing.metric_name.
    export: Literal["final", "best"] = "final"
    export_dtype: Precision = "bfloat16"
    # Overrides applied to every stage (before the stage's own).
    overrides: list[str] = field(default_factory=list)
    stages: list[StageConfig] = field(default_factory=list)

    def validate(self) -> None:
        if not self.stages:
            raise ValueError("stages: a curriculum needs at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stages: stage names must be unique, got {names}")


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """A training recipe (and what it inherits) with `a.b=c` overrides, validated."""
    return load_config(path, overrides, TrainConfig)
