"""The real stack on CPU with tiny models: Ray, FSDP2 on gloo, HF generation, DCP checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nemo_grpo.checkpoint.manager import CheckpointMismatch
from tests.conftest import REPO_ROOT
from tests.integration.tiny_run import make_tiny_model_dir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REQUIRED = [
    "step", "train/reward_mean", "train/response_length_mean", "train/entropy", "train/loss", "train/grad_norm",
    "train/lr", "timing/step_s", "timing/generation_s", "timing/train_s", "train/correct_rate", "train/format_rate",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, qwen_math_tokenizer):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", qwen_math_tokenizer)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]


def comparable(m: dict) -> dict:
    """Everything but wall-clock figures, which differ between any two runs."""
    return {k: v for k, v in m.items() if not k.startswith(("timing/", "throughput/"))}


def script_args(model: Path, run_dir: Path, *overrides: str) -> list[str]:
    """The command line of examples/run_grpo_math.py on tiny.yaml with this model and run folder."""
    return [sys.executable, str(REPO_ROOT / "examples" / "run_grpo_math.py"), "--config",
            str(REPO_ROOT / "tests" / "integration" / "tiny.yaml"), f"policy.model_name={model}",
            f"data.train.path={model / 'problems.jsonl'}",
            f"checkpointing.checkpoint_dir={run_dir / 'ckpt'}", f"logger.log_dir={run_dir / 'logs'}", *overrides]


def run_script(model: Path, run_dir: Path, *overrides: str, env: dict | None = None, wait: bool = True):
    args = script_args(model, run_dir, *overrides)
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if wait:
        out, _ = proc.communicate(timeout=600)
        return proc.returncode, out
    return proc


@pytest.fixture(scope="module")
def straight_run(tiny_model, tmp_path_factory):
    """An uninterrupted 4-step run through the CLI, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("straight")
    rc, out = run_script(tiny_model, run_dir, "grpo.max_num_steps=4")
    assert rc == 0, out
    return run_dir


def test_grpo_run_writes_metrics_and_checkpoints(straight_run):
    rows = read_metrics(straight_run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        missing = [k for k in REQUIRED if k not in row]
        assert not missing, missing
        assert row["train/lr"] == pytest.approx(1e-3)
        assert row["generation/backend"] == "hf"
    assert any(r["train/trained_fraction"] > 0 for r in rows), "no step had a reward signal to train on"
    assert (straight_run / "logs" / "config.yaml").is_file()
    for step in (1, 2, 3, 4):
        ckpt = straight_run / "ckpt" / f"step_{step}"
        assert (ckpt / "meta.json").is_file() and (ckpt / "policy" / "weights" / ".metadata").is_file()
        assert (ckpt / "config.yaml").is_file() and (ckpt / "tokenizer" / "tokenizer.json").is_file()


def test_kill_after_step_2_then_resume_matches_uninterrupted(tiny_model, straight_run, tmp_path):
    killed = tmp_path / "killed"
    proc = run_script(tiny_model, killed, "grpo.max_num_steps=4", wait=False)
    marker = killed / "ckpt" / "step_2" / "meta.json"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.stdout.read() if proc.poll() is not None else "timed out"
    os.killpg(proc.pid, signal.SIGKILL)  # a real kill of the run, during step 3
    proc.wait()
    rc, out = run_script(tiny_model, killed, "grpo.max_num_steps=4")
    assert rc == 0, out
    assert "resumed from" in out
    expected, resumed = read_metrics(straight_run), read_metrics(killed)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [comparable(r) for r in resumed[2:]] == [comparable(r) for r in expected[2:]]


def test_interrupted_save_keeps_previous_checkpoint_resumable(tiny_model, tmp_path):
    rc, out = run_script(tiny_model, tmp_path, "grpo.max_num_steps=3", env={"NEMO_GRPO_INJECT_FAULT": "save:2"})
    assert rc == 17, out  # the injected crash, after the DCP shards of step 2 and before completion
    ckpt = tmp_path / "ckpt"
    assert (ckpt / "step_1" / "meta.json").is_file()
    assert (ckpt / "tmp_step_2").is_dir() and not (ckpt / "step_2").exists()
    rc, out = run_script(tiny_model, tmp_path, "grpo.max_num_steps=3")
    assert rc == 0, out
    assert "resumed from" in out and "step_1" in out
    assert not (ckpt / "tmp_step_2").exists()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_resume_with_another_model_is_refused(straight_run, tmp_path, qwen_math_tokenizer):
    other = make_tiny_model_dir(tmp_path / "other", qwen_math_tokenizer, arch="llama")
    before = sorted(p.name for p in (straight_run / "ckpt").iterdir())
    rc, out = run_script(other, straight_run, "grpo.max_num_steps=6")
    assert rc == 2, out
    assert "refusing to resume" in out and "model_name" in out and "architecture" in out
    assert "Traceback" not in out
    assert sorted(p.name for p in (straight_run / "ckpt").iterdir()) == before  # nothing touched


def test_refusal_message_names_the_differences():
    from nemo_grpo.checkpoint.manager import check_resumable

    with pytest.raises(CheckpointMismatch, match=r"seed: checkpoint has 1, this run has 2"):
        check_resumable({"compat": {"seed": 1, "model_name": "m"}}, {"seed": 2, "model_name": "m"}, Path("x"))
