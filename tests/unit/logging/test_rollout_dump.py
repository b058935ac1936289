"""Rollout dumps and the per-step rollout metrics, from real rollouts graded by the real grader."""

from __future__ import annotations

import json

import pytest
import torch

from nemo_grpo.trainer.rollouts import StepRollouts
from nemo_grpo.config import load_config
from nemo_grpo.trainer.config import TrainConfig
from nemo_grpo.generation.interface import Rollout
from nemo_grpo.logging.metrics import rollout_metrics, throughput_metrics
from nemo_grpo.logging.rollout_dump import dump_rollouts, rollout_dump_due
from nemo_grpo.rewards.math_reward import grade_batch

RESPONSES = ["6 + 8 = 14, so \\boxed{14}", "\\boxed{15}", "I think it is 14", "\\boxed{3}", "\\boxed{3", "\\boxed{4}"]
FINISH = ["stop", "stop", "stop", "stop", "length", "stop"]


@pytest.fixture(scope="module")
def collected():
    cfg = load_config(None, ["policy.model_name=x", "reward.answer_format=boxed", "reward.format_weight=0.2"],
                      TrainConfig).reward
    golds = ["14"] * 3 + ["3"] * 3
    grades = grade_batch(RESPONSES, golds, cfg, [f == "length" for f in FINISH])
    rollouts = [Rollout(i // 3, [1, 2], list(range(3 + i)), [-0.5] * (3 + i), FINISH[i], RESPONSES[i])
                for i in range(6)]
    return StepRollouts(rollouts=rollouts, grades=grades, rewards=torch.tensor([g.reward for g in grades]),
                        answers=["14", "3"], prompts=["<chat>What is 6 + 8?</chat>", "<chat>What is 1 + 2?</chat>"],
                        problems=["What is 6 + 8?", "What is 1 + 2?"])


def test_dump_holds_what_a_researcher_reads(tmp_path, collected):
    advantages = torch.linspace(-1, 1, 6)
    path = dump_rollouts(tmp_path, 10, collected, collected.rewards, advantages)
    assert path == tmp_path / "rollouts" / "step_10.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 6
    first, cut = records[0], records[4]
    assert first == {
        "step": 10, "group": 0, "sample": 0, "problem": "What is 6 + 8?", "prompt": "<chat>What is 6 + 8?</chat>",
        "response": RESPONSES[0], "ground_truth": "14", "extracted_answer": "14", "correct": True, "format_ok": True,
        "grade_status": "ok", "reward": pytest.approx(1.2), "advantage": -1.0, "finish_reason": "stop", "length": 3,
    }
    assert (cut["group"], cut["sample"], cut["finish_reason"], cut["length"]) == (1, 1, "length", 7)
    assert records[2]["extracted_answer"] is None and records[2]["correct"] is False
    assert [r["correct"] for r in records] == [True, False, False, True, False, False]
    dump_rollouts(tmp_path, 10, collected, collected.rewards * 0, advantages)  # a resumed run re-runs step 10
    assert all(json.loads(line)["reward"] == 0 for line in path.read_text().splitlines())


def test_dump_period():
    assert [s for s in range(1, 11) if rollout_dump_due(5, s)] == [5, 10]
    assert not any(rollout_dump_due(0, s) for s in range(1, 11))


def test_rollout_metrics(collected):
    m = rollout_metrics(collected.rollouts, collected.grades, collected.rewards, torch.zeros(6), group_size=3)
    assert m["train/correct_rate"] == pytest.approx(2 / 6)
    assert m["train/answer_rate"] == pytest.approx(4 / 6)  # no answer read in "I think it is 14" or "\boxed{3"
    assert m["train/format_rate"] == pytest.approx(4 / 6)
    assert m["train/truncated_rate"] == pytest.approx(1 / 6)
    assert (m["train/solve_none"], m["train/solve_all"]) == (0.0, 0.0)
    assert (m["train/response_length_mean"], m["train/response_length_max"]) == (5.5, 8.0)
    assert m["train/tokens_generated"] == 33.0


def test_throughput_metrics():
    out = throughput_metrics({"train/tokens_generated": 300.0, "timing/generation_s": 3.0,
                              "train/tokens_trained": 200.0, "timing/train_s": 4.0})
    assert out == {"throughput/generation_tokens_per_s": 100.0, "throughput/train_tokens_per_s": 50.0}
    assert throughput_metrics({"train/tokens_generated": 3.0}) == {}
