"""Evaluate a model on math benchmarks: pass@k, avg@n, maj@n, per-sample JSONL and a report.

    uv run examples/run_eval.py --config=configs/eval/aime24.yaml generation.model_name=<hf folder>
    uv run examples/run_eval.py --config=configs/eval/math500.yaml generation.model_name=<hf folder> num_samples=8
    uv run examples/run_eval.py --config=configs/eval/aime24.yaml --print-config

An interrupted evaluation continues where it stopped when the same command is run again.
"""

from __future__ import annotations

import sys

from nemo_grpo.cli import run_cli
from nemo_grpo.evals.config import EvalConfig


def main(cfg: EvalConfig, args) -> int:
    from nemo_grpo.evals.runner import run_evaluation

    run_evaluation(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(sys.argv[1:], description=__doc__, schema=EvalConfig, main=main))
