"""Token log-probs and entropy of a causal LM's forward pass, with the output layer fused into the
log-prob computation (`algorithms.linear_logprobs`) so no [tokens, vocab] logits tensor exists.

How it runs under FSDP2: the model's root FSDP unit owns the embeddings, the final norm and
`lm_head`, and all-gathers them in its pre-forward hook (in the compute dtype, bf16 on GPU); only
while the root's `forward` runs is `lm_head.weight` that gathered tensor (outside it, it is a
sharded DTensor, or a freed storage once resharded). So the fused head runs INSIDE the root's
forward: for the duration of one call, `lm_head.forward` is replaced by a function that takes the
final hidden states transformers hands it and returns [..., 2] = (logp, entropy) in place of the
logits. The weight is used, saved for backward and given its gradient exactly as `nn.Linear` would
use it, so FSDP2's unsharding, resharding, mixed precision and gradient reduce-scatter see no
difference, and tied embeddings (one parameter for `embed_tokens` and `lm_head`) add up their two
gradients as before. The alternatives, tried with torch 2.13 on 1 and 2 gloo ranks: calling the
decoder body `model.model` directly skips the root's hooks, and the embedding fails on its sharded
weight ("aten.embedding.default got mixed torch.Tensor and DTensor"); reading `lm_head.weight`
after a root forward does find the gathered Parameter, but only because FSDP2 does not reshard the
root after forward (an implementation detail; after `reshard()` it is a DTensor again).

Only architectures whose causal-LM forward returns `lm_head(hidden)` untouched are fused (Gemma's
logit soft-capping, Cohere's logit scale, Granite's logit scaling act on the logits afterwards);
the others fall back to full logits and the chunked `logprobs_and_entropy`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from nemo_grpo.algorithms.entropy import logprobs_and_entropy
from nemo_grpo.algorithms.linear_logprobs import linear_logprobs_and_entropy

# model_type values whose *ForCausalLM.forward is `logits = self.lm_head(hidden_states[:, keep, :])`
# with nothing applied to the logits afterwards (checked in transformers 5.17-5.19)
PLAIN_HEAD_MODEL_TYPES = frozenset({"qwen2", "qwen3", "llama", "mistral"})


def can_fuse_head(model: torch.nn.Module) -> bool:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return isinstance(head, torch.nn.Linear) and model_type in PLAIN_HEAD_MODEL_TYPES


@contextmanager
def _fused_head(head: torch.nn.Linear, targets: torch.Tensor, temperature: float, chunk_size: int,
                scored: torch.Tensor | None = None, source: torch.Tensor | None = None):
    def forward(hidden: torch.Tensor) -> torch.Tensor:
        if source is not None:  # [M] packed positions, one per target: [M, 2]
            logp, entropy = linear_logprobs_and_entropy(hidden.reshape(-1, hidden.shape[-1])[source], head.weight,
                                                        targets, temperature, chunk_size, bias=head.bias)
            return torch.stack((logp, entropy), dim=-1)
        if scored is None:
            logp, entropy = linear_logprobs_and_entropy(hidden, head.weight, targets, temperature, chunk_size,
                                                        bias=head.bias)
            return torch.stack((logp, entropy), dim=-1)
        # only the positions whose token is scored go through the output layer (a GRPO batch's prompt
        # positions are a large share of its tokens and predict nothing the loss uses)
        logp, entropy = linear_logprobs_and_entropy(hidden[scored], head.weight, targets[scored], temperature,
                                                    chunk_size, bias=head.bias)
        out = torch.zeros((*targets.shape, 2), dtype=logp.dtype, device=logp.device)
        out[scored] = torch.stack((logp, entropy), dim=-1)
        return out

    head.forward = forward  # an instance attribute: parameter names and hooks are untouched
    try:
        yield
    finally:
        del head.forward


def causal_logprobs_and_entropy(model: torch.nn.Module, input_ids: torch.Tensor, *, temperature: float,
                                chunk_size: int = 1024, fused: bool = True, scored: torch.Tensor | None = None,
                                **model_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp, entropy) [B, T-1] of `input_ids` [B, T] (position t scores token t+1) under `model`,
    called as `model(input_ids=input_ids, **model_kwargs)`; fused when `fused` and the architecture
    allows it, else from the full logits. `scored` [B, T-1] (bool): the positions the caller uses;
    the fused head computes only those and gives 0 elsewhere (the full-logits path computes all)."""
    if not (fused and can_fuse_head(model)):
        logits = model(input_ids=input_ids, **model_kwargs).logits
        return logprobs_and_entropy(logits[:, :-1], input_ids[:, 1:], temperature, chunk_size)
    # the last position predicts no token of the row: give it a dummy target and drop its results
    targets = F.pad(input_ids[:, 1:], (0, 1))
    if scored is not None:
        scored = F.pad(scored.bool().to(targets.device), (0, 1), value=False)
    with _fused_head(model.get_output_embeddings(), targets, temperature, chunk_size, scored):
        out = model(input_ids=input_ids, **model_kwargs).logits
    return out[:, :-1, 0], out[:, :-1, 1]


def gathered_logprobs_and_entropy(model: torch.nn.Module, input_ids: torch.Tensor, source: torch.Tensor,
                                  targets: torch.Tensor, *, temperature: float, chunk_size: int = 1024,
                                  fused: bool = True, **model_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp, entropy) [M] of `targets` [M], each predicted from the hidden state at packed position
    `source` [M] of `input_ids` [1, total] (several targets may share a position: a shared prompt's last
    token predicts every response's first token). Fused when allowed; else from the gathered logits."""
    if not (fused and can_fuse_head(model)):
        logits = model(input_ids=input_ids, **model_kwargs).logits
        logp, entropy = logprobs_and_entropy(logits[0, source][None], targets[None], temperature, chunk_size)
        return logp[0], entropy[0]
    with _fused_head(model.get_output_embeddings(), targets, temperature, chunk_size, source=source):
        out = model(input_ids=input_ids, **model_kwargs).logits
    return out[..., 0], out[..., 1]
