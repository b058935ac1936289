"""The `cluster:` section: how many nodes and GPUs a run asks Ray for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ClusterConfig:
    num_nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_worker: float = 0.5
    ray_address: str | None = None
