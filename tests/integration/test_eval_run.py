"""examples/run_eval.py on a tiny model and a 5-problem slice: outputs, numbers, resume, refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nemo_grpo.cli import run_cli
from nemo_grpo.config import load_config
from nemo_grpo.evals.config import EvalConfig
from nemo_grpo.evals import majority_vote, pass_at_k
from nemo_grpo.evals.runner import run_evaluation
from nemo_grpo.models.build import build_random_model, tiny_config
from tests.conftest import REPO_ROOT
from tests.integration.vllm_helpers import needs_vllm

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

N, PROBLEMS = 4, 5
SUBJECTS = ["Algebra", "Geometry", "Algebra", "Precalculus", "Geometry"]


def make_coin_model_dir(out: Path, tokenizer) -> Path:
    """A random tiny model that answers its problems with "1" or "2", each with probability 1/2
    (the two output rows are equal, aligned with the prompts' last hidden states, every other row
    is 0), saved with `problems.jsonl`: problems with gold 1 or 2, a subject and a level."""
    rows = [{"problem": f"Problem {i}: answer {1 + i % 2}.", "answer": str(1 + i % 2), "subject": SUBJECTS[i],
             "level": 1 + i % 3} for i in range(PROBLEMS)]
    model = build_random_model(tiny_config("qwen2", tokenizer), seed=0)
    with torch.no_grad():
        ids = [torch.tensor([tokenizer(r["problem"])["input_ids"]]) for r in rows]
        last = [model(x, output_hidden_states=True).hidden_states[-1][0, -1] for x in ids]
        mean = torch.stack(last).mean(0)
        head = model.get_output_embeddings().weight
        head.zero_()
        for token in ("1", "2"):
            head[tokenizer.convert_tokens_to_ids(token)] = mean / mean.norm() ** 2 * 30.0  # logit ~30 on these prompts
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


@pytest.fixture(scope="module")
def coin_model(tmp_path_factory, qwen_math_tokenizer):
    return make_coin_model_dir(tmp_path_factory.mktemp("coin") / "model", qwen_math_tokenizer)


def eval_overrides(model: Path, out_dir: Path, *extra: str) -> list[str]:
    """configs/eval/math500.yaml (n=4, T=0.8, top_p=0.95) on the tiny model's 5 problems, 2 per chunk."""
    return [f"generation.model_name={model}", "generation.backend=hf", "generation.max_new_tokens=1",
            f"data.datasets=[{{name: tiny, path: {model / 'problems.jsonl'}}}]", "data.prompt.template=bare",
            "data.prompt.use_chat_template=false", "reward.no_answer=last_number", "reward.truncated=grade",
            "precision=float32", "problems_per_chunk=2", f"output_dir={out_dir}", *extra]


MATH500 = str(REPO_ROOT / "configs" / "eval" / "math500.yaml")


def run_eval_script(model: Path, out_dir: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "run_eval.py"), "--config", MATH500,
                           *eval_overrides(model, out_dir, *extra)],
                          cwd=REPO_ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def straight_eval(coin_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    proc = run_eval_script(coin_model, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout


def test_eval_writes_samples_summary_and_report_with_consistent_numbers(straight_eval):
    out, stdout = straight_eval
    folder = out / "tiny"
    samples = read_jsonl(folder / "samples.jsonl")
    summary = json.loads((folder / "summary.json").read_text())
    assert len(samples) == PROBLEMS * N
    for rec in samples:
        assert {"problem", "response", "extracted", "correct", "gold", "subject", "level"} <= set(rec)
        assert rec["response"] in ("1", "2") and rec["extracted"] == rec["response"]
        assert rec["correct"] == (rec["response"] == rec["gold"])
    by_problem = {}
    for rec in samples:
        by_problem.setdefault(rec["problem_id"], []).append(rec)
    correct = [sum(r["correct"] for r in recs) for recs in by_problem.values()]
    assert 0 < sum(correct) < PROBLEMS * N, "the coin model should be right about half the time"
    assert summary["num_problems"] == PROBLEMS and summary["num_samples"] == N
    assert summary[f"avg@{N}"] == pytest.approx(sum(correct) / (PROBLEMS * N))
    for k in range(1, N + 1):
        assert summary[f"pass@{k}"] == pytest.approx(sum(pass_at_k(N, c, k) for c in correct) / PROBLEMS)
    maj = [recs[majority_vote([r["extracted"] for r in recs])]["correct"] for recs in by_problem.values()]
    assert summary[f"maj@{N}"] == pytest.approx(sum(maj) / PROBLEMS)
    algebra = [c for c, recs in zip(correct, by_problem.values()) if recs[0]["subject"] == "Algebra"]
    assert summary["by"]["subject"]["Algebra"][f"avg@{N}"] == pytest.approx(sum(algebra) / (len(algebra) * N))
    assert set(summary["by"]["level"]) == {"1", "2", "3"}
    assert summary["settings"]["sampling"]["temperature"] == 0.8 and summary["settings"]["sampling"]["n"] == N
    report = (folder / "report.md").read_text()
    for text in (f"| avg@{N} |", f"| pass@{N} |", f"| maj@{N} |", "## By subject", "## By level",
                 "## Right samples", "## Wrong samples"):
        assert text in report
    assert f"tiny: avg@{N} {summary[f'avg@{N}']:.4f}" in stdout


def test_killed_eval_resumes_and_ends_as_the_uninterrupted_one(coin_model, straight_eval, tmp_path):
    proc = run_eval_script(coin_model, tmp_path, env={"NEMO_GRPO_INJECT_FAULT": "eval_chunk:1"})
    assert proc.returncode == 17, proc.stdout + proc.stderr  # killed right after the first chunk was saved
    samples = tmp_path / "tiny" / "samples.jsonl"
    assert len(read_jsonl(samples)) == 2 * N and not (tmp_path / "tiny" / "summary.json").exists()
    with samples.open("a") as f:
        f.write('{"chunk": 1, "problem_id": 2, "sam')  # a line cut by a kill in the middle of a write
    summaries = run_evaluation(load_config(MATH500, eval_overrides(coin_model, tmp_path), EvalConfig))
    expected = straight_eval[0] / "tiny"
    assert read_jsonl(samples) == read_jsonl(expected / "samples.jsonl")
    straight = json.loads((expected / "summary.json").read_text())
    drop = lambda s: {k: v for k, v in s.items() if k != "generation_s_this_run"}  # noqa: E731
    assert drop(summaries["tiny"]) == drop(straight)


def test_resume_with_other_settings_is_refused(coin_model, straight_eval, capsys):
    out = straight_eval[0]
    before = (out / "tiny" / "samples.jsonl").read_text()
    argv = ["--config", MATH500, *eval_overrides(coin_model, out, "num_samples=2")]
    rc = run_cli(argv, description="eval", schema=EvalConfig, main=lambda cfg, args: run_evaluation(cfg) and 0)
    err = capsys.readouterr().err
    assert rc == 2 and "refusing to resume" in err and "sampling.n: saved 4, now 2" in err
    assert (out / "tiny" / "samples.jsonl").read_text() == before


@pytest.mark.vllm
@needs_vllm
def test_vllm_eval_samples_from_the_saved_weights(coin_model, tmp_path):
    cfg = load_config(MATH500, eval_overrides(coin_model, tmp_path, "generation.backend=vllm", "num_samples=2",
                                              "generation.vllm.enforce_eager=true",
                                              f"generation.vllm.kv_cache_memory_bytes={256 * 2**20}"), EvalConfig)
    summary = run_evaluation(cfg)["tiny"]
    responses = [r["response"] for r in read_jsonl(tmp_path / "tiny" / "samples.jsonl")]
    assert len(responses) == PROBLEMS * 2 and set(responses) <= {"1", "2"}  # dummy weights would say anything
    assert summary["settings"]["backend"] == "vllm"
