"""The config grammar: inheritance, overrides, interpolation, and the errors users see."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nemo_grpo.config import ConfigError, save_config, to_yaml
from nemo_grpo.config.loader import read_yaml_chain
from nemo_grpo.trainer.config import TrainConfig, load_train_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def chain(tmp_path):
    """base <- mid (in a subfolder) <- leaf, each naming its parent relative to itself."""
    write(tmp_path / "base.yaml", """
        policy:
          model_name: base-model
          optimizer: {lr: 1.0e-6, betas: [0.9, 0.999]}
        generation: {stop_strings: ["a", "b", "c"]}
        grpo: {num_prompts_per_step: 128, num_generations_per_prompt: 8}
    """)
    write(tmp_path / "sub" / "mid.yaml", """
        defaults: ../base.yaml
        policy: {optimizer: {lr: 2.0e-6}}
        generation: {stop_strings: ["x"]}
    """)
    return write(tmp_path / "sub" / "leaf.yaml", """
        defaults: mid.yaml
        grpo: {num_prompts_per_step: 16}
    """)


def test_inheritance_child_wins_maps_merge_lists_replace(chain):
    cfg = load_train_config(chain)
    assert cfg.grpo.num_prompts_per_step == 16  # leaf
    assert cfg.grpo.num_generations_per_prompt == 8  # base, untouched by leaf
    assert cfg.policy.optimizer.lr == 2e-6  # mid over base
    assert cfg.policy.optimizer.betas == [0.9, 0.999]  # sibling key kept by the deep merge
    assert cfg.generation.stop_strings == ["x"]  # list replaced whole, not merged
    assert cfg.policy.model_name == "base-model"


def test_defaults_list_merges_left_to_right(tmp_path):
    write(tmp_path / "a.yaml", "grpo: {seed: 1, max_num_steps: 5}\n")
    write(tmp_path / "b.yaml", "grpo: {seed: 2}\n")
    leaf = write(tmp_path / "c.yaml", "defaults: [a.yaml, b.yaml]\npolicy: {model_name: m}\n")
    cfg = load_train_config(leaf)
    assert (cfg.grpo.seed, cfg.grpo.max_num_steps) == (2, 5)


def test_inheritance_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "defaults: b.yaml\n")
    write(tmp_path / "b.yaml", "defaults: a.yaml\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        read_yaml_chain(tmp_path / "a.yaml")


def test_missing_parent_names_the_file(tmp_path):
    leaf = write(tmp_path / "leaf.yaml", "defaults: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_train_config(leaf)


def test_overrides_are_parsed_as_yaml(chain):
    cfg = load_train_config(
        chain,
        ["grpo.seed=7", "policy.optimizer.lr=3e-5", "policy.max_grad_norm=null", "generation.stop_strings=[q, r]",
         "policy.activation_checkpointing=true", "logger.log_dir=some/dir"],
    )
    assert cfg.grpo.seed == 7
    assert cfg.policy.optimizer.lr == 3e-5
    assert cfg.policy.max_grad_norm is None
    assert cfg.generation.stop_strings == ["q", "r"]
    assert cfg.policy.activation_checkpointing is True
    assert cfg.logger.log_dir == "some/dir"


def test_override_of_a_key_only_in_the_schema_is_allowed(chain):
    # `policy.cpu_offload` is not in any of the files, but the schema has it.
    assert load_train_config(chain, ["policy.cpu_offload=true"]).policy.cpu_offload is True


def test_misspelled_override_names_key_and_suggests(chain):
    with pytest.raises(ConfigError) as err:
        load_train_config(chain, ["grpo.num_prompts_per_stp=4"])
    msg = str(err.value)
    assert "grpo.num_prompts_per_stp" in msg and "did you mean 'grpo.num_prompts_per_step'" in msg
    assert "\n" not in msg


def test_plus_plus_adds_keys_to_free_form_sections(chain):
    cfg = load_train_config(chain, ["++generation.vllm.extra_kwargs.swap_space=4"])
    assert cfg.generation.vllm.extra_kwargs == {"swap_space": 4}


def test_plus_plus_cannot_smuggle_unknown_keys_past_the_schema(chain):
    with pytest.raises(ConfigError, match="unknown config key 'grpo.not_a_key'"):
        load_train_config(chain, ["++grpo.not_a_key=1"])


def test_malformed_override(chain):
    with pytest.raises(ConfigError, match="not of the form"):
        load_train_config(chain, ["grpo.seed"])


def test_interpolation_and_mul_resolver(tmp_path):
    leaf = write(tmp_path / "c.yaml", """
        policy:
          model_name: m
          max_total_sequence_length: 1024
          train_global_batch_size: ${mul:${grpo.num_prompts_per_step},${grpo.num_generations_per_prompt}}
        grpo: {num_prompts_per_step: 4, num_generations_per_prompt: 8}
        generation: {max_new_tokens: "${policy.max_total_sequence_length}"}
    """)
    cfg = load_train_config(leaf, ["policy.max_total_sequence_length=2048"])
    assert cfg.policy.train_global_batch_size == 32
    assert cfg.generation.max_new_tokens == 2048  # the override flows through the reference


def test_interpolation_of_a_missing_key_is_a_clear_error(tmp_path):
    leaf = write(tmp_path / "c.yaml", "policy: {model_name: '${nothing.here}'}\n")
    with pytest.raises(ConfigError, match="interpolation failed"):
        load_train_config(leaf)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("grpo.seed=abc", "config key 'grpo.seed' must be int, got 'abc'"),
        ("policy.precision=bf16", "did you mean 'bfloat16'"),
        ("generation.top_p=1.5", "generation.top_p: must be in (0, 1]"),
        ("policy.train_micro_batch_size=3", "not a multiple of train_micro_batch_size 3"),
        ("data.validation=[{repeat: 2}]", "missing required config key 'data.validation[0].name'"),
        ("data.validation=[{name: aime24, repeat: 0}]", "data.validation[0].repeat: must be at least 1"),
        ("policy.optimizer.betas=[0.9]", "optimizer.betas"),
    ],
)
def test_type_and_rule_errors_name_the_key(chain, override, expected):
    with pytest.raises(ConfigError) as err:
        load_train_config(chain, [override])
    assert expected in str(err.value)


def test_unknown_key_in_a_file_suggests_the_closest(tmp_path):
    leaf = write(tmp_path / "c.yaml", "policy: {model_name: m, max_grad_nrom: 1.0}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'policy.max_grad_nrom' \(did you mean 'policy.max_grad_norm'\?\)"):
        load_train_config(leaf)


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"missing required config key 'policy.model_name' \(str\)"):
        load_train_config(None, [])


def test_exponent_floats_in_yaml_are_floats(tmp_path):
    leaf = write(tmp_path / "c.yaml", "policy: {model_name: m, optimizer: {lr: 2e-6}}\n")
    assert load_train_config(leaf).policy.optimizer.lr == 2e-6


def test_saved_config_round_trips(chain, tmp_path):
    cfg = load_train_config(chain, ["grpo.seed=11"])
    path = save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_train_config(path)
    assert to_yaml(again) == to_yaml(cfg)
    assert isinstance(again, TrainConfig)


def test_a_step_that_does_not_fill_whole_minibatches_is_refused_at_load(chain):
    """Found when the recipe loads, not after the first generation (setup used to round it down)."""
    with pytest.raises(ConfigError, match=r"4 x 8 = 32 responses, not a multiple of train_global_batch_size=64"):
        load_train_config(chain, ["grpo.num_prompts_per_step=4"])
    assert load_train_config(chain, ["grpo.num_prompts_per_step=4", "policy.train_global_batch_size=16"])


def test_zero_epochs_is_refused_at_load(chain):
    with pytest.raises(ConfigError, match="grpo.max_num_epochs: must be at least 1"):
        load_train_config(chain, ["grpo.max_num_epochs=0"])
