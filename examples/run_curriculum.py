"""Run a staged curriculum: each stage trains from the previous stage's Hugging Face export.

    uv run examples/run_curriculum.py --config=configs/curriculum-deepscaler-1.5b.yaml
    uv run examples/run_curriculum.py --config=... output_dir=results/my-curriculum   # a curriculum key
    uv run examples/run_curriculum.py --config=... cluster.gpus_per_node=4           # any other key: every stage

Run the same command again after an interruption: finished stages are skipped and the
unfinished one resumes from its latest checkpoint. See nemo_grpo/trainer/curriculum.py.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

from nemo_grpo.cli import REPO_ROOT, run_cli
from nemo_grpo.trainer.config import CurriculumConfig

DEFAULT_CONFIG = str(REPO_ROOT / "configs" / "curriculum-deepscaler-1.5b.yaml")
CURRICULUM_KEYS = {f.name for f in fields(CurriculumConfig)}


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Overrides of curriculum keys stay on the command line; the rest apply to every stage."""
    kept, stage = [], []
    for arg in argv:
        key = arg.lstrip("+").split("=", 1)[0].split(".", 1)[0]
        is_override = "=" in arg and not arg.startswith("-")
        (stage if is_override and key not in CURRICULUM_KEYS else kept).append(arg)
    return kept, stage


def main(argv: list[str]) -> int:
    kept, stage_overrides = split_overrides(argv)

    def run(cfg: CurriculumConfig, args) -> int:
        from nemo_grpo.trainer.curriculum import run_curriculum

        return run_curriculum(cfg, Path(args.config).resolve().parent, stage_overrides)

    return run_cli(kept, description=__doc__, schema=CurriculumConfig, main=run, default_config=DEFAULT_CONFIG)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
