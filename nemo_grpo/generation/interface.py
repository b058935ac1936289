"""The one generation interface every backend implements (HF `generate`, vLLM).

A backend samples `n` responses for each prompt (given as token ids) and returns, per response,
the token ids, the log-probability of each sampled token under the temperature-scaled
distribution (what the trainer's loss compares against), and why it stopped.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    max_new_tokens: int = 256
    stop_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    seed: int = 0  # base seed; backends derive a distinct stream per prompt and sample
    # The index of prompts[0] in the whole request. Seeds follow the whole request's prompt index,
    # so splitting a request over several engines does not change what is sampled.
    prompt_offset: int = 0


def request_seed(base_seed: int, prompt_index: int, sample_index: int) -> int:
    """A distinct, reproducible sampling seed per (base seed, prompt of the whole request, sample)."""
    return zlib.crc32(f"{base_seed}:{prompt_index}:{sample_index}".encode()) & 0x7FFFFFFF


# Weights for a refit: consecutive chunks of (HF parameter name, full tensor), each chunk bounded in bytes.
WeightChunks = Iterable[list[tuple[str, torch.Tensor]]]


def chunk_pairs(pairs: Iterable[tuple[str, torch.Tensor]], chunk_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Consecutive groups of (name, tensor) pairs of at most `chunk_bytes` each (a bigger tensor
    goes alone). Lazy: a pair is drawn only when the previous chunk has been handed on."""
    chunk: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in pairs:
        nbytes = tensor.numel() * tensor.element_size()
        if chunk and size + nbytes > chunk_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append((name, tensor))
        size += nbytes
    if chunk:
        yield chunk


@dataclass
class Rollout:
    prompt_index: int  # which prompt of the request this response answers
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]  # one per response token, temperature-scaled, from the engine
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (cut at max_new_tokens)
    text: str = ""

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class GenerationStats:
    backend: str = ""
    num_tokens: int = 0
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class GenerationBackend(Protocol):
    name: str
    version: int | None  # the `version` of the weights last loaded (None: as started)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Rollout]:
        """Responses ordered prompt by prompt: all n of prompt 0, then all n of prompt 1, ..."""
        ...

    def update_weights(self, state_dict: dict[str, torch.Tensor], *, version: int | None = None) -> float:
        """Load new policy weights (full, unsharded tensors keyed by HF parameter names); nothing to do
        when `version` equals the one already loaded. Returns the seconds spent."""
        ...

    def load_weight_chunks(self, chunks: WeightChunks, *, version: int | None = None) -> float:
        """`update_weights` from a stream of chunks, each loaded as it arrives (the caller gathers
        the next one meanwhile, so no full copy of the weights is ever held). The caller checks
        `version` first: the stream is consumed whole."""
        ...

    def sleep(self) -> None:
        """Release device memory (weights, KV cache) while the policy trains; a no-op where nothing
        is to be gained (CPU, HF generate)."""
        ...

    def wake_up(self) -> None:
        """Take back what `sleep` released; `generate` and `update_weights` call it themselves."""
        ...

    def shutdown(self) -> None: ...


# What the loop, validation and evaluation call to sample: a backend's `generate`, or a call to an engine actor.
GenerateFn = Callable[[list[list[int]], SamplingParams], list[Rollout]]
