"""Every recipe in configs/ loads and validates; the DeepScaleR stages inherit as documented."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nemo_grpo.config import load_config
from nemo_grpo.config.schema import TrainConfig
from tests.conftest import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
TRAIN_RECIPES = sorted(p for p in CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=lambda p: p.name)
def test_train_recipe_loads(path):
    assert isinstance(load_config(path, [], TrainConfig), TrainConfig)


def test_deepscaler_24k_merges_all_three_stages():
    cfg = load_config(CONFIGS / "grpo-deepscaler-1.5b-24K.yaml")
    assert cfg.policy.optimizer.lr == 5e-7  # 24K
    assert cfg.policy.max_total_sequence_length == 24576  # 24K
    assert cfg.generation.vllm.gpu_memory_utilization == 0.8  # 24K
    assert cfg.policy.activation_checkpointing and cfg.policy.cpu_offload  # 24K
    assert (cfg.grpo.num_prompts_per_step, cfg.grpo.num_generations_per_prompt) == (128, 8)  # 8K
    assert cfg.policy.train_global_batch_size == 64 and cfg.policy.train_micro_batch_size == 1  # 8K
    assert cfg.generation.max_new_tokens == 24576  # 8K's interpolation, resolved with 24K's length
    assert cfg.data.validation[0].name == "aime24" and cfg.data.validation[0].num_samples == 16
    assert (cfg.loss.clip_low, cfg.loss.clip_high) == (0.2, 0.28)  # 8K's lower, 16K's upper clip
    assert cfg.loss.kl_coef == 1e-4  # 24K
    assert cfg.advantage.leave_one_out and cfg.advantage.normalize_std  # 8K


def test_deepscaler_16k_over_8k():
    eight = load_config(CONFIGS / "grpo-deepscaler-1.5b-8K.yaml")
    sixteen = load_config(CONFIGS / "grpo-deepscaler-1.5b-16K.yaml")
    assert (eight.loss.kl_coef, eight.loss.clip_high, eight.policy.optimizer.lr) == (0.0, 0.2, 2e-6)
    assert (sixteen.loss.kl_coef, sixteen.loss.clip_high, sixteen.policy.max_total_sequence_length) == (0.001, 0.28, 16384)
    assert eight.loss.aggregation == "token-mean" and eight.policy.train_global_batch_size == 64


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "run_grpo_math.py"), *args],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )


def test_cli_help():
    out = run_script("--help")
    assert out.returncode == 0 and "--print-config" in out.stdout and "++a.b=c" in out.stdout


def test_cli_print_config_shows_merged_values():
    out = run_script("--config=configs/grpo-deepscaler-1.5b-24K.yaml", "--print-config")
    assert out.returncode == 0, out.stderr
    cfg = __import__("yaml").safe_load(out.stdout)
    assert cfg["policy"]["optimizer"]["lr"] == 5e-7
    assert cfg["grpo"]["num_prompts_per_step"] == 128 and cfg["grpo"]["num_generations_per_prompt"] == 8


def test_cli_misspelled_key_is_one_line_without_traceback():
    out = run_script("--config=configs/grpo-deepscaler-1.5b-24K.yaml", "grpo.num_prompts_per_stp=4", "--print-config")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "grpo.num_prompts_per_stp" in lines[0] and "num_prompts_per_step" in lines[0]
    assert "Traceback" not in out.stderr
