"""The one config schema: every key a recipe may set, its type and its default.

Each top-level YAML section is a dataclass. The algorithm sections (`advantage`, `loss`, `dapo`)
and the reward section (`reward`) live beside the code that reads them and are imported here;
everything is documented once, in `docs/config.md`.

Two roots share the sections: `TrainConfig` (examples/run_grpo_math.py) and `EvalConfig`
(examples/run_eval.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from nemo_grpo.algorithms.config import AdvantageConfig, DapoConfig, LossConfig, validate_sections
from nemo_grpo.config.validate import REQUIRED
from nemo_grpo.evals.metrics import logged_ks, metric_names
from nemo_grpo.logging.guards import GuardRule
from nemo_grpo.rewards.config import RewardConfig

Precision = Literal["bfloat16", "float16", "float32"]


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
        for name in ("num_prompts_per_step", "num_generations_per_prompt", "max_num_steps", "ppo_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"grpo.{name}: must be at least 1, got {getattr(self, name)}")
        if self.val_period < 0:
            raise ValueError("grpo.val_period: must be >= 0 (0 turns periodic validation off)")


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
    precision: Precision = "bfloat16"
    activation_checkpointing: bool = False
    cpu_offload: bool = False
    max_grad_norm: float | None = 1.0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    def validate(self) -> None:
        if self.train_micro_batch_size < 1 or self.train_global_batch_size < 1:
            raise ValueError("policy.train_micro_batch_size: batch sizes must be at least 1")
        if self.train_global_batch_size % self.train_micro_batch_size:
            raise ValueError(
                f"policy.train_global_batch_size: {self.train_global_batch_size} is not a multiple of "
                f"train_micro_batch_size {self.train_micro_batch_size}"
            )


@dataclass
class VllmConfig:
    gpu_memory_utilization: float = 0.6
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    max_model_len: int | None = None
    kv_cache_memory_bytes: int | None = None
    compilation_config: dict[str, Any] = field(default_factory=dict)
    extra_kwargs: dict[str, Any] = field(default_factory=dict)
    # null: in the caller's process on CPU (starts in seconds), an engine process on GPU.
    in_process: bool | None = None
    # Refit sends the weights in chunks of at most this many MiB (bounds the staging memory).
    refit_chunk_mb: int = 256

    def validate(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("vllm.gpu_memory_utilization: must be in (0, 1]")
        if self.refit_chunk_mb < 1:
            raise ValueError(f"vllm.refit_chunk_mb: must be at least 1, got {self.refit_chunk_mb}")


@dataclass
class GenerationConfig:
    backend: Literal["auto", "vllm", "hf"] = "auto"
    model_name: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    max_new_tokens: int | None = None
    stop_strings: list[str] = field(default_factory=list)
    colocated: bool = True
    num_gpus: int = 0
    vllm: VllmConfig = field(default_factory=VllmConfig)

    def validate(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError("max_new_tokens: must be at least 1 (or null for the model limit)")


@dataclass
class PromptConfig:
    template: str = "cot"
    system_prompt: str | None = None
    use_chat_template: bool = True
    max_prompt_length: int | None = None


@dataclass
class DatasetConfig:
    name: str = REQUIRED
    path: str | None = None
    split: str | None = None
    repeat: int = 1
    max_samples: int | None = None
    # Sampling settings for a validation set; null means "as in the `generation` section".
    num_samples: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None

    def validate(self) -> None:
        if self.repeat < 1:
            raise ValueError(f"repeat: must be at least 1, got {self.repeat}")
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError(f"num_samples: must be at least 1, got {self.num_samples}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be at least 1, got {self.max_new_tokens}")


SAMPLING_KEYS = ("num_samples", "temperature", "top_p", "max_new_tokens")


def check_scored_sets(sets: list[DatasetConfig], where: str) -> None:
    """Validation and evaluation sets: unique names (they name the metrics and the output
    folders) and one copy of each problem (several samples per problem are `num_samples`)."""
    seen: set[str] = set()
    for i, ds in enumerate(sets):
        if ds.repeat != 1:
            raise ValueError(f"{where}[{i}].repeat: scored sets are not repeated; "
                             f"set {where}[{i}].num_samples={ds.repeat} for {ds.repeat} samples per problem")
        if ds.name in seen:
            raise ValueError(f"{where}[{i}].name: two sets are named '{ds.name}'; names label the metrics, "
                             "so give each set its own name (with `path:` for a file)")
        seen.add(ds.name)


def validation_metric_names(sets: list[DatasetConfig]) -> list[str]:
    """Every `val/<set>/<metric>` the training loop logs for these validation sets."""
    names = []
    for ds in sets:
        n = ds.num_samples or 1
        names += [f"val/{ds.name}/{m}" for m in metric_names(n, logged_ks(n))]
    return names


@dataclass
class DataConfig:
    train: DatasetConfig = field(default_factory=lambda: DatasetConfig(name="math"))
    validation: list[DatasetConfig] = field(default_factory=list)
    data_dir: str | None = None
    prompt: PromptConfig = field(default_factory=PromptConfig)
    shuffle: bool = True


@dataclass
class LoggerConfig:
    log_dir: str = "logs/run"
    console: bool = True
    jsonl: bool = True
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "nemo-grpo"
    wandb_name: str | None = None
    wandb_mode: Literal["online", "offline", "disabled"] = "offline"
    metrics_on_skipped_rows: bool = True
    plot_period: int = 10
    rollout_dump_period: int = 0

    def validate(self) -> None:
        for name in ("plot_period", "rollout_dump_period"):
            if getattr(self, name) < 0:
                raise ValueError(f"logger.{name}: must be >= 0 (0 turns it off), got {getattr(self, name)}")


@dataclass
class CheckpointingConfig:
    enabled: bool = True
    checkpoint_dir: str = "results/run"
    save_period: int = 10
    keep_top_k: int | None = None
    metric_name: str | None = None
    higher_is_better: bool = True

    def validate(self) -> None:
        if self.save_period < 1:
            raise ValueError("checkpointing.save_period: must be at least 1")


@dataclass
class ClusterConfig:
    num_nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_worker: float = 0.5
    ray_address: str | None = None


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

    def validate(self) -> None:
        validate_sections(self.advantage, self.loss, self.dapo)  # rules that span the algorithm sections
        check_scored_sets(self.data.validation, "data.validation")
        for key in SAMPLING_KEYS:
            if getattr(self.data.train, key) is not None:
                raise ValueError(f"data.train.{key}: sampling settings belong to validation sets; training samples "
                                 "follow grpo.num_generations_per_prompt and the generation section")
        grpo, ckpt = self.grpo, self.checkpointing
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
class EvalDataConfig:
    datasets: list[DatasetConfig] = field(default_factory=list)
    data_dir: str | None = None
    prompt: PromptConfig = field(default_factory=PromptConfig)

    def validate(self) -> None:
        if not self.datasets:
            raise ValueError("datasets: list at least one set to evaluate, e.g. [{name: aime24}]")
        check_scored_sets(self.datasets, "data.datasets")


@dataclass
class EvalConfig:
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    num_samples: int = 1
    seed: int = 0
    precision: Precision = "bfloat16"
    problems_per_chunk: int = 64
    output_dir: str = "results/eval"
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    def validate(self) -> None:
        if not self.generation.model_name:
            raise ValueError("generation.model_name: set the model to evaluate, e.g. generation.model_name=<hf folder>")
        if self.num_samples < 1:
            raise ValueError(f"num_samples: must be at least 1, got {self.num_samples}")
        if self.problems_per_chunk < 1:
            raise ValueError(f"problems_per_chunk: must be at least 1, got {self.problems_per_chunk}")
        for i, ds in enumerate(self.data.datasets):
            if ds.max_new_tokens is None and self.generation.max_new_tokens is None:
                raise ValueError(f"generation.max_new_tokens: set it (or data.datasets[{i}].max_new_tokens): "
                                 "an evaluation needs a response length limit")


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
