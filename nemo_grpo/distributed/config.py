"""The `cluster:` section: how many nodes and ranks a run uses, and what starts them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class ClusterConfig:
    num_nodes: int = 1
    gpus_per_node: int = 0  # 0: the ranks run on CPUs
    # CPU runs: policy ranks per node (GPU runs have one rank per GPU).
    cpu_ranks_per_node: int = 1
    cpus_per_worker: float = 0.5
    ray_address: str | None = None
    # ray: every rank a Ray actor; local: one rank in the driver's process, no Ray at all;
    # auto: local for one rank without a cluster address, else ray.
    launcher: Literal["auto", "ray", "local"] = "auto"

    @property
    def world_size(self) -> int:
        return self.num_nodes * (self.gpus_per_node if self.gpus_per_node > 0 else self.cpu_ranks_per_node)

    def resolved_launcher(self) -> str:
        if self.launcher != "auto":
            return self.launcher
        return "local" if self.world_size == 1 and self.ray_address is None else "ray"

    def validate(self) -> None:
        if self.num_nodes < 1 or self.gpus_per_node < 0 or self.cpu_ranks_per_node < 1:
            raise ValueError(f"cluster: num_nodes ({self.num_nodes}) and cpu_ranks_per_node "
                             f"({self.cpu_ranks_per_node}) must be at least 1, gpus_per_node ({self.gpus_per_node}) "
                             "at least 0")
        if self.launcher == "local" and self.ray_address is not None:
            raise ValueError("cluster.launcher: local runs without Ray, but cluster.ray_address is set; "
                             "use launcher ray (or auto)")
