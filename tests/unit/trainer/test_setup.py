"""The device and the resources of a run, decided once before any worker starts."""

from __future__ import annotations

import pytest
import torch

from nemo_grpo.config import ConfigError
from nemo_grpo.distributed.device import check_placeable, resolve_device
from nemo_grpo.trainer.config import load_train_config
from nemo_grpo.trainer.setup import resource_plan
from tests.conftest import REPO_ROOT

GPU_RECIPE = REPO_ROOT / "configs" / "grpo-deepscaler-1.5b-8K.yaml"


def test_the_device_follows_cluster_gpus_per_node():
    assert resolve_device(0) == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cluster.gpus_per_node=2 but no CUDA GPU is visible"):
            resolve_device(2)
        assert resolve_device(None) == "cpu"


def test_colocated_ranks_share_their_gpus_with_the_engine():
    plan = resource_plan(load_train_config(GPU_RECIPE), "cuda")
    assert plan["world_size"] == 8 and plan["rank_gpus"] == 0.5 and plan["engine_gpus"] == 0.5
    assert plan["total"]["GPU"] == 4.5


def test_a_dedicated_engine_takes_generation_num_gpus():
    """generation.num_gpus used to be ignored (the engine asked for half a GPU more than the ranks)."""
    plan = resource_plan(load_train_config(GPU_RECIPE, ["generation.colocated=false", "generation.num_gpus=1",
                                                        "cluster.gpus_per_node=7"]), "cuda")
    assert (plan["rank_gpus"], plan["engine_gpus"], plan["total"]["GPU"]) == (1.0, 1.0, 8.0)
    with pytest.raises(ConfigError, match="generation.num_gpus: with generation.colocated=false"):
        load_train_config(GPU_RECIPE, ["generation.colocated=false"])


def test_what_the_cluster_cannot_place_is_refused_with_both_sides():
    check_placeable({"CPU": 1.0, "GPU": 0.0}, {"CPU": 2.0})
    with pytest.raises(ConfigError, match=r"asks for 1 CPU, 8.5 GPU but the Ray cluster has 2 CPU, 0 GPU"):
        check_placeable({"CPU": 1.0, "GPU": 8.5}, {"CPU": 2.0})
