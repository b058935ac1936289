"""Validation inside the training loop, on the sets of `data.validation`.

When: before the first step (`grpo.val_at_start`, not again on a resume), every `grpo.val_period`
steps, and after the last step (`grpo.val_at_end`); a step's validation runs before its
checkpoint, so the checkpoint's meta.json carries the scores and `checkpointing.metric_name`
(e.g. `val/aime24/avg@16`) can rank checkpoints for `keep_top_k`.

How: each set is sampled with its own `num_samples` (default 1), `temperature`, `top_p` and
`max_new_tokens` (default: the `generation` section), through the run's generation engine (the
loop refits it first if the policy moved), and graded with the `reward` section. Every validation
of a run uses the same seeds, so two steps differ by their weights only. Logged per set `<name>`:
`val/<name>/avg@n`, `val/<name>/pass@k` for k in 1, 2, 4, ... below n and n itself,
`val/<name>/maj@n`, `response_length_mean`, `truncated_rate`, `no_answer_rate`, `grader_failures`;
and `timing/validation_s` for all sets together.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any

from nemo_grpo.evals.metrics import logged_ks, summarize
from nemo_grpo.evals.score import group_by_problem, sample_and_grade
from nemo_grpo.evals.sets import ScoredSet, eos_stop_ids, load_scored_set, sampling_for
from nemo_grpo.generation.interface import GenerateFn
from nemo_grpo.rewards.config import RewardConfig
from nemo_grpo.trainer.config import GRPOConfig, TrainConfig

log = logging.getLogger(__name__)


def load_validation_sets(cfg: TrainConfig, tokenizer: Any) -> list[ScoredSet]:
    """Every validation set's prompts and sampling settings, built once at setup."""
    sets = []
    for i, spec in enumerate(cfg.data.validation):
        seed = zlib.crc32(f"validation:{cfg.grpo.seed}:{spec.name}".encode()) & 0x7FFFFFFF
        params = sampling_for(spec, cfg.generation, default_n=1, default_max_new_tokens=cfg.max_response_length,
                              stop_token_ids=eos_stop_ids(tokenizer), seed=seed)
        sets.append(load_scored_set(spec, prompt=cfg.data.prompt, data_dir=cfg.data.data_dir, tokenizer=tokenizer,
                                    params=params, where=f"data.validation[{i}]"))
    return sets


def engine_max_len(cfg: TrainConfig, sets: list[ScoredSet]) -> int:
    """The generation engine's context: the training length, or more if a validation set needs it
    (its own max_new_tokens are not bound by the training ones)."""
    need = max((s.max_prompt_tokens + s.params.max_new_tokens for s in sets), default=0)
    limit = cfg.generation.vllm.max_model_len
    if limit is not None and need > limit:
        log.warning("generation.vllm.max_model_len=%d cuts validation responses short (a set needs %d tokens)",
                    limit, need)
    return max(cfg.policy.max_total_sequence_length, need)


def validation_due(step: int, grpo: GRPOConfig, *, last: bool) -> bool:
    """After `step` (>= 1): every `val_period` steps, and after the last step with `val_at_end`."""
    return bool((grpo.val_period and step % grpo.val_period == 0) or (last and grpo.val_at_end))


def run_validation(sets: list[ScoredSet], generate: GenerateFn, reward: RewardConfig, step: int) -> dict[str, float]:
    """Sample and grade every validation set with `generate` (the caller makes sure the engine has
    the weights being validated); `val/<set>/...` metrics and `timing/validation_s`."""
    start = time.perf_counter()
    metrics: dict[str, float] = {}
    for scored in sets:
        records = sample_and_grade(generate, scored.rows, scored.params, reward)
        n = scored.params.n
        summary = summarize(group_by_problem(records), logged_ks(n), breakdown=())
        scores = {k: float(v) for k, v in summary.items() if k not in ("num_problems", "num_samples")}
        metrics.update({f"val/{scored.name}/{k}": v for k, v in scores.items()})
        log.info("validation at step %d: %s avg@%d %.4f pass@%d %.4f maj@%d %.4f (%d problems)", step,
                 scored.name, n, scores[f"avg@{n}"], n, scores[f"pass@{n}"], n, scores[f"maj@{n}"], len(scored.rows))
    metrics["timing/validation_s"] = time.perf_counter() - start
    return metrics
