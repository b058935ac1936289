"""Accuracy and speed of our math grader vs math-verify as verl / NeMo RL call it, on one set.

    uv run python bench/grader.py [--labelled tests/fixtures/grader/labelled.jsonl]
                                  [--workers 2] [--write-baseline PATH]

Baseline = verl's ``reward_score/math_verify.compute_score``: the gold wrapped in ``\\boxed{}``,
``math_metric(gold_extraction_target=(LatexExtractionConfig(),),
pred_extraction_target=(ExprExtractionConfig(), LatexExtractionConfig()))`` with math-verify's
default (signal-based) time limits, run in worker processes (their main thread, where those
limits work). Times per answer are measured inside the baseline's worker; ours are the
``elapsed_s`` that ``grade_batch`` reports (extraction, fast path, and the worker round trip).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _baseline_init() -> None:
    import logging

    logging.disable(logging.CRITICAL)
    global _VERIFY
    from math_verify.metric import math_metric
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    _VERIFY = math_metric(
        gold_extraction_target=(LatexExtractionConfig(),),
        pred_extraction_target=(ExprExtractionConfig(), LatexExtractionConfig()),
    )


def _baseline_one(args: tuple[str, str]) -> tuple[bool, float]:
    response, gold = args
    t0 = time.perf_counter()
    score = 0.0
    try:
        score, _ = _VERIFY(["\\boxed{" + gold + "}"], [response])
    except BaseException:  # verl turns every failure into 0
        score = 0.0
    return bool(score >= 1.0), time.perf_counter() - t0


def run_baseline(rows: list[dict], workers: int) -> tuple[list[bool], list[float], float]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_baseline_init) as pool:
        pool.map(_baseline_one, [("\\boxed{1}", "1")] * workers)  # imports done before timing
        t0 = time.perf_counter()
        out = pool.map(_baseline_one, [(r["response"], r["gold"]) for r in rows], chunksize=4)
        wall = time.perf_counter() - t0
    return [o[0] for o in out], [o[1] for o in out], wall


def run_ours(rows: list[dict], workers: int, cli: bool = False) -> tuple[list, float]:
    from nemo_grpo.rewards.config import RewardConfig
    from nemo_grpo.rewards.grade import CLI_TIMEOUT_S
    from nemo_grpo.rewards.math_reward import grade_batch
    from nemo_grpo.rewards.pool import get_pool

    # training default, or the CLI's defaults (reader fallback, 1.5 s limit)
    cfg = RewardConfig(num_workers=workers, no_answer="reader", timeout_s=CLI_TIMEOUT_S) if cli else RewardConfig(num_workers=workers)
    get_pool(cfg.num_workers, cfg.timeout_s).run("debug_sleep", [(0,)] * workers)  # workers up
    t0 = time.perf_counter()
    res = grade_batch([r["response"] for r in rows], [r["gold"] for r in rows], cfg,
                      truncated=[bool(r.get("truncated")) for r in rows])
    return res, time.perf_counter() - t0


def score(rows: list[dict], verdicts: list[bool]) -> dict:
    tp = sum(v and r["label"] for r, v in zip(rows, verdicts))
    fp = sum(v and not r["label"] for r, v in zip(rows, verdicts))
    fn = sum((not v) and r["label"] for r, v in zip(rows, verdicts))
    acc = sum(v == r["label"] for r, v in zip(rows, verdicts)) / len(rows)
    return dict(accuracy=acc, fp=fp, fn=fn, tp=tp)


def timing(times: list[float], wall: float) -> dict:
    ts = sorted(times)
    p99 = ts[min(len(ts) - 1, int(round(0.99 * (len(ts) - 1))))]
    return dict(median_ms=statistics.median(ts) * 1e3, p99_ms=p99 * 1e3, max_ms=ts[-1] * 1e3, per_s=len(ts) / wall)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelled", default=str(ROOT / "tests/fixtures/grader/labelled.jsonl"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--write-baseline", default=None, help="store math-verify's verdict per case id")
    ap.add_argument("--show-errors", action="store_true")
    ap.add_argument("--cli-defaults", action="store_true",
                    help="grade with the CLI's defaults (no_answer=reader, 1.5 s) instead of RewardConfig()")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.labelled, encoding="utf-8")]

    mv_verdicts, mv_times, mv_wall = run_baseline(rows, args.workers)
    ours, our_wall = run_ours(rows, args.workers, args.cli_defaults)
    our_verdicts = [r.correct for r in ours]

    print(f"labelled cases: {len(rows)} ({sum(r['label'] for r in rows)} correct, "
          f"{sum(not r['label'] for r in rows)} wrong); workers: {args.workers}; "
          f"ours with {'CLI defaults (no_answer=reader, timeout 1.5 s)' if args.cli_defaults else 'RewardConfig() (training default)'}")
    header = f"{'grader':<28}{'accuracy':>9}{'FP':>5}{'FN':>5}{'median ms':>11}{'p99 ms':>9}{'max ms':>9}{'answers/s':>11}"
    print(header)
    for name, verdicts, times, wall in (
        ("math-verify (verl call)", mv_verdicts, mv_times, mv_wall),
        ("nemo_grpo", our_verdicts, [r.elapsed_s for r in ours], our_wall),
    ):
        s, t = score(rows, verdicts), timing(times, wall)
        print(f"{name:<28}{s['accuracy']:>9.4f}{s['fp']:>5}{s['fn']:>5}{t['median_ms']:>11.2f}"
              f"{t['p99_ms']:>9.1f}{t['max_ms']:>9.1f}{t['per_s']:>11.1f}")
    for split in sorted({r["split"] for r in rows if "split" in r}):
        idx = [i for i, r in enumerate(rows) if r.get("split") == split]
        sub = [rows[i] for i in idx]
        mv, us = score(sub, [mv_verdicts[i] for i in idx]), score(sub, [our_verdicts[i] for i in idx])
        print(f"  split {split:<8} n={len(idx):<4} math-verify acc {mv['accuracy']:.4f} FP {mv['fp']} FN {mv['fn']}"
              f" | nemo_grpo acc {us['accuracy']:.4f} FP {us['fp']} FN {us['fn']}")
    cats = sorted({r["category"] for r in rows})
    print("\nper category: n, math-verify errors, nemo_grpo errors")
    for c in cats:
        idx = [i for i, r in enumerate(rows) if r["category"] == c]
        mv_err = sum(mv_verdicts[i] != rows[i]["label"] for i in idx)
        our_err = sum(our_verdicts[i] != rows[i]["label"] for i in idx)
        print(f"  {c:<20}{len(idx):>5}{mv_err:>6}{our_err:>6}")
    statuses: dict[str, int] = {}
    for r in ours:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    print("\nnemo_grpo statuses:", json.dumps(statuses, sort_keys=True))
    if args.show_errors:
        for row, r in zip(rows, ours):
            if r.correct != row["label"]:
                print("ERR", row["id"], row["category"], row["label"], repr(row["gold"]), repr(r.extracted), r.reason)
    if args.write_baseline:
        with open(args.write_baseline, "w", encoding="utf-8") as f:
            json.dump({str(r["id"]): v for r, v in zip(rows, mv_verdicts)}, f, indent=0, sort_keys=True)


if __name__ == "__main__":
    main()
