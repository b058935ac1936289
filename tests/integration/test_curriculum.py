"""A three-stage curriculum of tiny stages with growing maximum length: each stage trains from
the previous stage's HF export, and a curriculum killed in stage 2 resumes in stage 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.integration.tiny_run import make_tiny_model_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

# (name, steps, max new tokens, max sequence length): the context grows stage by stage.
STAGES = [("short", 1, 4, 64), ("medium", 2, 6, 80), ("long", 1, 8, 96)]


def write_curriculum(path: Path, model: Path, out: Path) -> Path:
    tiny = REPO_ROOT / "tests" / "integration" / "tiny.yaml"
    doc = {
        "output_dir": str(out),
        "export_dtype": "float32",
        "overrides": [f"policy.model_name={model}", f"data.train.path={model / 'problems.jsonl'}",
                      "logger.console=false"],
        "stages": [{"name": name, "config": str(tiny),
                    "overrides": [f"grpo.max_num_steps={steps}", f"generation.max_new_tokens={tokens}",
                                  f"policy.max_total_sequence_length={length}"]}
                   for name, steps, tokens, length in STAGES],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def start(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "examples" / "run_curriculum.py"), f"--config={config}"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def steps_logged(stage_dir: Path) -> list[int]:
    lines = (stage_dir / "logs" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if '"train/' in line]


def test_curriculum_runs_three_stages_and_resumes_in_stage_two(tmp_path, qwen_math_tokenizer):
    model = make_tiny_model_dir(tmp_path / "model", qwen_math_tokenizer, tied=True)
    out = tmp_path / "curriculum"
    config = write_curriculum(tmp_path / "curriculum.yaml", model, out)

    proc = start(config)
    marker = out / "medium" / "checkpoints" / "step_1" / "meta.json"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.stdout.read() if proc.poll() is not None else "timed out"
    os.killpg(proc.pid, signal.SIGKILL)  # a real kill, during step 2 of stage 2
    proc.wait()
    assert (out / "short" / "stage_done.json").is_file() and not (out / "medium" / "stage_done.json").exists()
    stage_one_metrics = (out / "short" / "logs" / "metrics.jsonl").read_text()

    proc = start(config)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    assert "stage 1/3 'short': already finished" in log
    assert "resumed from" in log and str(out / "medium" / "checkpoints" / "step_1") in log
    assert (out / "short" / "logs" / "metrics.jsonl").read_text() == stage_one_metrics  # not trained again

    for index, (name, steps, tokens, length) in enumerate(STAGES):
        stage = out / name
        done = json.loads((stage / "stage_done.json").read_text())
        assert done["step"] == steps and Path(done["checkpoint"]).name == f"step_{steps}"
        assert (stage / "hf" / "config.json").is_file() and (stage / "hf" / "generation_config.json").is_file()
        assert steps_logged(stage) == list(range(1, steps + 1))
        saved = yaml.safe_load((stage / "logs" / "config.yaml").read_text())
        assert saved["generation"]["max_new_tokens"] == tokens
        assert saved["policy"]["max_total_sequence_length"] == length
        # Stage 1 starts from the base model, each later one from the previous stage's export.
        expected_start = model if index == 0 else out / STAGES[index - 1][0] / "hf"
        assert saved["policy"]["model_name"] == str(expected_start)
        rows = [json.loads(line) for line in (stage / "logs" / "metrics.jsonl").read_text().splitlines()]
        assert all(r["train/response_length_max"] <= tokens for r in rows if "train/response_length_max" in r)
        # A fresh start: the step counter and the data loader begin again in every stage.
        assert rows[0]["step"] == 1 and rows[0]["train/consumed_samples"] == 4

    # The last export is a model transformers loads, equal to the last stage's final weights.
    from transformers import AutoModelForCausalLM

    from nemo_grpo.checkpoint.dcp_read import load_dcp_state_dict

    exported = AutoModelForCausalLM.from_pretrained(out / "long" / "hf").state_dict()
    trained = load_dcp_state_dict(out / "long" / "checkpoints" / "step_1" / "policy" / "weights")
    for key, value in exported.items():
        assert value.float().equal(trained[key].float()), key
