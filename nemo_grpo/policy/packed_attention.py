"""Attention for packed micro-batches: one [1, total] sequence of several rows, none attending to
another, registered with transformers' `AttentionInterface` as `PACKED_ATTENTION`.

The model is called with `position_ids` restarting at 0 for every row and the rows' starts as
`cu_seq_lens_q` / `cu_seq_lens_k` (with `max_length_q` / `max_length_k`: the names of
transformers' `FlashAttentionKwargs`, which the decoder layers pass through to the attention
function). Because the name is not a mask implementation of transformers, the model builds no
[total, total] mask at all.

This path is device-agnostic and exact: each row runs causal SDPA on its own slice of q, k, v
(GQA handled by transformers' `sdpa_attention_forward`), so every row gets the same attention as
it gets alone or right-padded in a batch. Cost: one SDPA call per row per layer. On CUDA, the place
for torch's varlen flash kernel is `_attend_rows`: `torch.nn.attention.varlen.varlen_attn(q, k, v,
cu_seq, cu_seq, max_len, max_len, is_causal=True)` on the [total, heads, dim] views (KV heads
repeated where its build has no `enable_gqa`), one call for all rows. That GPU path is not written
here because it has not been run.

With `policy.share_prompts` the packed sequence holds each distinct prompt once
(`algorithms/shared_prompts.py`): the model is also given `prefix_piece`, and the pieces of
`cu_seq_lens_q` are prompts (causal over themselves) and responses, whose queries attend to their
prompt piece's keys and causally to their own ([response, prompt + response] boolean mask).
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from nemo_grpo.algorithms.shared_prompts import response_mask

PACKED_ATTENTION = "nemo_grpo_packed"


def _attend_rows(module, query, key, value, cu_seqlens, dropout, scaling):
    bounds = cu_seqlens.tolist()
    outs = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if stop > start:
            out, _ = sdpa_attention_forward(module, query[:, :, start:stop], key[:, :, start:stop],
                                            value[:, :, start:stop], None, dropout=dropout, scaling=scaling,
                                            is_causal=True)
            outs.append(out)
    return torch.cat(outs, dim=1)  # [1, total, heads, dim], like sdpa_attention_forward


def _attend_pieces(module, query, key, value, cu_pieces, prefix_piece, dropout, scaling):
    bounds, prefix = cu_pieces.tolist(), prefix_piece.tolist()
    outs = []
    for piece, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        if stop <= start:
            continue
        if prefix[piece] < 0:
            out, _ = sdpa_attention_forward(module, query[:, :, start:stop], key[:, :, start:stop],
                                            value[:, :, start:stop], None, dropout=dropout, scaling=scaling,
                                            is_causal=True)
        else:
            p_start, p_stop = bounds[prefix[piece]], bounds[prefix[piece] + 1]
            keys = torch.cat((key[:, :, p_start:p_stop], key[:, :, start:stop]), dim=2)
            values = torch.cat((value[:, :, p_start:p_stop], value[:, :, start:stop]), dim=2)
            mask = response_mask(p_stop - p_start, stop - start).to(query.device)[None, None]
            out, _ = sdpa_attention_forward(module, query[:, :, start:stop], keys, values, mask, dropout=dropout,
                                            scaling=scaling, is_causal=False)
        outs.append(out)
    return torch.cat(outs, dim=1)


def packed_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, sliding_window: int | None = None,
                             cu_seq_lens_q: torch.Tensor | None = None, cu_seq_lens_k: torch.Tensor | None = None,
                             prefix_piece: torch.Tensor | None = None, **kwargs):
    """q, k, v: [1, heads, total, dim]; returns ([1, total, heads, dim], None)."""
    if cu_seq_lens_q is None or cu_seq_lens_k is None:
        raise ValueError(f"{PACKED_ATTENTION} attention needs cu_seq_lens_q / cu_seq_lens_k (a packed micro-batch)")
    if query.shape[0] != 1:
        raise ValueError(f"{PACKED_ATTENTION} attention takes one packed sequence, got batch {query.shape[0]}")
    if sliding_window is not None:
        raise NotImplementedError(f"{PACKED_ATTENTION} attention: sliding-window layers are not supported")
    if not torch.equal(cu_seq_lens_q, cu_seq_lens_k):
        raise ValueError(f"{PACKED_ATTENTION} attention: queries and keys must have the same rows")
    if prefix_piece is not None:
        return _attend_pieces(module, query, key, value, cu_seq_lens_q, prefix_piece, dropout, scaling), None
    return _attend_rows(module, query, key, value, cu_seq_lens_q, dropout, scaling), None


AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
