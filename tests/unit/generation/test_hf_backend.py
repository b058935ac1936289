"""The HF generate backend: sampled-token log-probs, seeds, stops, left padding."""

from __future__ import annotations

import copy

import pytest
import torch

from nemo_grpo.generation.hf_backend import HFGenerationBackend
from nemo_grpo.generation.interface import SamplingParams
from nemo_grpo.models.build import build_random_model, tiny_config


@pytest.fixture(scope="module")
def backend(qwen_math_tokenizer):
    model = build_random_model(tiny_config("qwen2", qwen_math_tokenizer, num_hidden_layers=1), seed=0)
    return HFGenerationBackend(None, qwen_math_tokenizer, model=model, micro_batch_size=4)


def prompts(tok):
    return [tok("1 + 1 =")["input_ids"], tok("What is the sum of two and three? Answer:")["input_ids"]]


def test_logprobs_equal_a_forward_pass_of_the_sampled_tokens(backend, qwen_math_tokenizer):
    params = SamplingParams(n=3, temperature=0.7, max_new_tokens=6, seed=1)
    out = backend.generate(prompts(qwen_math_tokenizer), params)
    assert [r.prompt_index for r in out] == [0, 0, 0, 1, 1, 1]
    for r in out:
        ids = torch.tensor([r.prompt_ids + r.response_ids])
        with torch.no_grad():
            logits = backend.model(ids).logits[0, len(r.prompt_ids) - 1 : -1] / 0.7
        expected = torch.log_softmax(logits, -1).gather(-1, ids[0, len(r.prompt_ids):, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(r.logprobs), expected, rtol=1e-4, atol=1e-4)


def test_same_seed_same_samples_and_samples_differ(backend, qwen_math_tokenizer):
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=5, seed=7)
    a = backend.generate(prompts(qwen_math_tokenizer), params)
    b = backend.generate(prompts(qwen_math_tokenizer), params)
    assert [r.response_ids for r in a] == [r.response_ids for r in b]
    assert len({tuple(r.response_ids) for r in a[:4]}) > 1


def test_stop_token_ends_a_response(backend, qwen_math_tokenizer):
    greedy = backend.generate(prompts(qwen_math_tokenizer)[:1], SamplingParams(temperature=0.0, max_new_tokens=4))[0]
    assert greedy.finish_reason == "length" and len(greedy.response_ids) == 4
    stop_at = greedy.response_ids[1]
    stopped = backend.generate(prompts(qwen_math_tokenizer)[:1],
                               SamplingParams(temperature=0.0, max_new_tokens=4, stop_token_ids=(stop_at,)))[0]
    cut = greedy.response_ids.index(stop_at) + 1
    assert stopped.response_ids == greedy.response_ids[:cut] and stopped.finish_reason == "stop"


def test_a_stop_string_ends_a_response_without_the_batch_padding(qwen_math_tokenizer):
    """Rows that stop on a stop string are padded by `generate` while the others go on; with a pad id
    that is not a stop id, those pads (and their log-probs) must not become response tokens."""
    from tests.integration.tiny_run import answer_token_ids, focus_output_head

    tok = copy.deepcopy(qwen_math_tokenizer)
    tok.pad_token = "<|fim_pad|>"
    assert tok.pad_token_id != tok.eos_token_id
    model = focus_output_head(build_random_model(tiny_config("qwen2", tok), seed=0), answer_token_ids(tok))
    backend = HFGenerationBackend(None, tok, model=model, micro_batch_size=16)
    out = backend.generate(prompts(tok), SamplingParams(n=8, temperature=1.0, max_new_tokens=10, seed=3,
                                                        stop_strings=("3",)))
    # This model writes " 3" at once after the first prompt and "11113" after the second: the first
    # prompt's rows stop early and are padded while the others generate.
    assert {r.finish_reason for r in out} == {"stop"}
    assert min(len(r.response_ids) for r in out) < max(len(r.response_ids) for r in out)
    for r in out:
        assert tok.pad_token_id not in r.response_ids
        assert len(r.logprobs) == len(r.response_ids)
        assert r.text.endswith("3") and "3" not in tok.decode(r.response_ids[:-1])


def test_a_prompts_samples_do_not_depend_on_the_rest_of_the_request(backend, qwen_math_tokenizer):
    """Seeds follow the prompt's index in the whole request: a rank given only the second prompt
    (prompt_offset 1) samples what one engine given both samples for it; the process's own random
    state is untouched."""
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=5)
    state = torch.get_rng_state()
    both = backend.generate(prompts(qwen_math_tokenizer), params)
    assert torch.equal(torch.get_rng_state(), state)
    alone = backend.generate(prompts(qwen_math_tokenizer)[1:], SamplingParams(**{**params.__dict__, "prompt_offset": 1}))
    assert [r.response_ids for r in alone] == [r.response_ids for r in both[3:]]
    assert [r.prompt_index for r in alone] == [0, 0, 0]  # local to the share: the caller shifts it
    shifted = backend.generate(prompts(qwen_math_tokenizer)[1:], params)
    assert [r.response_ids for r in shifted] != [r.response_ids for r in alone]


def test_weight_chunks_refit_another_model_exactly_and_a_wrong_one_is_named(qwen_math_tokenizer):
    from nemo_grpo.policy.refit import weight_chunks

    config = tiny_config("qwen2", qwen_math_tokenizer, num_hidden_layers=1)
    engine = HFGenerationBackend(None, qwen_math_tokenizer, model=build_random_model(config, seed=0))
    policy = build_random_model(config, seed=1)
    counter: dict[str, int] = {}
    chunks = list(weight_chunks(policy, dtype=torch.float32, device=torch.device("cpu"), chunk_bytes=2**20,
                                counter=counter))
    sizes = [sum(t.numel() * t.element_size() for _, t in c) for c in chunks]
    assert len(chunks) > 1 and all(s <= 2**20 or len(c) == 1 for s, c in zip(sizes, chunks))
    assert counter["bytes"] == sum(sizes) == sum(p.numel() * 4 for p in policy.parameters())
    engine.load_weight_chunks(chunks, version=3)
    assert engine.version == 3
    for name, param in policy.named_parameters():
        assert torch.equal(dict(engine.model.named_parameters())[name], param), name
    with pytest.raises(RuntimeError, match="missing .*lm_head.weight"):
        engine.load_weight_chunks([[(n, t) for c in chunks for n, t in c if n != "lm_head.weight"]])


def test_a_tied_head_is_gathered_once_and_cast_to_the_engines_dtype(qwen_math_tokenizer):
    from nemo_grpo.policy.refit import weight_chunks

    tied = build_random_model(tiny_config("qwen2", qwen_math_tokenizer, num_hidden_layers=1,
                                          tie_word_embeddings=True), seed=0)
    chunks = list(weight_chunks(tied, dtype=torch.bfloat16, device=torch.device("cpu"), chunk_bytes=2**30))
    names = [n for c in chunks for n, _ in c]
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    assert {t.dtype for c in chunks for _, t in c} == {torch.bfloat16}
