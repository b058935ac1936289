"""Ray: start or join a cluster, reserve resources in a placement group, run worker groups.

One config runs on one CPU box, one GPU, eight GPUs or several nodes: the policy group asks for
one bundle per node (`cluster.num_nodes`), holding that node's ranks (a GPU each on GPU clusters, a
fraction of a CPU on CPU runs); with several nodes the bundles are STRICT_SPREAD, so each lands on
its own node and consecutive ranks share one. Rank 0's node hosts the torch.distributed rendezvous,
at that node's address (reachable from the others).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from nemo_grpo.distributed.ports import free_port

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Start a local Ray (or join `address`); quiet, and without per-worker uv environments.

    A Ray started here runs its daemons (GCS, raylet, and the workers the raylet starts) in a process
    group of their own (`_own_process_group`): a scheduler's SIGTERM or a Ctrl-C to the job's
    process group reaches the driver, which finishes the step, saves it and then stops Ray, instead
    of Ray's daemons dying first and leaving the driver waiting a minute for a dead GCS."""
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = dict(address=address, include_dashboard=False, log_to_driver=True,
                                  configure_logging=True, logging_level=logging.WARNING)
    if address is None:
        kwargs["num_cpus"] = num_cpus or os.cpu_count()
    # Worker processes inherit the driver's environment and import path (the repo's package).
    kwargs["runtime_env"] = {"env_vars": {k: v for k, v in os.environ.items() if _forward_env(k)}}
    with _own_process_group(address is None):
        ray.init(**kwargs)


@contextlib.contextmanager
def _own_process_group(wanted: bool) -> Iterator[None]:
    """While Ray starts its daemons, each in a new process group (`setpgid(0, 0)` in the child, as
    Python's `process_group=0`). Only where Ray ties its daemons to the driver's life through the
    kernel (Linux's parent-death signal, Ray's "fate sharing"): they still end with the driver when
    it is killed, which a shared process group gave before. Elsewhere, or if Ray's process launcher
    is not where this expects it, Ray starts as it would."""
    try:
        from ray._private import services
        from ray._private.utils import detect_fate_sharing_support

        launcher = services.ConsolePopen
        supported = wanted and detect_fate_sharing_support() and isinstance(launcher, type)
    except (ImportError, AttributeError):
        supported = False
    if not supported:
        yield
        return

    class OwnGroupPopen(launcher):
        def __init__(self, *args: Any, **kwargs: Any):
            kwargs.setdefault("process_group", 0)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnGroupPopen
    try:
        yield
    finally:
        services.ConsolePopen = launcher


def dead_ray_daemons() -> list[str]:
    """The daemons of a Ray that this process started (GCS, raylet, ...) that have exited, by their
    process names; [] when they all run, or when Ray was joined (`cluster.ray_address`) rather than
    started here (its daemons are not this process's to watch)."""
    try:
        from ray._private import worker

        node = worker._global_node
        return sorted({name for name, _ in node.dead_processes()}) if node is not None else []
    except (ImportError, AttributeError):  # Ray not started, or its internals moved
        return []


def _forward_env(key: str) -> bool:
    return key.startswith(("NEMO_GRPO_", "HF_", "VLLM_", "WANDB_", "TOKENIZERS_", "OMP_", "PYTHONPATH")) or key in (
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV", "CUDA_VISIBLE_DEVICES")


@ray.remote(num_cpus=0)
def _node_address_and_port() -> tuple[str, int]:
    return ray.util.get_node_ip_address(), free_port()


def node_layout(world_size: int, num_nodes: int, per_rank: dict[str, float]) -> tuple[list[dict[str, float]], str, list[int]]:
    """The placement of `world_size` ranks on `num_nodes` nodes: one bundle per node holding its
    ranks' resources, the strategy that puts each bundle on a node of its own, and each rank's
    bundle (ranks 0..k-1 on the first node, k..2k-1 on the second, ...)."""
    if num_nodes < 1 or world_size % num_nodes:
        raise ValueError(f"{world_size} ranks cannot be split evenly over {num_nodes} nodes")
    per_node = world_size // num_nodes
    bundles = [{k: v * per_node for k, v in per_rank.items()} for _ in range(num_nodes)]
    return bundles, "STRICT_SPREAD" if num_nodes > 1 else "PACK", [rank // per_node for rank in range(world_size)]


class WorkerGroup:
    """`world_size` actors of one class over `num_nodes` nodes (`node_layout`), called together."""

    def __init__(self, cls: type, world_size: int, *, gpus_per_worker: float, cpus_per_worker: float,
                 num_nodes: int = 1, init_args: Any = (), init_kwargs: dict[str, Any] | None = None,
                 env_vars: dict[str, str] | None = None):
        per_rank = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
        bundles, strategy, bundle_of = node_layout(world_size, num_nodes, per_rank)
        self.placement = placement_group(bundles, strategy=strategy)
        ray.get(self.placement.ready(), timeout=300)
        address, port = ray.get(_node_address_and_port.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=0)
        ).remote())
        remote_cls = ray.remote(cls)
        self.actors = [
            remote_cls.options(
                num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
                **({"runtime_env": {"env_vars": env_vars}} if env_vars else {}),
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement,
                                                                     placement_group_bundle_index=bundle_of[rank]),
            ).remote(rank, world_size, address, port, *init_args, **(init_kwargs or {}))
            for rank in range(world_size)
        ]
        self.world_size = world_size
        nodes = placement_group_table(self.placement)["bundles_to_node_id"]
        self.rank_nodes = [nodes[bundle_of[rank]] for rank in range(world_size)]  # Ray node id of each rank
        if num_nodes > 1:
            log.info("policy ranks on %d Ray nodes: %s (rendezvous at %s:%d)", num_nodes,
                     ", ".join(f"rank {r} on node {n}" for r, n in enumerate(self.rank_nodes)), address, port)

    def call(self, method: str, *args: Any, **kwargs: Any) -> list[ray.ObjectRef]:
        """The same call on every rank; returns object refs in rank order."""
        return [getattr(actor, method).remote(*args, **kwargs) for actor in self.actors]

    def call_on(self, rank: int, method: str, *args: Any, **kwargs: Any) -> ray.ObjectRef:
        return getattr(self.actors[rank], method).remote(*args, **kwargs)

    def call_per_rank(self, method: str, per_rank_args: list[tuple], **kwargs: Any) -> list[ray.ObjectRef]:
        return [getattr(actor, method).remote(*args, **kwargs) for actor, args in zip(self.actors, per_rank_args)]

    def run(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        return ray.get(self.call(method, *args, **kwargs))

    @staticmethod
    def get(refs: Any) -> Any:
        return ray.get(refs)

    def shutdown(self) -> None:
        try:
            ray.get(self.call("shutdown"), timeout=60)
        except Exception:  # workers that are already gone need no goodbye
            pass
        for actor in self.actors:
            ray.kill(actor)
        remove_placement_group(self.placement)
