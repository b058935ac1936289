"""How a curriculum turns into stage configs, and which checkpoint a finished stage exports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from nemo_grpo.config import ConfigError, load_config
from nemo_grpo.trainer.config import CurriculumConfig, load_train_config
from nemo_grpo.trainer.curriculum import pick_checkpoint, stage_config
from tests.conftest import REPO_ROOT

CURRICULUM = REPO_ROOT / "configs" / "curriculum-deepscaler-1.5b.yaml"


def test_deepscaler_curriculum_chains_the_three_recipes():
    cfg = load_config(CURRICULUM, ["output_dir=/runs/c"], CurriculumConfig)
    stages = [stage_config(cfg, i, CURRICULUM.parent) for i in range(3)]
    assert [s.policy.max_total_sequence_length for s in stages] == [8192, 16384, 24576]
    assert stages[0].policy.model_name == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    assert stages[1].policy.model_name == "/runs/c/8K/hf" and stages[2].policy.model_name == "/runs/c/16K/hf"
    assert [s.checkpointing.checkpoint_dir for s in stages] == [f"/runs/c/{n}/checkpoints" for n in ("8K", "16K", "24K")]
    assert stages[2].logger.log_dir == "/runs/c/24K/logs"
    assert stages[2].policy.optimizer.lr == 5e-7 and stages[1].loss.kl_coef == 0.001  # the recipes' own values


def test_overrides_apply_to_every_stage_and_stage_overrides_win():
    cfg = load_config(CURRICULUM, ["overrides=[grpo.max_num_steps=7, cluster.gpus_per_node=4]"], CurriculumConfig)
    cfg.stages[1].overrides = ["grpo.max_num_steps=3"]
    stages = [stage_config(cfg, i, CURRICULUM.parent) for i in range(3)]
    assert [s.grpo.max_num_steps for s in stages] == [7, 3, 7]
    assert all(s.cluster.gpus_per_node == 4 for s in stages)


def test_bad_curricula_are_refused_with_a_clear_message(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("stages: [{name: a, config: nowhere.yaml}]\n")
    cfg = load_config(bad, [], CurriculumConfig)
    with pytest.raises(ConfigError, match="recipe file 'nowhere.yaml' not found"):
        stage_config(cfg, 0, tmp_path)
    bad.write_text("stages: []\n")
    with pytest.raises(ConfigError, match="at least one stage"):
        load_config(bad, [], CurriculumConfig)
    bad.write_text(f"stages: [{{name: a, config: {CURRICULUM.parent / 'grpo-deepscaler-1.5b-8K.yaml'}}}]\n")
    cfg = load_config(bad, ["overrides=[checkpointing.enabled=false]"], CurriculumConfig)
    with pytest.raises(ConfigError, match="must save checkpoints"):
        stage_config(cfg, 0, tmp_path)


def _fake_checkpoints(root: Path, scores: dict[int, float]) -> None:
    for step, score in scores.items():
        (root / f"step_{step}").mkdir(parents=True)
        (root / f"step_{step}" / "meta.json").write_text(json.dumps({"step": step, "metrics": {"val/x/avg@4": score}}))


def test_export_picks_final_or_best(tmp_path):
    _fake_checkpoints(tmp_path / "ck", {10: 0.3, 20: 0.5, 30: 0.4})
    train = load_train_config(REPO_ROOT / "configs" / "grpo-deepscaler-1.5b-8K.yaml",
                        [f"checkpointing.checkpoint_dir={tmp_path / 'ck'}"])
    train.checkpointing.metric_name = "val/x/avg@4"
    assert pick_checkpoint(train, "final").name == "step_30"
    assert pick_checkpoint(train, "best").name == "step_20"
    train.checkpointing.higher_is_better = False
    assert pick_checkpoint(train, "best").name == "step_10"


def test_command_line_splits_curriculum_keys_from_stage_keys():
    sys.path.insert(0, str(REPO_ROOT / "examples"))
    try:
        from run_curriculum import split_overrides
    finally:
        sys.path.pop(0)
    kept, stage = split_overrides(["--config=x.yaml", "output_dir=/r", "cluster.gpus_per_node=4", "++a.b=1", "--print-config"])
    assert kept == ["--config=x.yaml", "output_dir=/r", "--print-config"]
    assert stage == ["cluster.gpus_per_node=4", "++a.b=1"]


def test_a_guard_stop_in_a_stage_names_the_stage_and_exports_nothing(tmp_path, monkeypatch):
    """run_grpo returns nothing; a collapse guard ends a stage by raising GuardStop (the fault is
    injected here): the curriculum passes it on with the stage named, does not export the stage and
    starts no later stage."""
    import nemo_grpo.trainer.curriculum as curriculum
    from nemo_grpo.logging.guards import Firing, GuardRule, GuardStop

    started = []

    def stopped_run(train):
        started.append(train.logger.log_dir)
        raise GuardStop(Firing(GuardRule(metric="train/entropy", op="<", value=0.1), 5, 0.01, "entropy 0.01 < 0.1"))

    monkeypatch.setattr(curriculum, "run_grpo", stopped_run)
    cfg = load_config(CURRICULUM, [f"output_dir={tmp_path}"], CurriculumConfig)
    with pytest.raises(GuardStop) as stop:
        curriculum.run_curriculum(cfg, CURRICULUM.parent)
    assert str(stop.value).startswith("stage 1/3 '8K' (not exported; the curriculum stops here) stopped by guard")
    assert started == [f"{tmp_path}/8K/logs"]
    assert not (tmp_path / "8K" / "stage_done.json").exists() and not (tmp_path / "8K" / "hf").exists()
