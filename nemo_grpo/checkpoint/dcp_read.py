"""Reading a DCP folder into whole tensors in one process, with no process group.

A checkpoint's `policy/weights` holds the shards every FSDP rank wrote. Its `.metadata` file
lists each tensor's full shape and dtype, so we allocate the full tensors and let
`torch.distributed.checkpoint.load` (in its single-process mode) copy every shard into place.
Only the requested keys are read from disk, so a caller can load a large model a group at a time.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata


class NotADcpCheckpoint(FileNotFoundError):
    """A folder that is not a DCP checkpoint; the message says which folder to pass instead."""


def dcp_tensor_specs(weights_dir: str | Path) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Name -> (full shape, dtype) of every tensor in a DCP folder, read from its metadata only."""
    path = Path(weights_dir)
    if not path.is_dir():
        raise NotADcpCheckpoint(f"{path}: no such folder (pass a checkpoint's policy/weights folder)")
    if not (path / ".metadata").is_file():
        raise NotADcpCheckpoint(
            f"{path} is not a DCP checkpoint (no .metadata file): pass the policy/weights folder of a step_N checkpoint"
        )
    metadata = dcp.FileSystemReader(str(path)).read_metadata()
    return {
        name: (item.size, item.properties.dtype)
        for name, item in metadata.state_dict_metadata.items()
        if isinstance(item, TensorStorageMetadata)
    }


def load_dcp_state_dict(weights_dir: str | Path, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The full CPU tensors of a DCP folder (all of them, or only `keys`), in their saved dtype."""
    specs = dcp_tensor_specs(weights_dir)
    wanted = list(specs) if keys is None else list(keys)
    unknown = [k for k in wanted if k not in specs]
    if unknown:
        raise KeyError(f"{weights_dir}: no tensor named {', '.join(unknown[:5])} in this checkpoint")
    state_dict = {k: torch.empty(specs[k][0], dtype=specs[k][1]) for k in wanted}
    if not state_dict:
        return state_dict
    with warnings.catch_warnings():  # single-process loading is what we mean; torch warns about it anyway
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
        dcp.load(state_dict, storage_reader=dcp.FileSystemReader(str(weights_dir)), no_dist=True)
    return state_dict
