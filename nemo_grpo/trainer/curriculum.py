"""A staged curriculum: training runs one after another, each starting from the previous one's
Hugging Face export (DeepScaleR: 8K, then 16K, then 24K context).

    <output_dir>/
      <stage>/checkpoints/step_N/   the stage's own DCP checkpoints (resumable)
      <stage>/logs/                 its metrics, config and plots
      <stage>/hf/                   the exported model the next stage starts from
      <stage>/stage_done.json       written last: the stage is finished and exported

Each stage is an ordinary run of its own recipe, with three settings forced: its checkpoint and
log folders (under the stage folder) and, from the second stage on, `policy.model_name` = the
previous stage's export. So every stage starts with a fresh optimizer, step counter and data
loader. Running the same command again skips finished stages and resumes the unfinished one
from its latest checkpoint.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from nemo_grpo.checkpoint.export import export_checkpoint
from nemo_grpo.checkpoint.manager import CheckpointManager, meta_metric, read_meta
from nemo_grpo.config import ConfigError, load_config
from nemo_grpo.logging.guards import GuardStop
from nemo_grpo.trainer.config import CurriculumConfig, StageConfig, TrainConfig
from nemo_grpo.trainer.loop import run_grpo

log = logging.getLogger(__name__)

DONE_FILE = "stage_done.json"


@dataclass
class StagePaths:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def export(self) -> Path:
        return self.root / "hf"

    @property
    def done(self) -> Path:
        return self.root / DONE_FILE


def stage_paths(cfg: CurriculumConfig, stage: StageConfig) -> StagePaths:
    return StagePaths(Path(cfg.output_dir) / stage.name)


def resolve_recipe(stage: StageConfig, base_dir: Path) -> Path:
    """A stage's recipe path: absolute, or relative to the curriculum file, or to the working folder."""
    path = Path(stage.config)
    for candidate in ([path] if path.is_absolute() else [base_dir / path, path]):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"stages[{stage.name}].config: recipe file '{stage.config}' not found "
                      f"(looked in {base_dir} and the working folder)")


def stage_config(cfg: CurriculumConfig, index: int, base_dir: Path, extra_overrides: list[str] = ()) -> TrainConfig:
    """The training config of stage `index` (0-based), with the curriculum's forced settings."""
    stage = cfg.stages[index]
    paths = stage_paths(cfg, stage)
    forced = [f"checkpointing.checkpoint_dir={paths.checkpoints}", f"logger.log_dir={paths.logs}"]
    if index > 0:
        previous = stage_paths(cfg, cfg.stages[index - 1]).export
        forced += [f"policy.model_name={previous}", "policy.tokenizer_name=null"]
    overrides = [*cfg.overrides, *extra_overrides, *stage.overrides, *forced]
    train = load_config(resolve_recipe(stage, base_dir), overrides, TrainConfig)
    if not train.checkpointing.enabled:
        raise ConfigError(f"stage '{stage.name}': checkpointing.enabled is false, but a curriculum stage must save "
                          "checkpoints to be exported and resumed; remove that override")
    return train


def pick_checkpoint(train: TrainConfig, which: str) -> Path:
    """The stage's checkpoint to export: its latest, or its best by checkpointing.metric_name."""
    ck = train.checkpointing
    manager = CheckpointManager(Path(ck.checkpoint_dir), ck.keep_top_k, ck.metric_name, ck.higher_is_better)
    found = manager.complete()
    if not found:
        raise RuntimeError(f"no complete checkpoint in {ck.checkpoint_dir} to export")
    if which == "final" or not ck.metric_name:
        return found[-1][1]
    scored = [(meta_metric(path, ck.metric_name), step, path) for step, path in found]
    scored = [(value, step, path) for value, step, path in scored if value is not None]
    if not scored:
        log.warning("no checkpoint carries %s; exporting the latest", ck.metric_name)
        return found[-1][1]
    sign = 1 if ck.higher_is_better else -1
    return max(scored, key=lambda item: (sign * float(item[0]), item[1]))[2]


def finish_stage(cfg: CurriculumConfig, stage: StageConfig, train: TrainConfig) -> dict:
    """Export the chosen checkpoint to the stage's HF folder, then mark the stage done."""
    paths = stage_paths(cfg, stage)
    chosen = pick_checkpoint(train, cfg.export)
    log.info("stage '%s': exporting %s to %s", stage.name, chosen, paths.export)
    export_checkpoint(chosen, paths.export, dtype=cfg.export_dtype, overwrite=True, verify=True)
    meta = read_meta(chosen)
    record = {"stage": stage.name, "export": str(paths.export), "checkpoint": str(chosen), "step": meta["step"],
              "metrics": meta.get("metrics", {})}
    tmp = paths.done.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.rename(paths.done)
    return record


def stage_is_done(cfg: CurriculumConfig, stage: StageConfig) -> bool:
    paths = stage_paths(cfg, stage)
    return paths.done.is_file() and (paths.export / "config.json").is_file()


def run_curriculum(cfg: CurriculumConfig, base_dir: Path, extra_overrides: list[str] = ()) -> int:
    total = len(cfg.stages)
    for index, stage in enumerate(cfg.stages):
        label = f"stage {index + 1}/{total} '{stage.name}'"
        if stage_is_done(cfg, stage):
            log.info("%s: already finished (export %s), skipping", label, stage_paths(cfg, stage).export)
            continue
        train = stage_config(cfg, index, base_dir, list(extra_overrides))
        log.info("%s: training %s from %s", label, stage.config, train.policy.model_name)
        try:
            run_grpo(train)
        except GuardStop as stop:  # the stage is not finished: no export, and later stages do not start
            stop.context = f"{label} (not exported; the curriculum stops here) "
            raise
        record = finish_stage(cfg, stage, train)
        log.info("%s: done at step %d, exported to %s", label, record["step"], record["export"])
    final = stage_paths(cfg, cfg.stages[-1]).export
    log.info("curriculum finished: final model in %s", final)
    return 0
