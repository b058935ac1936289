"""Refit on the device: the rank's FSDP2 shards, gathered chunk by chunk into its own engine.

Every rank walks the parameters in the same order; each DTensor is all-gathered (a collective, so
every rank must take part even when its engine already has these weights), cast to the engine's
dtype, and grouped into chunks of at most `chunk_bytes`. The engine loads a chunk before the next
one is gathered, so a rank never holds more than one chunk of full weights besides its shards.
Nothing leaves the rank's process: no driver, no object store.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.distributed.tensor import DTensor

from nemo_grpo.generation.interface import chunk_pairs


def full_tensor(param: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The whole tensor behind a (possibly sharded) parameter, on `device`. CPU-offloaded shards
    are moved to the device first (NCCL gathers device tensors only)."""
    data = param.data if isinstance(param, torch.nn.Parameter) else param
    if not isinstance(data, DTensor):
        return data.detach().to(device)
    if data.device_mesh.size() == 1 and data.to_local().shape == data.shape:  # one rank holds it all: no copy
        return data.to_local().detach().to(device)
    if data.device != device:
        data = DTensor.from_local(data.to_local().to(device), data.device_mesh, data.placements,
                                  shape=data.shape, stride=data.stride())
    return data.full_tensor().detach()


def weight_chunks(model: torch.nn.Module, *, dtype: torch.dtype, device: torch.device,
                  chunk_bytes: int, counter: dict[str, int] | None = None) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """(HF name, full tensor in `dtype`) chunks of at most `chunk_bytes` (a bigger tensor goes
    alone). Tied parameters come once, under their first name. `counter["bytes"]` adds up what was
    gathered."""
    counter = counter if counter is not None else {}

    def gathered() -> Iterator[tuple[str, torch.Tensor]]:
        for name, param in model.named_parameters():  # deduplicated: a tied head comes as the embedding
            tensor = full_tensor(param, device).to(dtype)
            counter["bytes"] = counter.get("bytes", 0) + tensor.numel() * tensor.element_size()
            yield name, tensor

    return chunk_pairs(gathered(), chunk_bytes)
