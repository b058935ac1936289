"""One step's rollouts: groups in prompt order, DAPO's dynamic sampling and its batch limit."""

from __future__ import annotations

import itertools

import pytest

from nemo_grpo.algorithms.config import DapoConfig, OverlongBufferConfig
from nemo_grpo.generation.hf_backend import HFGenerationBackend
from nemo_grpo.generation.interface import SamplingParams
from nemo_grpo.models.build import build_random_model, tiny_config
from nemo_grpo.rewards.config import RewardConfig
from nemo_grpo.trainer.rollouts import collect_rollouts
from tests.integration.tiny_run import answer_token_ids, focus_output_head

GROUP = 4


@pytest.fixture(scope="module")
def engine(qwen_math_tokenizer):
    """A real HF engine on a tiny model that answers "1" or "2" at random."""
    tok = qwen_math_tokenizer
    model = focus_output_head(build_random_model(tiny_config("qwen2", tok), seed=0), answer_token_ids(tok))
    return HFGenerationBackend(None, tok, model=model)


def prompt_stream(tok):
    rows = [{"prompt_ids": tok(f"Problem {i}:")["input_ids"], "answer": str(1 + i % 2), "problem": f"p{i}"}
            for i in range(64)]
    batches = itertools.cycle([rows[i : i + 4] for i in range(0, 64, 4)])
    return lambda: next(batches)


# The tiny model is rarely right, but its responses vary in length: DAPO's overlong shaping turns
# that into rewards that differ within some groups (as in tests/integration/tiny.yaml).
OVERLONG = OverlongBufferConfig(enabled=True, length=6, max_response_length=8)


def collect(engine, tok, dapo: DapoConfig):
    params = SamplingParams(n=GROUP, temperature=1.0, max_new_tokens=8, stop_token_ids=(tok.eos_token_id,), seed=5)
    return collect_rollouts(prompt_stream(tok), engine.generate, params, num_prompts=4, group_size=GROUP,
                            reward=RewardConfig(no_answer="last_number", num_workers=1), dapo=dapo)


def test_groups_come_back_in_prompt_order(engine, qwen_math_tokenizer):
    out = collect(engine, qwen_math_tokenizer, DapoConfig(overlong_buffer=OVERLONG))
    assert out.gen_batches == 1 and out.prompts_drawn == 4
    assert [r.prompt_index for r in out.rollouts] == [g for g in range(4) for _ in range(GROUP)]
    assert out.problems == ["p0", "p1", "p2", "p3"] and len(out.rewards) == 4 * GROUP


@pytest.mark.parametrize("limit", [0, 3])
def test_dynamic_sampling_fills_the_step_with_groups_that_carry_a_signal(engine, qwen_math_tokenizer, limit):
    """`dapo.max_num_gen_batches: 0` is documented as unlimited; it used to draw no batch at all."""
    out = collect(engine, qwen_math_tokenizer, DapoConfig(dynamic_sampling=True, max_num_gen_batches=limit, overlong_buffer=OVERLONG))
    assert len(out.rollouts) == 4 * GROUP and out.gen_batches >= 2
    if limit:
        assert out.gen_batches <= limit
    if limit == 0 or out.filled_groups == 0:
        assert out.filled_groups == 0
        groups = out.rewards.reshape(4, GROUP)
        assert bool((groups.max(1).values > groups.min(1).values).all())  # every kept group has a signal
