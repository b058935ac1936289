"""Bad inputs end in one clear line (a UserError: exit status 2), never a traceback."""

from __future__ import annotations

import textwrap

import pytest

from nemo_grpo.config import ConfigError
from nemo_grpo.trainer.config import load_train_config


def recipe(tmp_path, text="policy: {model_name: x}\ngrpo: {num_prompts_per_step: 4, num_generations_per_prompt: 4}\n"):
    path = tmp_path / "run.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_yaml_syntax_error_names_its_file_and_line(tmp_path):
    path = recipe(tmp_path, """
        policy:
          model_name: x
        grpo: {num_prompts_per_step: 4
        loss: {name: grpo_clip}
    """)
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:5:") and "not valid YAML" in msg and "\n" not in msg
    bad_indent = recipe(tmp_path, "policy:\n  model_name: x\n optimizer: 1\n")
    with pytest.raises(ConfigError, match=rf"^{bad_indent}:3:2: not valid YAML \("):
        load_train_config(bad_indent)


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "dr_grpo", "passk"])
def test_a_group_of_one_is_refused_at_load_when_the_advantage_needs_a_group(tmp_path, estimator):
    with pytest.raises(ConfigError, match=r"^grpo.num_generations_per_prompt: 1 response per prompt, but "
                                          rf"advantage.estimator '{estimator}' compares .* use at least 2"):
        load_train_config(recipe(tmp_path), ["grpo.num_generations_per_prompt=1", f"advantage.estimator={estimator}"])


def test_a_group_of_one_is_allowed_with_the_raw_reward(tmp_path):
    cfg = load_train_config(recipe(tmp_path), ["grpo.num_generations_per_prompt=1", "advantage.estimator=raw",
                                               "policy.train_global_batch_size=4"])
    assert cfg.grpo.num_generations_per_prompt == 1


@pytest.mark.parametrize("override, message", [
    # issue 16: a negative global batch size was reported as a problem of the micro batch size
    ("policy.train_global_batch_size=-8", r"^policy.train_global_batch_size: -8 responses per optimizer step; it must "
                                          r"be at least 1: set it to a positive multiple of policy.train_micro_batch_size"),
    ("policy.train_global_batch_size=0", r"^policy.train_global_batch_size: 0 responses per optimizer step"),
    ("policy.train_micro_batch_size=-1", r"^policy.train_micro_batch_size: -1 responses per forward and backward; it "
                                         r"must be at least 1: set it to a divisor of policy.train_global_batch_size"),
    ("policy.logprob_micro_batch_size=0", r"^policy.logprob_micro_batch_size: 0 responses .* at least 1, or null"),
    ("policy.train_micro_batch_size=3", r"^policy.train_global_batch_size: 16 is not a multiple of "
                                        r"train_micro_batch_size 3; make it one"),
])
def test_each_bad_batch_size_names_its_own_key_and_what_to_do(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_train_config(recipe(tmp_path), ["policy.train_global_batch_size=16", override])
    assert "\n" not in str(err.value)
