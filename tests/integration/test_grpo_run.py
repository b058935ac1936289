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


VAL_METRIC = "val/tiny/response_length_mean"


def straight_overrides(model: Path) -> list[str]:
    """4 steps, validated at step 0, every 2 steps and at the end (step 4, once) on 8 problems x 4
    samples with their own sampling settings; checkpoints ranked by a validation metric."""
    return ["grpo.max_num_steps=4", "grpo.val_period=2", "grpo.val_at_start=true", "grpo.val_at_end=true",
            f"data.validation=[{{name: tiny, path: {model / 'problems.jsonl'}, max_samples: 8, num_samples: 4, "
            "temperature: 1.5, max_new_tokens: 12}]",
            "checkpointing.keep_top_k=1", f"checkpointing.metric_name={VAL_METRIC}",
            "checkpointing.higher_is_better=false"]


@pytest.fixture(scope="module")
def straight_run(tiny_model, tmp_path_factory):
    """An uninterrupted 4-step run through the CLI, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("straight")
    rc, out = run_script(tiny_model, run_dir, *straight_overrides(tiny_model))
    assert rc == 0, out
    return run_dir


def test_grpo_run_writes_metrics_and_checkpoints(straight_run):
    rows = read_metrics(straight_run)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]  # step 0: the validation before training
    for row in rows[1:]:
        missing = [k for k in REQUIRED if k not in row]
        assert not missing, missing
        assert row["train/lr"] == pytest.approx(1e-3)
        assert row["generation/backend"] == "hf"
    assert any(r["train/trained_fraction"] > 0 for r in rows[1:]), "no step had a reward signal to train on"
    assert (straight_run / "logs" / "config.yaml").is_file()
    # keep_top_k=1 by the validation metric (lower is better): the best validated step and the latest
    val = {r["step"]: r[VAL_METRIC] for r in rows if VAL_METRIC in r}
    best = min((v, -step) for step, v in val.items() if step > 0)
    assert sorted(p.name for p in (straight_run / "ckpt").iterdir()) == sorted({f"step_{-best[1]}", "step_4"})
    for step in sorted({-best[1], 4}):
        ckpt = straight_run / "ckpt" / f"step_{step}"
        assert (ckpt / "meta.json").is_file() and (ckpt / "policy" / "weights" / ".metadata").is_file()
        assert (ckpt / "config.yaml").is_file() and (ckpt / "tokenizer" / "tokenizer.json").is_file()
        assert json.loads((ckpt / "meta.json").read_text())["metrics"][VAL_METRIC] == val[step]


FIXTURE = REPO_ROOT / "tests" / "fixtures" / "tiny_run_metrics.jsonl"


def test_metrics_equal_the_recorded_fixture(straight_run):
    """`tests/fixtures/tiny_run_metrics.jsonl` is this run's `metrics.jsonl` (timing keys dropped), first
    recorded at commit a1fcafa, before the package was split into layers, and recorded again when HF
    sampling became seeded per prompt (engines on every rank, issue 13). Moving code must not change what
    a run computes, and neither may the launcher (test_preemption.py resumes runs under Ray against it):
    the same keys, the same values (floats to 1e-6 relative, for BLAS kernels that may differ between
    machines of one kind; everything else exactly)."""
    expected = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    rows = [comparable(r) for r in read_metrics(straight_run)]
    assert [sorted(r) for r in rows] == [sorted(r) for r in expected]
    for got, want in zip(rows, expected):
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (want["step"], key)
            else:
                assert got[key] == value, (want["step"], key)


def test_validation_runs_at_start_every_period_and_at_the_end(straight_run):
    rows = {r["step"]: r for r in read_metrics(straight_run)}
    validated = [step for step, r in rows.items() if "val/tiny/avg@4" in r]
    assert validated == [0, 2, 4]
    for step in validated:
        row = rows[step]
        for key in ("avg@4", "pass@1", "pass@2", "pass@4", "maj@4", "truncated_rate", "no_answer_rate"):
            assert 0.0 <= row[f"val/tiny/{key}"] <= 1.0, key
        assert row["val/tiny/pass@1"] == pytest.approx(row["val/tiny/avg@4"])
        assert row["val/tiny/avg@4"] <= row["val/tiny/pass@2"] <= row["val/tiny/pass@4"]
        assert 0 < row[VAL_METRIC] <= 12 and row["timing/validation_s"] > 0
    assert "train/loss" not in rows[0]


def test_kill_after_step_2_then_resume_matches_uninterrupted(tiny_model, straight_run, tmp_path):
    killed = tmp_path / "killed"
    proc = run_script(tiny_model, killed, *straight_overrides(tiny_model), wait=False)
    metrics = killed / "logs" / "metrics.jsonl"

    def step_2_done() -> bool:  # checkpointed, then logged (the row is written after the checkpoint)
        checkpointed = (killed / "ckpt" / "step_2" / "meta.json").exists()
        return checkpointed and metrics.exists() and '"step": 2,' in metrics.read_text()

    deadline = time.time() + 600
    while not step_2_done() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert step_2_done(), proc.stdout.read() if proc.poll() is not None else "timed out"
    os.killpg(proc.pid, signal.SIGKILL)  # a real kill of the run, during step 3
    proc.wait()
    rc, out = run_script(tiny_model, killed, *straight_overrides(tiny_model))
    assert rc == 0, out
    assert "resumed from" in out
    expected, resumed = read_metrics(straight_run), read_metrics(killed)
    assert [r["step"] for r in resumed] == [0, 1, 2, 3, 4]  # the resumed run did not validate step 0 again
    assert [comparable(r) for r in resumed if r["step"] > 2] == [comparable(r) for r in expected if r["step"] > 2]


def test_interrupted_saves_keep_the_previous_checkpoint_resumable(tiny_model, tmp_path):
    """Two crashes, injected, each leaving a tmp_ folder that is never loaded: one while the shards of
    step 2 are written in the background (checkpointing.async_save=process: the rank dies between the
    weights and the optimizer), one in the driver after the shards of step 3 (the default, thread).
    Each time the same command resumes from the checkpoint before. (Resumes from background checkpoints to the
    fixture's metrics: test_disk_and_folders.py, test_preemption.py.)"""
    from nemo_grpo.checkpoint.manager import CheckpointManager, verify_checkpoint

    ckpt = tmp_path / "ckpt"
    rc, out = run_script(tiny_model, tmp_path, "grpo.max_num_steps=3", "checkpointing.async_save=process",
                         env={"NEMO_GRPO_INJECT_FAULT": "background_write:2"})
    assert rc == 17, out  # the injected crash, in the background writer of step 2 (torch's writer process)
    assert (ckpt / "tmp_step_2" / "policy" / "weights" / ".metadata").is_file()  # half written: weights only
    assert not (ckpt / "tmp_step_2" / "policy" / "optimizer" / ".metadata").exists()
    assert not (ckpt / "step_2").exists() and not (ckpt / "tmp_step_2" / "meta.json").exists()
    assert [step for step, _ in CheckpointManager(ckpt).complete()] == [1]  # step 1, written by the process
    assert verify_checkpoint(ckpt / "step_1") is None

    rc, out = run_script(tiny_model, tmp_path, "grpo.max_num_steps=3", env={"NEMO_GRPO_INJECT_FAULT": "save:3"})
    assert rc == 17, out  # the injected crash, after the DCP shards of step 3 and before completion
    assert f"resumed from {ckpt / 'step_1'} (step 1)" in out
    assert (ckpt / "step_2" / "meta.json").is_file() and verify_checkpoint(ckpt / "step_2") is None
    assert (ckpt / "tmp_step_3").is_dir() and not (ckpt / "step_3").exists()

    rc, out = run_script(tiny_model, tmp_path, "grpo.max_num_steps=3")
    assert rc == 0, out
    assert f"resumed from {ckpt / 'step_2'} (step 2)" in out
    assert not (ckpt / "tmp_step_3").exists() and not (ckpt / "tmp_step_2").exists()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_each_kind_of_damaged_checkpoint_and_a_torn_metrics_line_resume_from_the_newest_that_verifies(
        tiny_model, tmp_path):
    """What a crash during a copy or a bad disk leaves, one kind of damage in each of the five newest
    checkpoints (an unreadable meta.json, a missing .metadata, a missing and a truncated shard, a
    truncated driver state) and the last metrics row cut mid-write. The same command names each,
    resumes from the newest checkpoint that verifies, and ends with the metrics of the run that was
    never damaged, every checkpoint whole again."""
    from nemo_grpo.checkpoint.manager import verify_checkpoint

    rc, out = run_script(tiny_model, tmp_path, "grpo.max_num_steps=6")
    assert rc == 0, out
    uninterrupted = read_metrics(tmp_path)
    ckpt, metrics = tmp_path / "ckpt", tmp_path / "logs" / "metrics.jsonl"

    def cut(path):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    (ckpt / "step_6" / "meta.json").write_text("{not json")
    (ckpt / "step_5" / "policy" / "optimizer" / ".metadata").unlink()
    missing = sorted((ckpt / "step_4" / "policy" / "optimizer").glob("*.distcp"))[0]
    missing.unlink()
    truncated = sorted((ckpt / "step_3" / "policy" / "weights").glob("*.distcp"))[0]
    cut(truncated)
    cut(ckpt / "step_2" / "driver_state.pt")
    rows = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(rows[:5]) + rows[5][:15])
    rc, out = run_script(tiny_model, tmp_path, "grpo.max_num_steps=6")
    assert rc == 0, out
    for step, problem in [(6, "meta.json: unreadable"), (5, "policy/optimizer/.metadata: missing"),
                          (4, f"policy/optimizer/{missing.name}: missing"), (3, f"policy/weights/{truncated.name}: "),
                          (2, "driver_state.pt: ")]:
        assert f"{ckpt / f'step_{step}'} is damaged ({problem}" in out, (step, out)
    assert f"resuming from {ckpt / 'step_1'} instead" in out and "left in place, not deleted" in out
    assert f"{metrics}:6: dropped a partial last line" in out
    assert "Traceback" not in out
    assert [comparable(r) for r in read_metrics(tmp_path)] == [comparable(r) for r in uninterrupted]
    assert all(verify_checkpoint(ckpt / f"step_{step}") is None for step in range(1, 7))  # saved again, whole


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
