"""The `checkpointing:` section: how often a run saves, and which checkpoints it keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class CheckpointingConfig:
    enabled: bool = True
    checkpoint_dir: str = "results/run"
    save_period: int = 10
    keep_top_k: int | None = None
    metric_name: str | None = None
    higher_is_better: bool = True
    # SIGTERM / SIGINT: seconds the running step may take to finish and be checkpointed before it
    # is abandoned (0: abandon at once).
    preemption_grace_s: float = 120.0
    # The policy's DCP shards written off the loop (the loop waits only while the state is staged):
    # "thread" (a writer thread in each rank), "process" (torch's process-based writer), or "none"
    # (the loop waits for the whole save). Why thread is the default: docs/checkpoints.md.
    async_save: Literal["process", "thread", "none"] = "thread"

    def validate(self) -> None:
        if self.save_period < 1:
            raise ValueError("checkpointing.save_period: must be at least 1")
        if self.preemption_grace_s < 0:
            raise ValueError("checkpointing.preemption_grace_s: must be >= 0 (0: abandon the running step at once)")
