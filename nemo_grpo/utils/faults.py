"""Faults injected on purpose by tests: NEMO_GRPO_INJECT_FAULT=<point>:<step> ends the process
abruptly (like a crash or a kill) when the run reaches that point at that step; `no_space:<step>`
makes the policy ranks' checkpoint write of that step fail as a full disk does (OSError ENOSPC),
`no_space_driver:<step>` the driver's write of its state; `free_space:<step>:<bytes>` makes the
checkpoint folder's filesystem report that many free bytes when that step's save is estimated;
`background_write:<step>` crashes a policy rank between the weights and the optimizer shards of
that step (with `checkpointing.async_save`, in its background writer);
`stall` hangs or slows the step there (like a stuck collective or a slow generation), so that a
test can signal a run whose step is certainly still running; `slow_grade` makes a grader process
busy for a while in that step, so that a test can kill it while it grades."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

ENV = "NEMO_GRPO_INJECT_FAULT"
STALL_S = 3600.0
_grading_step: int | None = None  # the step whose responses the driver grades now (slow_grade)


def maybe_crash(point: str, step: int) -> None:
    if os.environ.get(ENV) == f"{point}:{step}":
        os._exit(17)


def maybe_no_space(step: int, path: str | Path, point: str = "no_space") -> None:
    """`no_space:<step>` (a policy rank's shard) or `no_space_driver:<step>` (the driver's own files):
    writing `path` at that step fails with "No space left on device"."""
    if os.environ.get(ENV) == f"{point}:{step}":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def injected_free_bytes(step: int) -> int | None:
    """`free_space:<step>:<bytes>`: the checkpoint folder's filesystem reports that many free bytes
    when the checkpoint of that step is estimated (a disk nearly full, which a test cannot make)."""
    point, _, rest = os.environ.get(ENV, "").partition(":")
    at, _, free = rest.partition(":")
    return int(free) if point == "free_space" and at == str(step) else None


def maybe_stall(step: int) -> None:
    """`stall:<step>` hangs at the start of that step; `stall:<step>:<seconds>` slows it by that
    long; `stall:<step>:<path>` holds it until the file `path` exists (a test releases the run when
    it has seen what it needs). A signal handler that raises still interrupts the wait."""
    point, _, rest = os.environ.get(ENV, "").partition(":")
    at, _, until = rest.partition(":")
    if point != "stall" or at != str(step):
        return
    try:
        time.sleep(float(until) if until else STALL_S)
    except ValueError:  # a path: wait for it
        deadline = time.monotonic() + STALL_S
        while not Path(until).exists() and time.monotonic() < deadline:
            time.sleep(0.05)


@contextlib.contextmanager
def grading_step(step: int) -> Iterator[None]:
    """The driver grades the responses of `step` inside this block (what `slow_grade` looks at)."""
    global _grading_step
    before, _grading_step = _grading_step, step
    try:
        yield
    finally:
        _grading_step = before


def slow_grade() -> tuple[float, str] | None:
    """`slow_grade:<step>:<seconds>[:<file>]`: while the responses of that step are graded, the first
    task of each batch sent to a grader process takes `seconds` longer there, and that process creates
    `<file>` when it starts it (a test then knows the grader is busy). Returns (seconds, file or "")
    during that step, else None. A task given again to a replacement process is not slowed."""
    point, _, rest = os.environ.get(ENV, "").partition(":")
    at, _, rest = rest.partition(":")
    if point != "slow_grade" or _grading_step is None or at != str(_grading_step):
        return None
    seconds, _, marker = rest.partition(":")
    return float(seconds), marker
