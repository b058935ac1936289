"""After a real AdamW step and a refit, vLLM's log-probs equal the trainer's (fp32, within 1e-4),
for a tied and an untied tiny Qwen2, the engine in this process (tensors)."""

from __future__ import annotations

import pytest
import torch

from nemo_grpo.generation.interface import SamplingParams
from nemo_grpo.algorithms.numerics import gen_train_kl, token_mult_prob_error
from tests.integration.vllm_helpers import needs_vllm, start_engine, tiny_model, trainer_logprobs

pytestmark = [pytest.mark.vllm, pytest.mark.integration, needs_vllm, pytest.mark.timeout(600)]

TEXTS = ["Compute 12 * 7. Answer:", "The derivative of x^2 is", "Solve for x: 3x + 5 = 20."]


def adamw_step(model, tokenizer) -> None:
    """One real optimizer step (next-token loss on a few texts) that moves every weight."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = tokenizer(TEXTS[0] + " 84", return_tensors="pt")["input_ids"]
    loss = torch.nn.functional.cross_entropy(model(ids).logits[0, :-1], ids[0, 1:])
    loss.backward()
    opt.step()
    model.eval()


def engine_fixed_logprobs(backend, sequences: list[list[int]]) -> list[torch.Tensor]:
    """vLLM's log-probs of the given tokens (positions 1..), via prompt_logprobs."""
    from vllm import SamplingParams as VSP

    outs = backend.llm.generate([{"prompt_token_ids": s} for s in sequences],
                                VSP(max_tokens=1, prompt_logprobs=0, temperature=1.0), use_tqdm=False)
    return [torch.tensor([d[t].logprob for d, t in zip(o.prompt_logprobs[1:], s[1:])]) for o, s in zip(outs, sequences)]


def fixed_trainer_logprobs(model, seq: list[int]) -> torch.Tensor:
    return trainer_logprobs(model, seq[:1], seq[1:])


@pytest.fixture(scope="module", params=[("untied", True), ("tied", True)], ids=["untied-inprocess", "tied-inprocess"])
def refit_case(request, qwen_math_tokenizer, tmp_path_factory):
    kind, in_process = request.param
    model = tiny_model(qwen_math_tokenizer, tied=kind == "tied")
    backend = start_engine(model, qwen_math_tokenizer, tmp_path_factory.mktemp(kind), in_process=in_process)
    sequences = [qwen_math_tokenizer(t)["input_ids"] for t in TEXTS]
    before = [fixed_trainer_logprobs(model, s) for s in sequences]
    adamw_step(model, qwen_math_tokenizer)
    stale = engine_fixed_logprobs(backend, sequences)
    seconds = backend.update_weights(model.state_dict(), version=1)
    yield backend, model, sequences, before, stale, seconds
    backend.shutdown()


def test_refit_path_is_the_expected_one(refit_case, request):
    backend = refit_case[0]
    assert backend.refit_path == "rpc-tensors"


def test_training_step_moved_the_logprobs(refit_case):
    _, model, sequences, before, stale, _ = refit_case
    after = [fixed_trainer_logprobs(model, s) for s in sequences]
    assert max((a - b).abs().max().item() for a, b in zip(after, before)) > 1e-2
    # before the refit the engine still serves the old weights
    assert max((s - b).abs().max().item() for s, b in zip(stale, before)) < 1e-4


def test_fixed_sequences_match_trainer_after_refit(refit_case):
    backend, model, sequences, *_ = refit_case
    for engine, seq in zip(engine_fixed_logprobs(backend, sequences), sequences):
        assert (engine - fixed_trainer_logprobs(model, seq)).abs().max().item() < 1e-4


def test_sampled_tokens_match_trainer_and_metrics_near_one(refit_case):
    backend, model, sequences, *_ = refit_case
    rollouts = backend.generate(sequences, SamplingParams(n=2, max_new_tokens=12, temperature=0.8, seed=5))
    gen = [torch.tensor(r.logprobs) for r in rollouts]
    train = [trainer_logprobs(model, r.prompt_ids, r.response_ids, temperature=0.8) for r in rollouts]
    width = max(len(g) for g in gen)
    pad = lambda xs: torch.stack([torch.nn.functional.pad(x, (0, width - len(x))) for x in xs])  # noqa: E731
    mask = pad([torch.ones(len(g)) for g in gen])
    assert (pad(gen) - pad(train)).abs().max().item() < 1e-4
    assert 1.0 <= token_mult_prob_error(pad(train), pad(gen), mask) < 1.0001
    assert 0.0 <= gen_train_kl(pad(train), pad(gen), mask) < 1e-6


def test_same_version_is_not_sent_again(refit_case):
    backend, model, *_ = refit_case
    assert backend.update_weights(model.state_dict(), version=1) == 0.0


def test_cpu_sleep_frees_the_kv_cache_and_the_weights_and_a_refit_samples_the_same(refit_case):
    """On CPU `sleep` (called while the policy trains) hands back the KV cache's memory and the
    weights' (every parameter and the linear layers' packed copies); the engine then refuses to
    generate until a refit, after which it samples exactly what an engine that never slept samples
    (every cached prompt block dropped: their contents are gone)."""
    backend, model, sequences, *_ = refit_case
    params = SamplingParams(n=2, max_new_tokens=12, temperature=0.8, seed=7)
    awake = backend.generate(sequences, params)  # also leaves the prompts' blocks in the prefix cache
    freed = backend.llm.collective_rpc("nemo_kv_release")[0]
    backend.llm.collective_rpc("nemo_kv_restore")
    assert freed >= 200 * 2**20  # kv_cache_memory_bytes is 256 MiB
    runner = backend.llm.llm_engine.model_executor.driver_worker.worker.model_runner
    engine_model = runner.get_model()
    backend.sleep()
    assert backend._asleep == {"kv_cache", "weights"}
    assert all(t.untyped_storage().nbytes() == 0 for t in runner.kv_caches)
    assert all(p.untyped_storage().nbytes() == 0 for p in engine_model.parameters())
    with pytest.raises(RuntimeError, match="released by sleep"):
        backend.generate(sequences, params)
    assert backend.update_weights(model.state_dict(), version=1) > 0  # the version it had: sent again
    assert backend._asleep == {"kv_cache"}  # the weights are back; the KV cache waits for generate
    backend.sleep()  # refit, then sleep again without sampling: the weights go again
    assert backend._asleep == {"kv_cache", "weights"} and not backend.has_real_weights
    assert all(p.untyped_storage().nbytes() == 0 for p in engine_model.parameters())
    assert backend.update_weights(model.state_dict(), version=1) > 0
    again = backend.generate(sequences, params)
    assert not backend._asleep and all(t.untyped_storage().nbytes() > 0 for t in runner.kv_caches)
    assert [(r.response_ids, r.logprobs) for r in again] == [(r.response_ids, r.logprobs) for r in awake]
