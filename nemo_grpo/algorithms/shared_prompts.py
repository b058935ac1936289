"""Packed micro-batches where each distinct prompt runs once (`policy.share_prompts`), pure.

A GRPO batch holds `num_generations_per_prompt` responses to every prompt, each stored as its own
row `prompt + response`. Packed as they are, a group of G rows runs the prompt's tokens G times
through the model; every copy computes the same hidden states, because a prompt token attends only
to earlier prompt tokens. Here a micro-batch's rows with the same prompt become ONE segment: the
prompt's tokens once, then each response, whose position ids continue from the prompt's length and
whose attention sees the prompt and its own earlier tokens (never another response). Each row then
gets exactly the hidden states it gets alone, so the same log-probs, entropies and (the prompt's
hidden states collecting the gradients of all its responses, which is what the per-row copies'
parameter gradients add up to) the same gradients, up to float rounding.

The layout is a list of *pieces*, each a contiguous run of the packed sequence: a prompt piece
attends causally to itself; a response piece attends to its prompt piece (every token) and
causally to itself (`prefix_piece`: the piece index of its prompt, -1 for a piece that attends only
to itself, as every row of plain packing does). Predictions are addressed per row: the log-prob of
token t+1 of row i comes from the hidden state of that row's token t, `node[i, t]` in the packed
sequence, which for the last prompt token is the prompt's shared position (one hidden state, G
different next tokens). So the output layer runs on the gathered hidden states of the scored
positions only, never on [total, vocab].

* `prompt_lengths(batch)`: each row's prompt length, from the response mask.
* `prompt_units(batch, max_tokens)`: rows with the same prompt, in order of first appearance, and
  the tokens each such unit costs when shared (what `algorithms/packing.py` plans micro-batches by).
* `shared_layout(input_ids, attention_mask, prompt_lens)`: the packed layout of one micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nemo_grpo.algorithms.batch import TrainBatch


def prompt_lengths(batch: TrainBatch) -> list[int]:
    """Tokens before each row's first response token (`mask` column t marks token t+1); a row
    without response tokens (a padding row) is all prompt: nothing of it is scored."""
    lengths = batch.attention_mask.sum(-1).tolist()
    has = batch.mask.bool().any(-1).tolist()
    first = batch.mask.bool().int().argmax(-1).tolist()
    return [int(f) + 1 if h else int(n) for f, h, n in zip(first, has, lengths)]


def _rows_by_prompt(input_ids: torch.Tensor, prompt_lens: list[int]) -> list[list[int]]:
    """Row indices grouped by equal prompts (their first `prompt_lens[i]` tokens), in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, length in enumerate(prompt_lens):
        groups.setdefault(tuple(input_ids[row, :length].tolist()), []).append(row)
    return list(groups.values())


def prompt_units(batch: TrainBatch, max_tokens: int) -> tuple[list[list[int]], list[int]]:
    """Rows with the same prompt, in order of first appearance, and the tokens each unit costs
    packed with its prompt once (prompt + every response). A group over `max_tokens` is cut into
    consecutive units that each fit (a single row over the budget stays a unit of its own)."""
    lengths = [int(n) for n in batch.attention_mask.sum(-1).tolist()]
    prompt_lens = prompt_lengths(batch)
    units: list[list[int]] = []
    costs: list[int] = []
    for rows in _rows_by_prompt(batch.input_ids, prompt_lens):
        prompt = prompt_lens[rows[0]]
        for index, row in enumerate(rows):
            extra = lengths[row] - prompt
            if index and costs[-1] + extra <= max_tokens:  # the group's current unit has room
                units[-1].append(row)
                costs[-1] += extra
            else:
                units.append([row])
                costs.append(prompt + extra)
    return units, costs


@dataclass
class SharedLayout:
    """A right-padded micro-batch [B, T] packed with each distinct prompt once."""

    gather: torch.Tensor  # [total] flat indices into the [B*T] inputs (the packed tokens)
    position_ids: torch.Tensor  # [1, total]
    cu_pieces: torch.Tensor  # [pieces+1] int32: piece starts in the packed sequence
    prefix_piece: torch.Tensor  # [pieces] long: the prompt piece a response piece also attends to, or -1
    node: torch.Tensor  # [B, T] long: where token t of row i sits in the packed sequence (-1: padding)
    max_len: int  # the longest piece

    @property
    def total(self) -> int:
        return int(self.gather.numel())

    def predictions(self, scored: torch.Tensor, input_ids: torch.Tensor):
        """For the [B, T-1] bool `scored` positions (column t: token t+1): (rows, cols, the packed
        position whose hidden state predicts them, the token ids they predict)."""
        rows, cols = torch.nonzero(scored, as_tuple=True)
        source = self.node[rows, cols]
        if bool((source < 0).any()):
            raise ValueError("a scored position lies in a row's padding")
        return rows, cols, source, input_ids[rows, cols + 1]


def shared_layout(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_lens: list[int]) -> SharedLayout:
    """The layout of one micro-batch: rows with equal prompts (their first `prompt_lens[i]` tokens)
    form one segment, the prompt once then each row's response; a row whose prompt is its own keeps
    its tokens together (prompt piece, then its response piece)."""
    n_rows, width = input_ids.shape
    lengths = attention_mask.sum(-1).long().tolist()
    gather: list[torch.Tensor] = []
    positions: list[torch.Tensor] = []
    starts, prefix = [0], []
    node = torch.full((n_rows, width), -1, dtype=torch.long)
    total = 0
    for rows in _rows_by_prompt(input_ids, prompt_lens):
        p = prompt_lens[rows[0]]
        prompt_piece = len(prefix)
        if p:
            gather.append(rows[0] * width + torch.arange(p))
            positions.append(torch.arange(p))
            node[rows, :p] = total + torch.arange(p)
            total += p
            starts.append(total)
            prefix.append(-1)
        for row in rows:
            r = int(lengths[row]) - p
            if r <= 0:
                continue
            gather.append(row * width + torch.arange(p, p + r))
            positions.append(torch.arange(p, p + r))
            node[row, p : p + r] = total + torch.arange(r)
            total += r
            starts.append(total)
            prefix.append(prompt_piece if p else -1)
    cu = torch.tensor(starts, dtype=torch.int32)
    sizes = (cu[1:] - cu[:-1]).tolist()
    return SharedLayout(
        gather=torch.cat(gather) if gather else torch.zeros(0, dtype=torch.long),
        position_ids=(torch.cat(positions) if positions else torch.zeros(0, dtype=torch.long))[None, :],
        cu_pieces=cu, prefix_piece=torch.tensor(prefix, dtype=torch.long), node=node,
        max_len=max(sizes) if sizes else 0)


def response_mask(prompt_len: int, response_len: int) -> torch.Tensor:
    """[response_len, prompt_len + response_len] bool: a response token sees the whole prompt and
    itself and the response tokens before it."""
    cols = torch.arange(prompt_len + response_len)
    rows = torch.arange(response_len)
    return (cols[None, :] < prompt_len) | (cols[None, :] - prompt_len <= rows[:, None])
