"""Checkpoint folders: written whole or not at all, found again on resume, pruned to the best K.

Layout of one checkpoint (`<checkpoint_dir>/step_<N>/`):

    policy/weights/        DCP shards of the model (HF parameter names)
    policy/optimizer/      DCP shards of the optimizer state
    policy/extra_state_rank<r>.pt   scheduler and RNG state of each rank
    driver_state.pt        step, consumed samples, data-loader position, driver RNG
    meta.json              step, metrics, model name and architecture, written last
    config.yaml            the resolved config of the run
    tokenizer/             the tokenizer files

Everything is written into `tmp_step_<N>/` first and renamed when complete, so a crash while
saving leaves the previous checkpoint untouched and a half-written folder that is never loaded
(and is removed on the next start).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_grpo.utils.errors import UserError

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointMismatch(UserError, ValueError):
    """A checkpoint that this run must not resume; the message lists what differs."""


@dataclass
class CheckpointManager:
    root: Path
    keep_top_k: int | None = None
    metric_name: str | None = None
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def remove_incomplete(self) -> list[Path]:
        """Delete folders of saves that never finished."""
        removed = []
        if self.root.is_dir():
            for path in self.root.glob("tmp_step_*"):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        if removed:
            log.warning("removed %d incomplete checkpoint folder(s) in %s", len(removed), self.root)
        return removed

    def complete(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        out = []
        for path in self.root.iterdir():
            match = STEP_DIR.match(path.name)
            if match and (path / "meta.json").is_file():
                out.append((int(match.group(1)), path))
        return sorted(out)

    def latest(self) -> Path | None:
        found = self.complete()
        return found[-1][1] if found else None

    def begin(self, step: int) -> Path:
        tmp = self.root / f"tmp_step_{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def finish(self, tmp: Path, step: int, meta: dict[str, Any]) -> Path:
        """Write meta.json last, then make the checkpoint visible with one rename."""
        (tmp / "meta.json.tmp").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        (tmp / "meta.json.tmp").rename(tmp / "meta.json")
        final = self.root / f"step_{step}"
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        self.prune()
        return final

    def prune(self) -> list[Path]:
        """Keep the latest checkpoint plus the best `keep_top_k` by `metric_name`."""
        found = self.complete()
        if self.keep_top_k is None or len(found) <= self.keep_top_k:
            return []
        latest_step = found[-1][0]

        def score(item: tuple[int, Path]) -> tuple[int, float, int]:
            value = read_meta(item[1]).get("metrics", {}).get(self.metric_name) if self.metric_name else None
            if value is None:  # no metric: rank by recency
                return (0, 0.0, item[0])
            return (1, float(value) if self.higher_is_better else -float(value), item[0])

        ranked = sorted(found, key=score, reverse=True)
        keep = {step for step, _ in ranked[: self.keep_top_k]} | {latest_step}
        removed = [path for step, path in found if step not in keep]
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        return removed


def read_meta(step_dir: Path) -> dict[str, Any]:
    return json.loads((Path(step_dir) / "meta.json").read_text())


def check_resumable(meta: dict[str, Any], expected: dict[str, Any], where: Path) -> None:
    """Refuse a checkpoint whose model or run-shaping settings differ from this run's."""
    saved = meta.get("compat", {})
    diffs = [
        f"{key}: checkpoint has {saved.get(key)!r}, this run has {value!r}"
        for key, value in expected.items()
        if saved.get(key) != value
    ]
    if diffs:
        raise CheckpointMismatch(
            f"refusing to resume {where}: it belongs to another model or an incompatible config ("
            + "; ".join(diffs)
            + "). Use another checkpointing.checkpoint_dir for a new run, or start a new stage from an "
            "HF export with policy.model_name=<folder>."
        )
