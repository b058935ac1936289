"""The device of a run, decided once (in setup) and passed to every worker, and the check that the
cluster can place what a run asks for before any worker starts."""

from __future__ import annotations

import torch

from nemo_grpo.config.errors import ConfigError


def resolve_device(gpus_per_node: int | None) -> str:
    """'cuda' when GPUs are asked for (they must be visible), 'cpu' for 0, and None means: the GPU
    if one is visible (evaluation, which runs in one process)."""
    if gpus_per_node is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if gpus_per_node > 0 and not torch.cuda.is_available():
        raise ConfigError(f"cluster.gpus_per_node={gpus_per_node} but no CUDA GPU is visible: "
                          "set cluster.gpus_per_node=0 to run on the CPU")
    return "cuda" if gpus_per_node > 0 else "cpu"


def check_placeable(requested: dict[str, float], available: dict[str, float], *, num_nodes: int = 1,
                    nodes: list[dict[str, float]] | None = None) -> None:
    """Refuse, with what was asked and what exists, a request the cluster cannot place (Ray would
    otherwise wait for resources that never come): in total, and, given the resources of each live
    node (`nodes`), per node: the ranks are placed as one bundle per node on `num_nodes` distinct
    nodes (`cluster.WorkerGroup`), so that many nodes must each hold a `num_nodes`-th of the request."""
    asked = ", ".join(f"{v:g} {k}" for k, v in requested.items() if v)
    short = {k: v for k, v in requested.items() if v > available.get(k, 0.0) + 1e-9}
    if short:
        have = ", ".join(f"{available.get(k, 0.0):g} {k}" for k in requested)
        raise ConfigError(f"the run asks for {asked} but the Ray cluster has {have}: lower cluster.gpus_per_node / "
                          "cluster.num_nodes / cluster.cpu_ranks_per_node / cluster.cpus_per_worker, or add nodes")
    if nodes is None:
        return
    per_node = {k: v / num_nodes for k, v in requested.items() if v}
    fit = [n for n in nodes if all(n.get(k, 0.0) + 1e-9 >= v for k, v in per_node.items())]
    if len(fit) < num_nodes:
        each = ", ".join(f"{v:g} {k}" for k, v in per_node.items())
        have = "; ".join(", ".join(f"{n.get(k, 0.0):g} {k}" for k in per_node) for n in nodes)
        raise ConfigError(f"the run asks for {asked} as {each} on each of {num_nodes} node(s) (cluster.num_nodes), "
                          f"but {len(fit)} of the Ray cluster's {len(nodes)} node(s) can hold that (they have: {have}): "
                          "set cluster.num_nodes to the number of nodes the ranks should spread over, or lower "
                          "cluster.gpus_per_node / cluster.cpu_ranks_per_node / cluster.cpus_per_worker")
