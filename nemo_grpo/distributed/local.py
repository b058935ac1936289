"""`cluster.launcher: local`: the one rank of a run as an object in the driver's process, without Ray.

It offers what `cluster.WorkerGroup` offers (`call`, `call_on`, `call_per_rank`, `run`, `get`,
`actors`, `shutdown`), so the policy group and the loop drive one local rank and several Ray ranks with the
same code. Calls run at once, in order; `get` returns their results as they are.
"""

from __future__ import annotations

from typing import Any

from nemo_grpo.distributed.ports import free_port


class LocalWorkerGroup:
    def __init__(self, cls: type, *, init_args: Any = (), init_kwargs: dict[str, Any] | None = None):
        self.world_size = 1
        self.actors = [cls(0, 1, "127.0.0.1", free_port(), *init_args, **(init_kwargs or {}))]

    def call(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        return [getattr(self.actors[0], method)(*args, **kwargs)]

    def call_on(self, rank: int, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.actors[rank], method)(*args, **kwargs)

    def call_per_rank(self, method: str, per_rank_args: list[tuple], **kwargs: Any) -> list[Any]:
        return [getattr(self.actors[0], method)(*per_rank_args[0], **kwargs)]

    def run(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        return self.call(method, *args, **kwargs)

    @staticmethod
    def get(results: Any) -> Any:
        return results

    def shutdown(self) -> None:
        for actor in self.actors:
            actor.shutdown()
        self.actors = []
