"""How the policy ranks are laid out over nodes: one placement-group bundle per node holding its ranks,
spread one per node when there are several, consecutive ranks on one node."""

from __future__ import annotations

import pytest

from nemo_grpo.distributed.cluster import node_layout


def test_one_node_holds_every_rank_in_one_bundle():
    bundles, strategy, bundle_of = node_layout(4, 1, {"CPU": 0.25})
    assert bundles == [{"CPU": 1.0}] and strategy == "PACK" and bundle_of == [0, 0, 0, 0]


def test_several_nodes_get_a_bundle_each_strictly_spread_with_consecutive_ranks_together():
    bundles, strategy, bundle_of = node_layout(8, 2, {"CPU": 1.0, "GPU": 1.0})
    assert bundles == [{"CPU": 4.0, "GPU": 4.0}] * 2
    assert strategy == "STRICT_SPREAD"  # two bundles never share a node
    assert bundle_of == [0, 0, 0, 0, 1, 1, 1, 1]
    assert node_layout(2, 2, {"CPU": 0.25})[2] == [0, 1]


def test_ranks_that_do_not_split_evenly_are_refused():
    with pytest.raises(ValueError, match="3 ranks cannot be split evenly over 2 nodes"):
        node_layout(3, 2, {"CPU": 1.0})
