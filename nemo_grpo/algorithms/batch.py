"""The batch that crosses from the driver to the policy workers, and its pure helpers.

Sequences are prompt + response token ids, right-padded to the longest in the batch. Every
per-token tensor is [B, T-1] and aligned with the *predicted* tokens: column t holds the value for
token t+1 of `input_ids` (predicted from logits at position t). `mask` is 1 on response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class TrainBatch:
    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long
    mask: torch.Tensor  # [B, T-1] float: 1 on response tokens
    advantages: torch.Tensor  # [B, T-1] float
    gen_logprobs: torch.Tensor  # [B, T-1] float: the engine's sampling log-probs
    rewards: torch.Tensor  # [B] float
    old_logprobs: torch.Tensor | None = None  # [B, T-1]
    ref_logprobs: torch.Tensor | None = None  # [B, T-1]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor | list[int] | slice) -> "TrainBatch":
        """Rows `index` of every tensor, trimmed to the longest remaining sequence."""
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            picked[f.name] = None if value is None else value[index]
        out = TrainBatch(**picked)
        return out.trim()

    def trim(self) -> "TrainBatch":
        length = int(self.attention_mask.sum(-1).max()) if len(self) else 1
        if length >= self.input_ids.shape[1]:
            return self
        cut = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value.dim() == 1:
                cut[f.name] = value
            elif f.name in ("input_ids", "attention_mask"):
                cut[f.name] = value[:, :length]
            else:
                cut[f.name] = value[:, : length - 1]
        return replace(self, **cut)


def pack_rollouts(
    prompt_ids: list[list[int]], response_ids: list[list[int]], gen_logprobs: list[list[float]],
    advantages: torch.Tensor, rewards: torch.Tensor, pad_id: int,
) -> TrainBatch:
    """Build a TrainBatch from per-response lists; `advantages` and `rewards` are [B] scalars."""
    lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    width = max(lengths)
    n = len(lengths)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width - 1))
    gen = torch.zeros((n, width - 1))
    for row, (p, r, lp) in enumerate(zip(prompt_ids, response_ids, gen_logprobs)):
        seq = list(p) + list(r)
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[row, : len(seq)] = 1
        start = len(p) - 1  # column of the first response token
        mask[row, start : start + len(r)] = 1.0
        gen[row, start : start + len(r)] = torch.tensor(lp, dtype=torch.float32)
    adv = advantages.reshape(-1, 1).to(torch.float32) * mask
    return TrainBatch(input_ids, attention, mask, adv, gen, rewards.to(torch.float32))


def split_even(n: int, parts: int) -> list[slice]:
    """`parts` contiguous slices covering range(n), sizes differing by at most one."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append(slice(start, start + size))
        start += size
    return out
