"""The `logger:` section: where metrics go, and how often plots and rollout dumps are written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
