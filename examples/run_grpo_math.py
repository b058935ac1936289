"""Train a math-reasoning model with GRPO.

    uv run examples/run_grpo_math.py                                   # the small CPU demo
    uv run examples/run_grpo_math.py --config=configs/grpo-deepscaler-1.5b-8K.yaml [a.b=c ...]
    uv run examples/run_grpo_math.py --config=... --print-config       # show the resolved config
"""

from __future__ import annotations

import sys

from nemo_grpo.cli import REPO_ROOT, run_cli
from nemo_grpo.trainer.config import TrainConfig

DEFAULT_CONFIG = str(REPO_ROOT / "configs" / "grpo-smollm2-135m-arithmetic.yaml")


def main(cfg: TrainConfig, args) -> int:
    from nemo_grpo.trainer.loop import run_grpo

    run_grpo(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(sys.argv[1:], description=__doc__, schema=TrainConfig, main=main, default_config=DEFAULT_CONFIG))
