"""The root config of examples/run_eval.py: the model, the sets, sampling and grading."""

from __future__ import annotations

from dataclasses import dataclass, field

from nemo_grpo.data.config import DatasetConfig, PromptConfig, check_scored_sets
from nemo_grpo.distributed.config import ClusterConfig
from nemo_grpo.generation.config import GenerationConfig
from nemo_grpo.models.precision import Precision
from nemo_grpo.rewards.config import RewardConfig


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
