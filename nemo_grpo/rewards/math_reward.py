"""The math reward: batch grading of responses against gold answers.

Extraction and the exact fast paths run in the calling process; only comparisons that need sympy
go to the worker pool (``pool.py``), deduplicated within the batch (a GRPO group repeats answers).
Call ``grade_batch`` from the driver or from a Ray actor; it is safe from any thread.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from nemo_grpo.rewards.config import RewardConfig
from nemo_grpo.rewards.equivalence import _split_top, fast_equal, pathological
from nemo_grpo.rewards.extract import MAX_ANSWER_CHARS, extract_answer, gold_answer
from nemo_grpo.rewards.format_reward import format_ok
from nemo_grpo.rewards.normalize import clean
from nemo_grpo.rewards.pool import GraderPool, get_pool

STATUSES = ("ok", "no_answer", "truncated", "timeout", "error")
MAX_RESPONSE_CHARS = 200_000  # only the tail of a longer response is read


@dataclass
class GradeResult:
    correct: bool  # the extracted answer is equivalent to the gold
    extracted: str | None  # the final answer read from the response (None: none found)
    reason: str  # why: fast_equal, engine_equal, engine_different, hedged, no_answer, ...
    status: str  # ok | no_answer | truncated | timeout | error
    elapsed_s: float  # wall time spent on this response (extraction + comparison)
    format_ok: bool  # well-formed for the configured answer format (see format_reward.py)
    reward: float  # correct (or failure_reward) + format_weight * format_ok
    source: str = "none"  # boxed | answer_tag | final_answer | last_number | none
    hedge: str | None = None  # "or" / "multi_box" when several final answers were given

    def to_dict(self) -> dict:
        return asdict(self)


def _finish(r: GradeResult, cfg: RewardConfig) -> GradeResult:
    base = 1.0 if r.correct else (cfg.failure_reward if r.status in ("timeout", "error") else 0.0)
    r.reward = base + cfg.format_weight * float(r.format_ok)
    return r


def grade_batch(
    responses: list[str],
    golds: list[str],
    config: RewardConfig | None = None,
    truncated: list[bool] | None = None,
    pool: GraderPool | None = None,
) -> list[GradeResult]:
    """Grade ``responses[i]`` against ``golds[i]``; one GradeResult per response, same order.

    ``truncated[i]`` marks a response cut by the length limit (no EOS). ``pool`` defaults to the
    process-wide pool of ``config.num_workers`` workers, started on first use.
    """
    cfg = config or RewardConfig()
    if len(responses) != len(golds):
        raise ValueError(f"grade_batch: {len(responses)} responses but {len(golds)} golds")
    flags = truncated if truncated is not None else [False] * len(responses)
    if len(flags) != len(responses):
        raise ValueError(f"grade_batch: {len(responses)} responses but {len(flags)} truncated flags")
    results: list[GradeResult] = []
    engine_jobs: dict[tuple[str, str], list[int]] = {}
    for i, (resp, gold) in enumerate(zip(responses, golds)):
        t0 = time.perf_counter()
        resp = resp[-MAX_RESPONSE_CHARS:]
        gold = gold_answer(str(gold))
        reader, last_number = cfg.no_answer == "reader", cfg.no_answer == "last_number"
        ex = extract_answer(resp, cfg.answer_format, allow_last_number=last_number, reader=reader)
        parts = len(_split_top(clean(gold))) if "," in gold else 1
        if parts > 1 and ex.source in ("boxed", "answer_tag") and len(ex.alternatives or (ex.answer,)) < parts:
            wider = extract_answer(resp, cfg.answer_format, allow_last_number=last_number, reader=reader, want=parts)
            if len(wider.alternatives) == parts:  # several boxed parts answering one question
                ex = wider
        fmt = format_ok(resp, cfg.answer_format, ex, flags[i])
        r = GradeResult(False, ex.answer, "", "ok", 0.0, fmt, 0.0, ex.source, ex.hedge)
        if flags[i] and cfg.truncated == "zero":
            r.status, r.reason = "truncated", "truncated"
        elif ex.answer is None or not ex.answer.strip():
            r.status, r.reason = "no_answer", "no_answer"
        elif len(ex.answer) > MAX_ANSWER_CHARS:
            r.reason = "answer_too_long"
        else:
            decided = fast_equal(ex.answer, str(gold), cfg.percent)  # bounded work, no sympy
            if decided is None and (why := pathological(clean(ex.answer))) is not None:
                r.reason = f"pred_{why}"  # rejected here: sympy never sees it
            elif decided is None:
                engine_jobs.setdefault((ex.answer, str(gold)), []).append(i)
            else:
                r.correct, r.reason = decided, "fast_equal" if decided else "fast_different"
        if r.hedge and not r.correct and r.status == "ok":
            r.reason = f"hedged_{r.hedge}"
        r.elapsed_s = time.perf_counter() - t0
        results.append(r)
    if engine_jobs:
        keys = list(engine_jobs)
        the_pool = pool or get_pool(cfg.num_workers, cfg.timeout_s)
        outs = the_pool.run("engine_equal", [(p, g, cfg.percent) for p, g in keys], timeout_s=cfg.timeout_s)
        for key, out in zip(keys, outs):
            for i in engine_jobs[key]:
                r = results[i]
                r.elapsed_s += out.elapsed_s
                if out.status == "ok":
                    r.correct, r.reason = out.value
                    if r.hedge and not r.correct:
                        r.reason = f"hedged_{r.hedge}"
                else:
                    r.status, r.reason = out.status, f"grader_{out.status}: {out.value}" if out.value else f"grader_{out.status}"
    return [_finish(r, cfg) for r in results]


def summarize(results: list[GradeResult]) -> dict[str, float]:
    """Metrics to log each step: accuracy, format rate, and counts of every status."""
    n = max(1, len(results))
    out = {
        "reward/accuracy": sum(r.correct for r in results) / n,
        "reward/format_ok": sum(r.format_ok for r in results) / n,
        "reward/mean": sum(r.reward for r in results) / n,
        "reward/hedged": float(sum(r.hedge is not None for r in results)),
    }
    for s in STATUSES:
        out[f"reward/status_{s}"] = float(sum(r.status == s for r in results))
    out["reward/grader_max_s"] = max((r.elapsed_s for r in results), default=0.0)
    return out
