"""The `generation:` section: which engine samples the responses, and how."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from nemo_grpo.models.precision import Precision


@dataclass
class VllmConfig:
    gpu_memory_utilization: float = 0.6
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    max_model_len: int | None = None
    kv_cache_memory_bytes: int | None = None
    compilation_config: dict[str, Any] = field(default_factory=dict)
    extra_kwargs: dict[str, Any] = field(default_factory=dict)
    # null: in the caller's process on CPU (starts in seconds), an engine process on GPU.
    in_process: bool | None = None
    # Refit sends the weights in chunks of at most this many MiB (bounds the staging memory).
    refit_chunk_mb: int = 256

    def validate(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("vllm.gpu_memory_utilization: must be in (0, 1]")
        if self.refit_chunk_mb < 1:
            raise ValueError(f"vllm.refit_chunk_mb: must be at least 1, got {self.refit_chunk_mb}")


@dataclass
class GenerationConfig:
    backend: Literal["auto", "vllm", "hf"] = "auto"
    model_name: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    max_new_tokens: int | None = None
    stop_strings: list[str] = field(default_factory=list)
    # The engine's weights and KV cache. null: the policy's precision on GPU, float32 on CPU. bfloat16
    # on a CPU halves both (the CPU demo's engine); the trainer's log-probs stay the policy's.
    precision: Precision | None = None
    # Every policy rank samples with its own engine on its own device (false is refused).
    colocated: bool = True
    vllm: VllmConfig = field(default_factory=VllmConfig)

    def validate(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError("max_new_tokens: must be at least 1 (or null for the model limit)")
