"""Several nodes (issue 16): a real two-node Ray cluster on this one machine (two `ray start`
raylets, each with one CPU and a resource of its own) runs the tiny GRPO run with one policy rank on
each node. The ranks land on two different Ray nodes, torch.distributed meets at rank 0's node
address, and the run's metrics are those of the one-node 2-rank run
(`tests/fixtures/tiny_run_metrics_2ranks.jsonl`: the `metrics.jsonl` of the same command with
`cluster.cpu_ranks_per_node=2` and Ray started by the driver, timing keys dropped). Three steps of
tiny.yaml without validation: step 3 is the first that trains (a gradient all-reduced across the
nodes)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from nemo_grpo.checkpoint.manager import verify_checkpoint
from nemo_grpo.distributed.ports import free_port
from tests.conftest import REPO_ROOT
from tests.integration.test_grpo_run import run_script, tiny_model  # noqa: F401
from tests.integration.test_preemption import alive, assert_equals_the_uninterrupted_run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

FIXTURE_2RANKS = REPO_ROOT / "tests" / "fixtures" / "tiny_run_metrics_2ranks.jsonl"
# The cluster's processes and the run's driver: no token to share between them on one machine.
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
RAY = str(Path(sys.executable).with_name("ray"))


def session_processes(pgid: int) -> dict[int, str]:
    """pid -> command line of the processes in process group `pgid` (one `ray start` and its daemons)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
    return found


def raylet_node_id(pgid: int) -> str:
    ids = [m.group(1) for c in session_processes(pgid).values() if "raylet/raylet " in c
           for m in [re.search(r"--node_id=([0-9a-f]+)", c)] if m]
    assert len(ids) == 1, session_processes(pgid)
    return ids[0]


@pytest.fixture
def two_node_cluster():
    """A head node and a second node, each started by its own `ray start` in a process group of its own,
    in a temp folder of their own (short: Ray's socket paths must stay under 108 characters). Both are
    stopped afterwards whatever happens, by their process groups (never `ray stop`, which would stop
    every Ray of this user on the machine)."""
    temp = Path(tempfile.mkdtemp(prefix="ray2n-"))
    port, groups = free_port(), []
    env = {**os.environ, **ENV}

    def start(*args: str) -> int:
        proc = subprocess.Popen([RAY, "start", "--num-cpus=1", "--disable-usage-stats", *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        groups.append(proc.pid)
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out
        return proc.pid

    try:
        head = start("--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}",
                     '--resources={"test_node_head": 1}')
        second = start(f"--address=127.0.0.1:{port}", '--resources={"test_node_second": 1}')
        yield {"address": f"127.0.0.1:{port}", "nodes": {raylet_node_id(head), raylet_node_id(second)}}
    finally:
        pids = [p for g in groups for p in session_processes(g)]
        for sig, wait_s in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
            for g in reversed(groups):
                try:
                    os.killpg(g, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + wait_s
            while alive(pids) and time.time() < deadline:
                time.sleep(0.1)
        shutil.rmtree(temp, ignore_errors=True)


def test_one_policy_rank_on_each_of_two_nodes_gives_the_metrics_of_two_ranks_on_one_node(tiny_model, tmp_path,
                                                                                           two_node_cluster):
    rc, out = run_script(tiny_model, tmp_path, "grpo.max_num_steps=3", f"cluster.ray_address={two_node_cluster['address']}",
                         "cluster.num_nodes=2", "cluster.cpu_ranks_per_node=1", env=ENV)
    assert rc == 0, out
    assert f"finished 3 steps; checkpoints in {tmp_path / 'ckpt'}" in out
    placed = re.search(r"policy ranks on 2 Ray nodes: rank 0 on node ([0-9a-f]+), rank 1 on node ([0-9a-f]+)", out)
    assert placed, out
    assert placed.group(1) != placed.group(2)  # one rank on each node: the two raylets the test started
    assert {placed.group(1), placed.group(2)} == two_node_cluster["nodes"]
    assert verify_checkpoint(tmp_path / "ckpt" / "step_3") is None
    assert_equals_the_uninterrupted_run(tmp_path, fixture=FIXTURE_2RANKS)
