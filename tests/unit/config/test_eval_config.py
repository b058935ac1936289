"""Eval configs load and validate; validation and eval sets are checked when the config loads."""

from __future__ import annotations

import pytest

from nemo_grpo.config import ConfigError, load_config
from nemo_grpo.evals.config import EvalConfig
from nemo_grpo.trainer.config import TrainConfig
from tests.conftest import REPO_ROOT

EVAL_CONFIGS = sorted((REPO_ROOT / "configs" / "eval").glob("[!_]*.yaml"))
TINY = REPO_ROOT / "tests" / "integration" / "tiny.yaml"


def test_every_benchmark_has_an_eval_config():
    assert {p.stem for p in EVAL_CONFIGS} == {"aime24", "aime25", "amc23", "math500", "gsm8k"}


@pytest.mark.parametrize("path", EVAL_CONFIGS, ids=lambda p: p.name)
def test_eval_config_loads_with_a_model(path):
    cfg = load_config(path, ["generation.model_name=some/model"], EvalConfig)
    assert [d.name for d in cfg.data.datasets] == [path.stem]
    assert cfg.generation.max_new_tokens and cfg.output_dir.endswith(path.stem)
    assert cfg.reward.no_answer == "reader"  # evaluation reads unanchored answers, as the grading CLI does


def test_eval_settings_users_report():
    math500 = load_config(REPO_ROOT / "configs/eval/math500.yaml", ["generation.model_name=m"], EvalConfig)
    gen = math500.generation
    assert (math500.num_samples, gen.temperature, gen.top_p, gen.max_new_tokens) == (4, 0.8, 0.95, 16384)
    aime = load_config(REPO_ROOT / "configs/eval/aime24.yaml", ["generation.model_name=m"], EvalConfig)
    assert (aime.num_samples, aime.generation.temperature) == (16, 1.0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([], "generation.model_name: set the model to evaluate"),
        (["generation.model_name=m", "data.datasets=[]"], "data.datasets: list at least one set"),
        (["generation.model_name=m", "data.datasets=[{name: aime24, repeat: 4}]"],
         "data.datasets[0].repeat: scored sets are not repeated; set data.datasets[0].num_samples=4"),
        (["generation.model_name=m", "data.datasets=[{name: aime24}, {name: aime24, split: test}]"],
         "data.datasets[1].name: two sets are named 'aime24'"),
        (["generation.model_name=m", "generation.max_new_tokens=null"], "generation.max_new_tokens: set it"),
        (["generation.model_name=m", "num_samples=0"], "num_samples: must be at least 1"),
    ],
)
def test_eval_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(REPO_ROOT / "configs/eval/aime24.yaml", overrides, EvalConfig)
    assert message in str(err.value)


def tiny(*overrides: str) -> TrainConfig:
    return load_config(TINY, ["policy.model_name=m", "data.train.path=p.jsonl", *overrides], TrainConfig)


def test_validation_metric_name_must_name_a_logged_metric():
    sets = "data.validation=[{name: aime24, num_samples: 4}, {name: tiny, path: x.jsonl}]"
    cfg = tiny(sets, "grpo.val_period=2", "checkpointing.metric_name=val/aime24/pass@4")
    assert cfg.data.validation[0].num_samples == 4
    with pytest.raises(ConfigError) as err:
        tiny(sets, "grpo.val_period=2", "checkpointing.metric_name=val/aime24/accuracy")
    text = str(err.value)
    assert "checkpointing.metric_name: 'val/aime24/accuracy' names no validation metric" in text
    for name in ("val/aime24/avg@4", "val/aime24/pass@2", "val/aime24/maj@4", "val/tiny/avg@1"):
        assert name in text
    with pytest.raises(ConfigError, match="needs validation to run"):
        tiny(sets, "checkpointing.metric_name=val/aime24/avg@4")
    with pytest.raises(ConfigError, match="valid names: none: data.validation is empty"):
        tiny("checkpointing.metric_name=val/aime24/avg@4")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["grpo.val_period=5"], "data.validation: grpo.val_period / val_at_start / val_at_end ask for validation"),
        (["grpo.val_at_end=true"], "but no set is listed"),
        (["data.validation=[{name: aime24, repeat: 16}]"], "data.validation[0].num_samples=16"),
        (["data.validation=[{name: a, path: x}, {name: a, path: y}]"], "two sets are named 'a'"),
        (["data.validation=[{name: aime24, top_p: 0}]"], "data.validation[0].top_p: must be in (0, 1]"),
        (["data.train.num_samples=4"], "data.train.num_samples: sampling settings belong to validation sets"),
    ],
)
def test_validation_set_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        tiny(*overrides)
    assert message in str(err.value)
