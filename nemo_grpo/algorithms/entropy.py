"""Token log-probs and full-vocabulary entropy from logits, computed in chunks.

For temperature-scaled logits ``z = logits / temperature`` (as verl, NeMo RL and TRL all do):

* ``logp[t] = z[t, y_t] - logsumexp(z[t])``
* ``H[t] = logsumexp(z[t]) - sum_v softmax(z[t])_v z[t, v] = -sum_v p_v log p_v``
  (verl ``entropy_from_logits``, TRL ``entropy_from_logits``, cs336 ``compute_entropy``).

Memory contract: the forward pass walks over the tokens in chunks of ``chunk_size`` rows, working in
float32 (float64 for float64 logits) on one chunk at a time, and saves nothing but the logits
themselves for the backward pass.
The backward pass recomputes the softmax chunk by chunk and writes the gradient into ONE
logits-sized tensor (the gradient itself). So no more than one extra logits-sized tensor is ever
alive (``bench/losses.py`` measures it). Gradients:

* ``d logp / d z = onehot(y) - p``
* ``d H / d z = -p * (log p + H)``

each divided by ``temperature`` for the gradient w.r.t. the raw logits.
"""

from __future__ import annotations

import torch


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32, or float64 for float64 inputs (so that gradcheck can check the float64 math)."""
    return torch.promote_types(dtype, torch.float32)


def _chunk_stats(z: torch.Tensor, ids: torch.Tensor, temperature: float):
    log_p = torch.log_softmax(z.to(_compute_dtype(z.dtype)) / temperature, dim=-1)
    del z  # a chunk's logits computed for this call are freed here (a caller's view just dropped)
    token_logp = log_p.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    p = log_p.exp()
    entropy = -(p * log_p).sum(-1)
    return log_p, p, token_logp, entropy


def _chunk_grad(z: torch.Tensor, ids: torch.Tensor, g_lp: torch.Tensor | None, g_h: torch.Tensor | None,
                temperature: float) -> torch.Tensor:
    """Gradient (float32, or float64) w.r.t. one chunk of raw logits ``z`` [C, V], given the upstream
    gradients of its log-probs and entropies [C] (None where that output gets no gradient)."""
    log_p, p, _, entropy = _chunk_stats(z, ids, temperature)
    del z
    # in place where a chunk-sized buffer is done with (log_p, then p): two [C, V] temporaries fewer,
    # the same products and sums in the same order
    if g_h is not None:
        grad = (g_h[:, None] * p).mul_(log_p.add_(entropy[:, None])).neg_()
        if g_lp is not None:
            grad -= p.mul_(g_lp[:, None])
    elif g_lp is not None:
        grad = p.mul_(g_lp[:, None]).neg_()
    else:
        grad = torch.zeros_like(p)
    if g_lp is not None:
        grad.scatter_add_(-1, ids[:, None], g_lp[:, None])
    return grad.div_(temperature)


def _forward_chunks(rows: torch.Tensor, ids: torch.Tensor, temperature: float, chunk_size: int,
                    head=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token log-probs and entropies of `rows` ([N, V] logits, or [N, H] hidden states when `head`
    maps a chunk of them to logits), one chunk of `chunk_size` rows at a time."""
    logp = torch.empty(ids.shape, dtype=_compute_dtype(rows.dtype), device=rows.device)
    ent = torch.empty_like(logp)
    for start in range(0, rows.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        # no name holds a chunk's logits: they are freed inside `_chunk_stats`, before the next chunk's
        _, _, logp[sl], ent[sl] = _chunk_stats(rows[sl] if head is None else head(rows[sl]), ids[sl], temperature)
    return logp, ent


class _LogprobEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, token_ids, temperature, chunk_size):
        flat = logits.reshape(-1, logits.shape[-1])
        ids = token_ids.reshape(-1)
        logp, ent = _forward_chunks(flat, ids, temperature, chunk_size)
        ctx.save_for_backward(logits, token_ids)
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        shape = token_ids.shape
        return logp.reshape(shape), ent.reshape(shape)

    @staticmethod
    def backward(ctx, grad_logp, grad_ent):
        logits, token_ids = ctx.saved_tensors
        flat = logits.reshape(-1, logits.shape[-1])
        ids = token_ids.reshape(-1)
        g_lp = None if grad_logp is None else grad_logp.reshape(-1).to(_compute_dtype(logits.dtype))
        g_h = None if grad_ent is None else grad_ent.reshape(-1).to(_compute_dtype(logits.dtype))
        grad = torch.empty_like(flat)
        temp = ctx.temperature
        for start in range(0, flat.shape[0], ctx.chunk_size):
            sl = slice(start, start + ctx.chunk_size)
            grad[sl] = _chunk_grad(flat[sl], ids[sl], None if g_lp is None else g_lp[sl],
                                   None if g_h is None else g_h[sl], temp).to(grad.dtype)
        return grad.reshape(logits.shape), None, None, None


def logprobs_and_entropy(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logp, entropy)``, both float32 (float64 for float64 logits) of shape ``token_ids.shape``, differentiable.

    ``logits``: [..., V] raw (un-tempered) logits in any float dtype; ``token_ids``: [...] the sampled
    tokens; ``chunk_size``: tokens per chunk (peak temporary memory ~ 4 * chunk_size * V floats).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if logits.shape[:-1] != token_ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and token_ids {tuple(token_ids.shape)} disagree")
    return _LogprobEntropy.apply(logits, token_ids.long(), float(temperature), int(chunk_size))


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0, chunk_size: int = 1024) -> torch.Tensor:
    """Full-vocabulary entropy [...] of ``logits / temperature`` (chunked, differentiable)."""
    dummy_ids = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
    return logprobs_and_entropy(logits, dummy_ids, temperature, chunk_size)[1]
