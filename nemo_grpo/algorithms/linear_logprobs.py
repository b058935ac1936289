"""Token log-probs and full-vocabulary entropy straight from the final hidden states: the output
layer (``logits = h W^T + b``) fused with `entropy.logprobs_and_entropy`, so the [N, V] logits of a
whole micro-batch never exist.

With ``z = (h W^T + b) / temperature`` for a token chunk, as in `entropy.py`:

* ``logp[t] = z[t, y_t] - logsumexp(z[t])``
* ``H[t] = logsumexp(z[t]) - sum_v softmax(z[t])_v z[t, v]``

Memory contract: the forward pass walks over the tokens in chunks of ``chunk_size`` rows, computes
that chunk's logits, reduces them to (logp, H) and drops them; it saves only ``h``, ``W``, ``b`` and
the target ids for backward (tensors autograd keeps for an ``nn.Linear`` anyway). The backward pass
recomputes each chunk's logits and, with ``G = dL/dz_raw`` for that chunk (`entropy._chunk_grad`:
``(g_logp * (onehot(y) - p) - g_H * p * (log p + H)) / temperature``):

* ``dL/dh = G W``                        (written chunk by chunk into one [N, H] tensor)
* ``dL/dW = sum over chunks of G^T h``   (accumulated in float32, cast to W's dtype at the end)
* ``dL/db = sum over chunks of G summed over the chunk's tokens``

So at most one chunk of logits (and its few float32 companions) exists at a time: peak temporary
memory ~ 4 * chunk_size * V floats, plus a float32 [V, H] accumulator for ``dL/dW`` when ``W`` is
stored in a lower precision. ``G`` is cast to the logits' dtype before the two matrix products, as
the unfused path's logits gradient is, so bf16 weights keep bf16 matrix products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nemo_grpo.algorithms.entropy import _chunk_grad, _compute_dtype, _forward_chunks


class _LinearLogprobEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, token_ids, temperature, chunk_size):
        flat = hidden.reshape(-1, hidden.shape[-1])
        ids = token_ids.reshape(-1)
        logp, ent = _forward_chunks(flat, ids, temperature, chunk_size, head=lambda h: F.linear(h, weight, bias))
        ctx.save_for_backward(hidden, weight, bias, token_ids)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        ctx.set_materialize_grads(False)  # an unused output (detached entropy) costs no backward work
        return logp.reshape(token_ids.shape), ent.reshape(token_ids.shape)

    @staticmethod
    def backward(ctx, grad_logp, grad_ent):
        hidden, weight, bias, token_ids = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if grad_logp is None and grad_ent is None:
            return None, None, None, None, None, None
        flat = hidden.reshape(-1, hidden.shape[-1])
        ids = token_ids.reshape(-1)
        acc = _compute_dtype(hidden.dtype)
        g_lp = None if grad_logp is None else grad_logp.reshape(-1).to(acc)
        g_h = None if grad_ent is None else grad_ent.reshape(-1).to(acc)
        grad_h = torch.empty_like(flat) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None
        for start in range(0, flat.shape[0], ctx.chunk_size):
            sl = slice(start, start + ctx.chunk_size)
            # the chunk's logits are passed, not kept: freed once their gradient exists
            g = _chunk_grad(F.linear(flat[sl], weight, bias), ids[sl], None if g_lp is None else g_lp[sl],
                            None if g_h is None else g_h[sl], ctx.temperature)
            if grad_b is not None:
                grad_b += g.sum(0)
            g = g.to(flat.dtype)
            if grad_h is not None:
                grad_h[sl] = g @ weight
            if grad_w is not None:
                grad_w += g.T @ flat[sl]
        return (None if grad_h is None else grad_h.reshape(hidden.shape),
                None if grad_w is None else grad_w.to(weight.dtype),
                None if grad_b is None else grad_b.to(bias.dtype), None, None, None)


def linear_logprobs_and_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logp, entropy)``, both float32 (float64 for float64 inputs) of shape ``token_ids.shape``, differentiable w.r.t.
    ``hidden``, ``weight`` and ``bias``; equal to `logprobs_and_entropy(F.linear(hidden, weight,
    bias), token_ids, temperature)` without materialising the logits.

    ``hidden``: [..., H] final hidden states; ``weight``: [V, H] the output layer (for tied embeddings
    the embedding matrix itself: its gradient adds up with the embedding's); ``bias``: [V] or None;
    ``token_ids``: [...] the token each position predicts; ``chunk_size``: tokens per chunk.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if hidden.shape[:-1] != token_ids.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and token_ids {tuple(token_ids.shape)} disagree")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight {tuple(weight.shape)} is not [vocab, {hidden.shape[-1]}]")
    return _LinearLogprobEntropy.apply(hidden, weight, bias, token_ids.long(), float(temperature), int(chunk_size))
