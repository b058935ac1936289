"""vLLM sampling behaviour: n samples per prompt, seeds, stop tokens / strings, max tokens,
finish reasons, and log-probs equal to an HF forward pass for the sampled tokens."""

from __future__ import annotations

import pytest
import torch

from nemo_grpo.generation.interface import SamplingParams
from tests.integration.vllm_helpers import needs_vllm, start_engine, tiny_model, trainer_logprobs

pytestmark = [pytest.mark.vllm, pytest.mark.integration, needs_vllm, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def engine(qwen_math_tokenizer, tmp_path_factory):
    threads_before = (torch.set_num_threads, torch.get_num_threads())
    model = tiny_model(qwen_math_tokenizer, tied=True, seed=3)
    backend = start_engine(model, qwen_math_tokenizer, tmp_path_factory.mktemp("sampling"))
    prompts = [qwen_math_tokenizer(t)["input_ids"] for t in ["1 + 1 =", "Name a prime:", "Let x = 4. Then"]]
    yield backend, model, prompts
    backend.shutdown()
    # the in-process engine's process-wide thread changes end with it
    assert (torch.set_num_threads, torch.get_num_threads()) == threads_before


def test_n_samples_ordered_distinct_and_reproducible(engine):
    backend, _, prompts = engine
    params = SamplingParams(n=4, max_new_tokens=8, seed=11)
    first = backend.generate(prompts, params)
    assert [r.prompt_index for r in first] == [i for i in range(len(prompts)) for _ in range(4)]
    assert all(r.prompt_ids == prompts[r.prompt_index] for r in first)
    for p in range(len(prompts)):  # random tiny model: 4 samples of 8 tokens never all coincide
        assert len({tuple(r.response_ids) for r in first if r.prompt_index == p}) == 4
    # the same prompt twice in one request must not repeat the same random stream
    twin = backend.generate([prompts[0], prompts[0]], SamplingParams(n=1, max_new_tokens=8, seed=11))
    assert twin[0].response_ids != twin[1].response_ids
    again = backend.generate(prompts, params)
    assert [r.response_ids for r in again] == [r.response_ids for r in first]
    other = backend.generate(prompts, SamplingParams(n=4, max_new_tokens=8, seed=12))
    assert [r.response_ids for r in other] != [r.response_ids for r in first]


def test_max_tokens_gives_length(engine):
    backend, _, prompts = engine
    rollouts = backend.generate(prompts, SamplingParams(n=2, max_new_tokens=5, seed=1))
    assert all(len(r.response_ids) == 5 and r.finish_reason == "length" and r.truncated for r in rollouts)
    assert all(len(r.logprobs) == 5 for r in rollouts)


def test_stop_token_ends_with_stop(engine):
    backend, _, prompts = engine
    free = backend.generate(prompts[:1], SamplingParams(n=1, max_new_tokens=10, seed=2))[0]
    stop_tok = free.response_ids[3]  # a token the seed is known to sample at step 4
    stopped = backend.generate(prompts[:1], SamplingParams(n=1, max_new_tokens=10, seed=2, stop_token_ids=(stop_tok,)))[0]
    cut = free.response_ids.index(stop_tok) + 1
    assert stopped.finish_reason == "stop" and not stopped.truncated
    assert stopped.response_ids == free.response_ids[:cut]  # the stop token is kept, for the trainer
    assert len(stopped.logprobs) == cut


def test_stop_string_ends_with_stop(engine, qwen_math_tokenizer):
    backend, _, prompts = engine
    free = backend.generate(prompts[1:2], SamplingParams(n=1, max_new_tokens=12, seed=4))[0]
    piece = qwen_math_tokenizer.decode(free.response_ids[4:5])
    assert piece.strip(), "test needs a visible token to stop on"
    stopped = backend.generate(prompts[1:2], SamplingParams(n=1, max_new_tokens=12, seed=4, stop_strings=(piece,)))[0]
    assert stopped.finish_reason == "stop"
    assert len(stopped.response_ids) <= 5 and piece not in stopped.text


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_logprobs_equal_hf_forward(engine, temperature):
    """Temperature-scaled log-probs of the sampled tokens (greedy: unscaled), as the trainer's."""
    backend, model, prompts = engine
    rollouts = backend.generate(prompts, SamplingParams(n=2, max_new_tokens=10, temperature=temperature, seed=7))
    for r in rollouts:
        ref = trainer_logprobs(model, r.prompt_ids, r.response_ids, temperature=temperature or 1.0)
        assert torch.allclose(torch.tensor(r.logprobs), ref, atol=1e-4), (temperature, r.logprobs[:3], ref[:3])


def test_generate_before_refit_is_refused(engine):
    backend = engine[0]
    backend.has_real_weights, saved = False, backend.has_real_weights
    try:
        with pytest.raises(RuntimeError, match="update_weights"):
            backend.generate([[1, 2]], SamplingParams(max_new_tokens=2))
    finally:
        backend.has_real_weights = saved


def test_more_prompt_tokens_than_one_engine_step_takes(engine):
    """A validation-sized request: 40 seeded prompts of 240 tokens (9,600 prompt tokens, more than
    one engine step's budget). vLLM-CPU used to split a prompt across steps and then fail to rewind
    its seeded generator ("CPU Generator does not use offset")."""
    backend, _, _ = engine
    prompts = [[1000 + (7 * i + j) % 5000 for j in range(240)] for i in range(40)]
    params = SamplingParams(n=1, max_new_tokens=4, seed=5)
    first = backend.generate(prompts, params)
    assert len(first) == 40 and all(len(r.response_ids) == 4 for r in first)
    assert [r.response_ids for r in backend.generate(prompts, params)] == [r.response_ids for r in first]
