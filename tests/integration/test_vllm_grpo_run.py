"""A few GRPO steps with the vLLM backend (Ray, FSDP2 policy on CPU, in-process vLLM-CPU):
the run completes, says it used vLLM, and the engine's log-probs track the trainer's every step."""

from __future__ import annotations

import json

import pytest

from tests.integration.tiny_run import make_tiny_model_dir, tiny_train_config
from tests.integration.vllm_helpers import needs_vllm

pytestmark = [pytest.mark.vllm, pytest.mark.integration, needs_vllm, pytest.mark.timeout(900)]

STEPS = 3


def test_grpo_run_with_vllm_backend(qwen_math_tokenizer, tmp_path):
    from nemo_grpo.trainer.loop import run_grpo

    model_dir = make_tiny_model_dir(tmp_path / "model", qwen_math_tokenizer, tied=True)
    cfg = tiny_train_config(
        model_dir, tmp_path, f"grpo.max_num_steps={STEPS}", "generation.backend=auto",  # must resolve to vLLM
        "generation.vllm.enforce_eager=true", "generation.vllm.kv_cache_memory_bytes=268435456",
        "checkpointing.enabled=false",
    )
    run_grpo(cfg)  # returns nothing; a failure raises
    rows = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == STEPS
    assert any(row["train/trained_fraction"] > 0 for row in rows), "no step trained: refit was never exercised"
    for row in rows:
        assert row["generation/backend"] == "vllm"
        assert 1.0 <= row["train/token_mult_prob_error"] < 1.001, row
        assert 0.0 <= row["train/gen_kl_error"] < 1e-3, row
