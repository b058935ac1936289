"""The one checkpoint whose policy shards are still being written in the background.

The policy ranks stage their state and write it in the background (`checkpoint/background.py`);
the driver has written its own files into `tmp_step_<N>/` already. A `SaveInFlight` finishes the
checkpoint from a thread of the driver, off the loop: it asks the ranks (without blocking them)
until every one has written its shards, then `CheckpointManager.finish` hashes every file into
the manifest, writes meta.json and renames `tmp_step_<N>` to `step_<N>` (and prunes). Until that
rename the checkpoint is a `tmp_step_<N>` folder, which is never loaded: a crash or kill meanwhile
leaves the previous checkpoint the resume point.

The loop calls `wait` where it must (the next save, the last step, a stop, a preemption): it blocks
until the checkpoint is complete and raises what went wrong, in the background or in finishing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

POLL_S = 0.2


class SaveInFlight:
    def __init__(self, finish: Callable[[Path, int, dict[str, Any]], Path], step: int, tmp: Path,
                 meta: dict[str, Any], ranks_done: Callable[[], bool], *, poll_s: float = POLL_S):
        """`finish(tmp, step, meta)` completes the folder (manifest, meta.json, rename) and returns it;
        `ranks_done()` is True once every rank has written its shards (and raises a rank's error)."""
        self.step, self.tmp, self.meta = step, Path(tmp), meta
        self._finish, self._ranks_done, self._poll_s = finish, ranks_done, poll_s
        self.final: Path | None = None  # step_<N>, once complete
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"checkpoint-finish-{step}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self._ranks_done():
                time.sleep(self._poll_s)
            self.final = self._finish(self.tmp, self.step, self.meta)
        except BaseException as exc:  # reported by `wait`, in the loop's thread
            self.error = exc

    @property
    def complete(self) -> bool:
        return self.final is not None

    def wait(self) -> Path:
        """Block until the checkpoint is complete: its folder, or the error that stopped it."""
        while self.thread.is_alive():
            self.thread.join(0.1)  # short joins: a signal's handler runs in between
        if self.error is not None:
            raise self.error
        assert self.final is not None
        return self.final
