"""Seeing a run: one tiny GRPO run with every logger, plots, rollout dumps and a guard that must
stop it after saving a usable checkpoint (resuming from a checkpoint is tested in test_grpo_run)."""

from __future__ import annotations

import glob
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.integration.test_grpo_run import read_metrics, script_args
from tests.integration.tiny_run import make_tiny_model_dir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# stops after step 3: of the tiny run's first steps only step 3 trains (tests/fixtures/tiny_run_metrics.jsonl)
STOP = '{metric: train/response_length_mean, op: ">", value: 0, after_step: 2, action: stop}'
WARN = '{metric: train/entropy, op: ">", value: 0, action: warn}'
OBSERVE = ["logger.tensorboard=true", "logger.wandb=true", "logger.wandb_mode=offline", "logger.rollout_dump_period=1",
           "checkpointing.save_period=10"]


def run(model: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(script_args(model, run_dir, *overrides), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)


def tb_steps(log_dir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir / "tensorboard"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_guard_stops_the_run_after_saving_a_usable_checkpoint(tmp_path, qwen_math_tokenizer):
    model = make_tiny_model_dir(tmp_path / "model", qwen_math_tokenizer)
    run_dir, logs = tmp_path / "run", tmp_path / "run" / "logs"
    proc = run(model, run_dir, "grpo.max_num_steps=4", *OBSERVE, "logger.plot_period=2", f"guards=[{STOP}, {WARN}]")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    stopped = [line for line in proc.stderr.splitlines() if "stopped by guard" in line]
    assert len(stopped) == 1, proc.stderr  # one line (Ray may still print worker output after it)
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    length = rows[2]["train/response_length_mean"]
    assert stopped[0] == (f"stopped by guard 'train/response_length_mean > 0.0 after step 2': "
                          f"train/response_length_mean = {length:.4g} at step 3; "
                          f"checkpoint saved at {run_dir / 'ckpt' / 'step_3'}")
    assert proc.stderr.count("warning from guard 'train/entropy > 0.0'") == 1  # one episode, one warning
    assert "Traceback" not in proc.stderr

    # the guard saved step 3 itself (save_period is 10), completely
    assert sorted(p.name for p in (run_dir / "ckpt").iterdir()) == ["step_3"]
    ckpt = run_dir / "ckpt" / "step_3"
    assert json.loads((ckpt / "meta.json").read_text())["step"] == 3
    assert (ckpt / "policy" / "weights" / ".metadata").is_file() and (ckpt / "driver_state.pt").is_file()

    # the metrics of docs/metrics.md, in JSONL and TensorBoard; W&B offline; plots; rollout dumps
    every_step = ["train/reward_mean", "train/reward_std", "train/correct_rate", "train/format_rate",
                  "train/answer_rate", "train/solve_none", "train/solve_all", "train/response_length_mean",
                  "train/response_length_max", "train/truncated_rate", "train/entropy", "train/token_mult_prob_error",
                  "train/advantage_mean", "train/advantage_std", "train/tokens_generated", "train/tokens_trained",
                  "throughput/generation_tokens_per_s", "throughput/train_tokens_per_s", "timing/generation_s",
                  "timing/train_s", "timing/step_s"]
    when_trained = ["train/clipfrac", "train/clipfrac_low", "train/clipfrac_high", "train/ratio_mean",
                    "train/ratio_min", "train/ratio_max", "train/loss", "train/grad_norm"]
    trained = [r for r in rows if r["train/trained_fraction"] > 0]
    assert trained, "no step trained: the loss metrics are not exercised"
    for key in every_step:
        assert all(isinstance(r.get(key), (int, float)) for r in rows), key
    for key in when_trained:
        assert all(isinstance(r.get(key), (int, float)) for r in trained), key
    assert tb_steps(logs, "train/reward_mean") == [1, 2, 3]
    run_id = (logs / "wandb_run_id").read_text().strip()
    assert len(glob.glob(str(logs / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))) == 1
    for name in ["overview", "reward", "entropy", "response_length", "kl", "clip_fraction"]:
        assert (logs / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    for step in (1, 2, 3):
        dump = [json.loads(x) for x in (logs / "rollouts" / f"step_{step}.jsonl").read_text().splitlines()]
        assert len(dump) == 16 and {d["group"] for d in dump} == {0, 1, 2, 3}
        assert all(d["response"] is not None and d["ground_truth"] in ("1", "2") for d in dump)

    # the checkpoint is usable: its weights load into the model, and training moved them
    import torch
    import torch.distributed.checkpoint as dcp
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(model).state_dict()
    state = {k: torch.empty_like(v) for k, v in start.items()}
    dcp.load(state, checkpoint_id=str(ckpt / "policy" / "weights"))
    assert any(not torch.equal(state[k], start[k]) for k in start)
