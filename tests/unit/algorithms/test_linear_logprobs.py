import pytest
import torch
import torch.nn.functional as F

from nemo_grpo.algorithms.entropy import logprobs_and_entropy
from nemo_grpo.algorithms.linear_logprobs import linear_logprobs_and_entropy

N_BATCH, N_TOK, HIDDEN, VOCAB = 3, 7, 16, 37  # 21 tokens: chunks of 4 and 5 leave a short last chunk


def _inputs(dtype=torch.float32, bias=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N_BATCH, N_TOK, HIDDEN, generator=g, dtype=dtype).requires_grad_()
    weight = (torch.randn(VOCAB, HIDDEN, generator=g, dtype=dtype) / HIDDEN**0.5).requires_grad_()
    b = (torch.randn(VOCAB, generator=g, dtype=dtype) * 0.1).requires_grad_() if bias else None
    ids = torch.randint(0, VOCAB, (N_BATCH, N_TOK), generator=g)
    w_lp, w_h = torch.randn(N_BATCH, N_TOK, generator=g), torch.randn(N_BATCH, N_TOK, generator=g)
    return hidden, weight, b, ids, w_lp, w_h


def _loss(lp, ent, w_lp, w_h, entropy_grad):
    return (lp * w_lp).sum() + ((ent if entropy_grad else ent.detach()) * w_h).sum()


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 1024])
@pytest.mark.parametrize("entropy_grad", [True, False])
@pytest.mark.parametrize("bias", [False, True])
def test_equals_unfused_values_and_gradients(chunk_size, entropy_grad, bias):
    hidden, weight, b, ids, w_lp, w_h = _inputs(bias=bias)
    params = [hidden, weight] + ([b] if bias else [])
    lp, ent = linear_logprobs_and_entropy(hidden, weight, ids, temperature=0.7, chunk_size=chunk_size, bias=b)
    grads = torch.autograd.grad(_loss(lp, ent, w_lp, w_h, entropy_grad), params)
    lp_ref, ent_ref = logprobs_and_entropy(F.linear(hidden, weight, b), ids, temperature=0.7)
    grads_ref = torch.autograd.grad(_loss(lp_ref, ent_ref, w_lp, w_h, entropy_grad), params)
    torch.testing.assert_close(lp, lp_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ent, ent_ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    if not entropy_grad:  # the entropy term really reaches the gradient when it is on
        lp_ref, ent_ref = logprobs_and_entropy(F.linear(hidden, weight, b), ids, temperature=0.7)
        with_h = torch.autograd.grad(_loss(lp_ref, ent_ref, w_lp, w_h, True), params)
        assert not torch.allclose(with_h[0], grads_ref[0], atol=1e-4)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 6, (2, 3), generator=g)
    assert torch.autograd.gradcheck(
        lambda h, w, b: linear_logprobs_and_entropy(h, w, ids, temperature=1.3, chunk_size=4, bias=b),
        (hidden, weight, bias))


def test_tied_embedding_gradient_adds_up():
    """The head weight is the embedding matrix: the fused head's gradient and the embedding's add up
    on the one parameter, as with an ordinary linear head."""
    g = torch.Generator().manual_seed(2)  # float64: the check is the gradients' sum, not float32 rounding
    emb = torch.nn.Embedding(VOCAB, HIDDEN, dtype=torch.float64)
    torch.nn.init.normal_(emb.weight, generator=g)
    mix = torch.nn.Linear(HIDDEN, HIDDEN, dtype=torch.float64)
    ids = torch.randint(0, VOCAB, (N_BATCH, N_TOK + 1), generator=g)
    w_lp, w_h = torch.randn(N_BATCH, N_TOK, generator=g), torch.randn(N_BATCH, N_TOK, generator=g)

    def loss(fused: bool):
        hidden = torch.tanh(mix(emb(ids[:, :-1])))
        if fused:
            lp, ent = linear_logprobs_and_entropy(hidden, emb.weight, ids[:, 1:], 0.9, chunk_size=5)
        else:
            lp, ent = logprobs_and_entropy(F.linear(hidden, emb.weight), ids[:, 1:], 0.9)
        return _loss(lp, ent, w_lp, w_h, True)

    fused = torch.autograd.grad(loss(True), [emb.weight, mix.weight])
    ref = torch.autograd.grad(loss(False), [emb.weight, mix.weight])
    for got, want in zip(fused, ref):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_no_logits_sized_tensor_is_saved_for_backward():
    hidden, weight, _, ids, w_lp, w_h = _inputs()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        lp, ent = linear_logprobs_and_entropy(hidden, weight, ids, chunk_size=4)
    assert saved and max(saved) == VOCAB * HIDDEN  # the weight; the hidden states are smaller
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        logprobs_and_entropy(F.linear(hidden, weight), ids, chunk_size=4)
    assert max(saved) == N_BATCH * N_TOK * VOCAB  # the unfused path keeps the logits


def test_bf16_gives_float32_outputs_and_bf16_gradients():
    hidden, weight, _, ids, w_lp, w_h = _inputs(dtype=torch.bfloat16)
    lp, ent = linear_logprobs_and_entropy(hidden, weight, ids, chunk_size=5)
    assert lp.dtype == ent.dtype == torch.float32
    _loss(lp, ent, w_lp, w_h, True).backward()
    assert hidden.grad.dtype == weight.grad.dtype == torch.bfloat16
    lp_ref, ent_ref = logprobs_and_entropy(F.linear(hidden, weight), ids)
    torch.testing.assert_close(lp, lp_ref, rtol=0, atol=0)  # same bf16 logits, same float32 reduction


def test_bad_arguments_are_refused():
    hidden, weight, _, ids, _, _ = _inputs()
    with pytest.raises(ValueError, match="temperature"):
        linear_logprobs_and_entropy(hidden, weight, ids, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_logprobs_and_entropy(hidden, weight, ids, chunk_size=0)
    with pytest.raises(ValueError, match="disagree"):
        linear_logprobs_and_entropy(hidden, weight, ids[:, 1:])
    with pytest.raises(ValueError, match="vocab"):
        linear_logprobs_and_entropy(hidden, weight.T, ids)
