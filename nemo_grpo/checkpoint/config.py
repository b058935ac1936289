"""The `checkpointing:` section: how often a run saves, and which checkpoints it keeps."""

from __future__ import annotations

from dataclasses import dataclass


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
