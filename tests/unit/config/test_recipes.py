"""Every recipe in configs/ loads and validates; the DeepScaleR stages inherit as documented."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nemo_grpo.trainer.config import TrainConfig, load_train_config
from tests.conftest import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
TRAIN_RECIPES = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("curriculum-"))


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=lambda p: p.name)
def test_train_recipe_loads(path):
    assert isinstance(load_train_config(path, []), TrainConfig)


def test_deepscaler_24k_merges_all_three_stages():
    cfg = load_train_config(CONFIGS / "grpo-deepscaler-1.5b-24K.yaml")
    assert cfg.policy.optimizer.lr == 5e-7  # 24K
    assert cfg.policy.max_total_sequence_length == 24576  # 24K
    assert cfg.generation.vllm.gpu_memory_utilization == 0.8  # 24K
    assert cfg.policy.activation_checkpointing and not cfg.policy.cpu_offload  # 24K: measured 47.7 GiB on one GPU
    assert (cfg.grpo.num_prompts_per_step, cfg.grpo.num_generations_per_prompt) == (128, 8)  # 8K
    assert cfg.policy.train_global_batch_size == 64 and cfg.policy.train_micro_batch_size == 1  # 8K
    assert cfg.generation.max_new_tokens == 24576  # 8K's interpolation, resolved with 24K's length
    assert cfg.data.validation[0].name == "aime24" and cfg.data.validation[0].num_samples == 16
    assert (cfg.loss.clip_low, cfg.loss.clip_high) == (0.2, 0.28)  # 8K's lower, 16K's upper clip
    assert cfg.loss.kl_coef == 1e-4  # 24K
    assert cfg.advantage.leave_one_out and cfg.advantage.normalize_std  # 8K


def test_deepscaler_16k_over_8k():
    eight = load_train_config(CONFIGS / "grpo-deepscaler-1.5b-8K.yaml")
    sixteen = load_train_config(CONFIGS / "grpo-deepscaler-1.5b-16K.yaml")
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


def _flat(cfg) -> dict:
    from dataclasses import asdict

    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = value

    walk("", asdict(cfg))
    return out


def test_r1distill_baseline_has_the_users_values():
    cfg = load_train_config(CONFIGS / "grpo-r1distill-1.5b-baseline.yaml")
    assert (cfg.grpo.num_prompts_per_step, cfg.grpo.num_generations_per_prompt, cfg.grpo.ppo_epochs) == (64, 16, 3)
    assert cfg.generation.temperature == 1.0 and cfg.data.validation[0].temperature == 0.6
    assert cfg.policy.optimizer.lr == 1e-6 and cfg.policy.scheduler.warmup_steps == 10
    assert cfg.policy.train_micro_batch_size == 8 and cfg.cluster.gpus_per_node == 4
    assert cfg.data.prompt.max_prompt_length == 2048 and cfg.generation.max_new_tokens == 4096
    assert (cfg.loss.kl_type, cfg.loss.kl_coef, cfg.loss.clip_low, cfg.loss.clip_high) == ("low_var_kl", 0.001, 0.2, 0.2)
    assert cfg.loss.entropy_coef == 0.0 and cfg.loss.aggregation == "token-mean"
    assert cfg.checkpointing.save_period == 10 and not cfg.loss.archer.enabled


def test_r1distill_archer_differs_from_baseline_only_in_the_archer_switch():
    base = _flat(load_train_config(CONFIGS / "grpo-r1distill-1.5b-baseline.yaml"))
    archer = _flat(load_train_config(CONFIGS / "grpo-r1distill-1.5b-archer.yaml"))
    differ = {k for k in base if base[k] != archer[k]}
    # The KL coefficient moves into the Archer section (same value, low-entropy tokens only);
    # the run folders differ so the two runs never share checkpoints.
    assert differ == {"loss.archer.enabled", "loss.kl_coef", "checkpointing.checkpoint_dir", "logger.log_dir"}
    assert archer["loss.archer.low_entropy_kl_coef"] == base["loss.kl_coef"] == 0.001


R1ZERO = sorted(CONFIGS.glob("grpo-qwen2.5-math-1.5b-r1zero*.yaml"))


@pytest.mark.parametrize("path", R1ZERO, ids=lambda p: p.name)
def test_qwen_math_r1zero_recipes(path):
    cfg = load_train_config(path)
    assert cfg.policy.model_name == "Qwen/Qwen2.5-Math-1.5B" and cfg.data.train.name == "math"
    assert cfg.data.prompt.template == "r1_zero" and cfg.reward.answer_format == "answer_tag"
    assert 100 <= cfg.grpo.max_num_steps <= 200 and cfg.policy.optimizer.lr == 1e-5
    rollouts = cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt
    assert 64 <= rollouts <= 256 and cfg.grpo.num_generations_per_prompt == 8
    assert 64 <= cfg.policy.train_global_batch_size <= 256 and cfg.policy.train_micro_batch_size == 2
    assert cfg.grpo.ppo_epochs == 1 and cfg.policy.max_grad_norm == 1.0
    assert cfg.generation.temperature == 1.0 and cfg.generation.max_new_tokens == 2048
    assert cfg.grpo.val_period == 10


def test_qwen_math_r1zero_variants_change_one_thing_each():
    base = load_train_config(CONFIGS / "grpo-qwen2.5-math-1.5b-r1zero.yaml")
    assert (base.loss.name, base.loss.aggregation, base.advantage.std_enabled()) == (
        "reinforce_with_baseline", "seq-mean-token-mean", True)
    variant = {p.stem.split("r1zero-")[1]: load_train_config(p) for p in R1ZERO if "r1zero-" in p.name}
    assert variant["no-baseline"].loss.name == "no_baseline" and variant["no-baseline"].advantage.estimator == "raw"
    assert variant["grpo-clip"].loss.name == "grpo_clip"
    assert variant["const-norm"].loss.aggregation == "seq-mean-token-sum-norm"
    assert variant["const-norm"].loss.norm_constant == 2048
    assert not variant["no-std"].advantage.std_enabled()


def test_qwen3_entropy_and_kl():
    cfg = load_train_config(CONFIGS / "grpo-qwen3-0.6b-math.yaml")
    assert cfg.policy.model_name == "Qwen/Qwen3-0.6B"
    assert (cfg.loss.entropy_coef, cfg.loss.kl_coef) == (0.01, 0.05)


def test_rules_across_algorithm_sections_are_checked_at_load():
    from nemo_grpo.config import ConfigError

    with pytest.raises(ConfigError, match="no_baseline uses the raw reward"):
        load_train_config(CONFIGS / "grpo-qwen2.5-math-1.5b-r1zero.yaml", ["loss.name=no_baseline"])
