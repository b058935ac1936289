"""The device and the resources of a run, decided once before any worker starts."""

from __future__ import annotations

import pytest
import torch

from nemo_grpo.config import ConfigError
from nemo_grpo.distributed.device import check_placeable, resolve_device
from nemo_grpo.trainer.config import load_train_config
from nemo_grpo.trainer.setup import batches_in_flight, resource_plan
from tests.conftest import REPO_ROOT

GPU_RECIPE = REPO_ROOT / "configs" / "grpo-deepscaler-1.5b-8K.yaml"
DEMO = REPO_ROOT / "configs" / "grpo-smollm2-135m-arithmetic.yaml"


def test_the_device_follows_cluster_gpus_per_node():
    assert resolve_device(0) == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cluster.gpus_per_node=2 but no CUDA GPU is visible"):
            resolve_device(2)
        assert resolve_device(None) == "cpu"


def test_each_rank_takes_one_gpu_and_its_engine_shares_it():
    plan = resource_plan(load_train_config(GPU_RECIPE), "cuda")
    assert plan["world_size"] == 8 and plan["rank_gpus"] == 1.0 and plan["total"]["GPU"] == 8.0
    assert plan["launcher"] == "ray" and plan["threads"] is None


def test_the_launcher_is_local_for_one_rank_without_a_cluster_and_ray_otherwise():
    cpu = ["cluster.gpus_per_node=0", "cluster.num_nodes=1"]
    assert resource_plan(load_train_config(GPU_RECIPE, cpu), "cpu")["launcher"] == "local"
    two = resource_plan(load_train_config(GPU_RECIPE, [*cpu, "cluster.cpu_ranks_per_node=2"]), "cpu")
    assert (two["launcher"], two["world_size"]) == ("ray", 2)
    assert two["threads"] == max(1, (__import__("os").cpu_count() or 1) // 2)
    joined = resource_plan(load_train_config(GPU_RECIPE, [*cpu, "cluster.ray_address=10.0.0.1:6379"]), "cpu")
    assert joined["launcher"] == "ray"
    assert resource_plan(load_train_config(GPU_RECIPE, [*cpu, "cluster.launcher=ray"]), "cpu")["launcher"] == "ray"


def test_settings_the_engines_cannot_honour_are_refused_with_what_to_do():
    with pytest.raises(ConfigError, match="generation.colocated: false .* is not supported"):
        load_train_config(GPU_RECIPE, ["generation.colocated=false"])
    with pytest.raises(ConfigError, match="tensor_parallel_size: 2, but an engine runs in one policy rank"):
        load_train_config(GPU_RECIPE, ["generation.vllm.tensor_parallel_size=2"])
    with pytest.raises(ConfigError, match="cluster.launcher: local runs one rank, but .* asks for 8"):
        load_train_config(GPU_RECIPE, ["cluster.launcher=local"])
    with pytest.raises(ConfigError, match="launcher: local runs without Ray, but cluster.ray_address is set"):
        load_train_config(GPU_RECIPE, ["cluster.launcher=local", "cluster.gpus_per_node=0", "cluster.ray_address=x:1"])


def test_what_the_cluster_cannot_place_is_refused_with_both_sides():
    check_placeable({"CPU": 1.0, "GPU": 0.0}, {"CPU": 2.0})
    with pytest.raises(ConfigError, match=r"asks for 1 CPU, 8.5 GPU but the Ray cluster has 2 CPU, 0 GPU"):
        check_placeable({"CPU": 1.0, "GPU": 8.5}, {"CPU": 2.0})


def test_ranks_that_no_node_can_hold_are_refused_at_start_not_after_a_placement_timeout():
    two_nodes = [{"CPU": 64.0, "GPU": 8.0}, {"CPU": 64.0, "GPU": 8.0}]
    total = {"CPU": 64.0, "GPU": 16.0}
    check_placeable({"CPU": 8.0, "GPU": 16.0}, total, num_nodes=2, nodes=two_nodes)  # 8 GPUs on each node
    with pytest.raises(ConfigError, match=r"as 8 CPU, 16 GPU on each of 1 node\(s\).*0 of the Ray cluster's 2 node"):
        check_placeable({"CPU": 8.0, "GPU": 16.0}, total, num_nodes=1, nodes=two_nodes)  # one bundle of 16 GPUs
    with pytest.raises(ConfigError, match=r"on each of 2 node\(s\).*1 of the Ray cluster's 2 node"):
        check_placeable({"CPU": 2.0, "GPU": 12.0}, total, num_nodes=2, nodes=[{"CPU": 64.0, "GPU": 8.0},
                                                                              {"CPU": 64.0, "GPU": 4.0}])


def test_a_training_step_is_sized_by_its_longest_prompt_plus_the_response_within_the_training_length():
    """What sizes the engine's KV cache for a training step (the demo: 4 x 8 responses of at most 48
    tokens, a training length of 256): the longest prompt plus 48, not 256, unless that is shorter."""
    cfg = load_train_config(DEMO)
    rows = [{"prompt_ids": [1] * 61}, {"prompt_ids": [1] * 40}]
    assert batches_in_flight(cfg, rows, []) == [(32, 61 + 48)]
    assert batches_in_flight(cfg, [{"prompt_ids": [1] * 230}], []) == [(32, 256)]
    unbounded = load_train_config(DEMO, ["generation.max_new_tokens=null"])  # responses up to the training length
    assert batches_in_flight(unbounded, rows, []) == [(32, 256)]
