"""Every config key is documented; the README and CI run the same test command."""

from __future__ import annotations

import re

from nemo_grpo.config.validate import leaf_keys
from nemo_grpo.evals.config import EvalConfig
from nemo_grpo.trainer.config import CurriculumConfig, TrainConfig
from tests.conftest import REPO_ROOT

OWN_SECTIONS = ("grpo", "policy", "generation", "data", "logger", "checkpointing", "cluster")


def test_every_foundation_key_is_in_docs_config_md():
    text = (REPO_ROOT / "docs" / "config.md").read_text()
    keys = [k for k in leaf_keys(TrainConfig) if k.split(".")[0] in OWN_SECTIONS]
    keys += [k for k in leaf_keys(EvalConfig) if k.split(".")[0] != "reward"]  # reward: docs/grader.md
    keys += leaf_keys(CurriculumConfig)
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing, f"undocumented config keys: {missing}"


def _readme_test_command() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"^(uv run [^\n]*pytest[^\n]*)$", text, re.M)
    assert match, "README has no `uv run ... pytest` line"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert _readme_test_command() in ci.splitlines()
