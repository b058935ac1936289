"""What the driver owns between steps and saves in each checkpoint (a leaf module: imports nothing
of the package, so any helper can be typed with it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunState:
    step: int = 0
    consumed_samples: int = 0
    # The engine lags the policy; True at the start too, because engines (vLLM) may start with
    # dummy weights and receive the real ones only by refit.
    weights_stale: bool = True
    best: dict[str, float] = field(default_factory=dict)
