"""Faults injected on purpose by tests: NEMO_GRPO_INJECT_FAULT=<point>:<step> ends the process
abruptly (like a crash or a kill) when the run reaches that point at that step, or, for the point
`stall`, hangs or slows the step there (like a stuck collective or a slow generation), so that a
test can signal a run whose step is certainly still running."""

from __future__ import annotations

import os
import time

ENV = "NEMO_GRPO_INJECT_FAULT"
STALL_S = 3600.0


def maybe_crash(point: str, step: int) -> None:
    if os.environ.get(ENV) == f"{point}:{step}":
        os._exit(17)


def maybe_stall(step: int) -> None:
    """`stall:<step>` hangs at the start of that step; `stall:<step>:<seconds>` slows it by that
    long. A signal handler that raises still interrupts the sleep."""
    point, _, rest = os.environ.get(ENV, "").partition(":")
    at, _, seconds = rest.partition(":")
    if point == "stall" and at == str(step):
        time.sleep(float(seconds) if seconds else STALL_S)
