"""A scored set (evaluation or validation): its prompts and its own sampling settings.

Each set's `num_samples`, `temperature`, `top_p` and `max_new_tokens` default to the run's
(`num_samples` to the caller's default, the rest to the `generation` section); top_k and stop
strings always come from the `generation` section.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from nemo_grpo.data.config import DatasetConfig, PromptConfig

from nemo_grpo.generation.config import GenerationConfig
from nemo_grpo.data.datasets import load_problems
from nemo_grpo.data.prompts import build_prompts
from nemo_grpo.evals.metrics import BREAKDOWN_KEYS
from nemo_grpo.generation.interface import SamplingParams


@dataclass
class ScoredSet:
    name: str
    spec: DatasetConfig
    rows: list[dict[str, Any]]  # build_prompts rows, plus "groups" ({"subject": ..., "level": ...})
    params: SamplingParams  # seed: the set's base seed

    @property
    def max_prompt_tokens(self) -> int:
        return max(len(r["prompt_ids"]) for r in self.rows)

    def fingerprint(self) -> str:
        """A hash of the prompts and gold answers (a changed data file changes it)."""
        digest = hashlib.sha256()
        for r in self.rows:
            digest.update(json.dumps([r["index"], r["prompt"], r["answer"]]).encode())
        return digest.hexdigest()[:16]


def sampling_for(spec: DatasetConfig, gen: GenerationConfig, *, default_n: int,
                 default_max_new_tokens: int | None, stop_token_ids: tuple[int, ...], seed: int) -> SamplingParams:
    """The set's own value where it has one, else the `generation` section's, else the default."""
    pick = lambda own, default: default if own is None else own  # noqa: E731
    max_new_tokens = pick(spec.max_new_tokens, pick(gen.max_new_tokens, default_max_new_tokens))
    if max_new_tokens is None:
        raise ValueError(f"set '{spec.name}': no max_new_tokens (set it on the set or in the generation section)")
    return SamplingParams(
        n=pick(spec.num_samples, default_n), temperature=pick(spec.temperature, gen.temperature),
        top_p=pick(spec.top_p, gen.top_p), top_k=gen.top_k, max_new_tokens=max_new_tokens,
        stop_token_ids=stop_token_ids, stop_strings=tuple(gen.stop_strings), seed=seed,
    )


def load_scored_set(spec: DatasetConfig, *, prompt: PromptConfig, data_dir: str | None, tokenizer: Any,
                    params: SamplingParams, where: str) -> ScoredSet:
    problems = load_problems(spec.name, split=spec.split, path=spec.path, data_dir=data_dir,
                             max_samples=spec.max_samples)
    rows, _ = build_prompts(problems, tokenizer, template=prompt.template, use_chat_template=prompt.use_chat_template,
                            system_prompt=prompt.system_prompt, max_prompt_length=prompt.max_prompt_length,
                            where=f"{where} ({spec.name})")
    for row in rows:
        meta = problems[row["index"]].meta
        row["groups"] = {k: meta[k] for k in BREAKDOWN_KEYS if meta.get(k) is not None}
    return ScoredSet(spec.name, spec, rows, params)


def eos_stop_ids(tokenizer: Any) -> tuple[int, ...]:
    return tuple(t for t in [tokenizer.eos_token_id] if t is not None)
