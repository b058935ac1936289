"""One policy rank's DCP writes off the training loop (`checkpointing.async_save`).

`start` blocks only while the model and optimizer state is copied ("staged") into host memory
that the rank keeps for the whole run: one copy of this rank's shards of model + optimizer, in
shared memory (`process`: the writer process maps it without another copy) and pinned on CUDA.
The DCP files are then written by `torch.distributed.checkpoint.async_save` from one background
thread, the folders one after the other:

- `process`: torch's process-based writer (the variant torchtitan uses): a daemon process per rank,
  spawned at the first save (it imports torch: a few seconds and a few hundred MB), with its own
  gloo group; the writing never holds the training process's GIL.
- `thread`: the write runs in that thread of the rank's own process (DCP's planning collectives
  on a gloo group of their own, never the training group).

At most one save is in flight: `start` waits for the previous one first (the staging buffers are
reused). `done` (without blocking) and `wait` report the write's error once, where it is asked.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.staging import AsyncStager, DefaultStager, StagingOptions
from torch.distributed.checkpoint.state_dict_saver import AsyncCheckpointerType


class _AlreadyStaged(AsyncStager):
    """The state dict handed to async_save is the staged copy already: no second copy."""

    _synchronize_after_execute = False

    def stage(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        return state_dict


class BackgroundWriter:
    def __init__(self, mode: str, *, pinned: bool = False):
        if mode not in ("process", "thread"):
            raise ValueError(f"checkpointing.async_save: {mode!r} has no background writer (process or thread)")
        self.mode = mode
        # A collective of every rank (the first background save is one): DCP's own group, so its
        # collectives in the background never interleave with the training's on the default group.
        self.group = dist.new_group(backend="gloo") if dist.is_initialized() else None
        self.stager = DefaultStager(StagingOptions(use_pinned_memory=pinned, use_shared_memory=mode == "process",
                                                   use_async_staging=False, use_non_blocking_copy=False))
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self.future: Future | None = None

    def start(self, writes: list[tuple[dict[str, Any], str]],
              before_each: Callable[[int, str], None] | None = None) -> None:
        """Stage every (state dict, DCP folder) of `writes` now, write them in the background in order.
        `before_each(index, folder)` runs in the background before each folder (tests inject faults there)."""
        self.wait()
        staged = [(self.stager.stage(state), folder) for state, folder in writes]
        self.future = self.pool.submit(self._write, staged, before_each)

    def _write(self, staged: list[tuple[dict[str, Any], str]], before_each) -> None:
        kind = AsyncCheckpointerType.PROCESS if self.mode == "process" else AsyncCheckpointerType.THREAD
        for index, (state, folder) in enumerate(staged):
            if before_each is not None:
                before_each(index, folder)
            dcp.async_save(state, checkpoint_id=folder, process_group=self.group, async_checkpointer_type=kind,
                           async_stager=_AlreadyStaged()).result()

    def done(self) -> bool:
        """Whether no write is running; raises the error of one that failed (once)."""
        if self.future is not None and not self.future.done():
            return False
        self.wait()
        return True

    def wait(self) -> None:
        """Block until the write in flight is on disk; raises its error (once)."""
        future, self.future = self.future, None
        if future is not None:
            future.result()

    def close(self) -> None:
        """Let the write in flight end, then free the staging memory (the writer process, if any,
        ends with this process)."""
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)
            self.stager.close()

