"""The `data:` section: the training set, the validation sets and the prompt format."""

from __future__ import annotations

from dataclasses import dataclass, field

from nemo_grpo.config.validate import REQUIRED


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


@dataclass
class DataConfig:
    train: DatasetConfig = field(default_factory=lambda: DatasetConfig(name="math"))
    validation: list[DatasetConfig] = field(default_factory=list)
    data_dir: str | None = None
    prompt: PromptConfig = field(default_factory=PromptConfig)
    shuffle: bool = True
