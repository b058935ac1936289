"""Re-grade a generation dump: ``python -m nemo_grpo.rewards.grade --input IN.jsonl --output OUT.jsonl``.

Each input row needs ``response`` and ``gold`` (``answer`` is accepted for ``gold``); optional
``truncated`` (bool) or ``finish_reason`` ("length" means truncated). Each output row, in input
order, is the input row plus ``correct``, ``extracted``, ``reason``, ``status``, ``elapsed_s``,
``format_ok`` and ``reward``. A summary (accuracy and the count of every status) goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from nemo_grpo.rewards.config import RewardConfig
from nemo_grpo.rewards.math_reward import grade_batch, summarize
from nemo_grpo.rewards.pool import shutdown_pool


CLI_TIMEOUT_S = 1.5


def _read_rows(path: str) -> list[dict]:
    """The input rows; a line that cannot be read ends the command with one line naming it, exit 2."""

    def refuse(message: str) -> SystemExit:
        print(f"error: {message}", file=sys.stderr)
        return SystemExit(2)

    rows = []
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise refuse(f"{path}:{n}: not UTF-8 text (byte {exc.start + 1} of the line)") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise refuse(f"{path}:{n}: not a JSON row ({exc.msg} at column {exc.colno})") from None
                if not isinstance(row, dict) or "response" not in row or ("gold" not in row and "answer" not in row):
                    raise refuse(f"{path}:{n}: a row needs 'response' and 'gold'")
                rows.append(row)
    except OSError as exc:
        raise refuse(f"{path}: cannot read the input ({exc.strerror or exc})") from None
    return rows


def _is_truncated(row: dict) -> bool:
    return bool(row.get("truncated")) or row.get("finish_reason") == "length"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="JSONL with 'response' and 'gold' per row")
    ap.add_argument("--output", required=True, help="JSONL to write, one graded row per input row")
    defaults = RewardConfig()
    ap.add_argument("--answer-format", default=defaults.answer_format, choices=["auto", "boxed", "answer_tag"])
    ap.add_argument("--no-answer", default=None, choices=["zero", "reader", "last_number"],
                    help="responses without box/tag/phrase: default 'reader' (what a reader finds) "
                         "for auto, 'zero' for boxed / answer_tag")
    ap.add_argument("--truncated", default=defaults.truncated, choices=["zero", "grade"])
    ap.add_argument("--percent", default=defaults.percent, choices=["either", "number", "fraction"])
    ap.add_argument("--timeout-s", type=float, default=CLI_TIMEOUT_S,
                    help="per-answer limit (1.5 s: a few series answers need 1-1.4 s of sympy)")
    ap.add_argument("--num-workers", type=int, default=defaults.num_workers)
    ap.add_argument("--format-weight", type=float, default=defaults.format_weight)
    ap.add_argument("--batch-size", type=int, default=512, help="rows graded per call")
    args = ap.parse_args(argv)
    cfg = RewardConfig(
        answer_format=args.answer_format,
        no_answer=args.no_answer or ("reader" if args.answer_format == "auto" else "zero"),
        truncated=args.truncated,
        percent=args.percent,
        timeout_s=args.timeout_s,
        num_workers=args.num_workers,
        format_weight=args.format_weight,
    )
    cfg.validate()
    rows = _read_rows(args.input)
    t0 = time.perf_counter()
    results = []
    try:
        for start in range(0, len(rows), args.batch_size):
            chunk = rows[start : start + args.batch_size]
            results += grade_batch(
                [str(r["response"]) for r in chunk],
                [str(r.get("gold", r.get("answer"))) for r in chunk],
                cfg,
                truncated=[_is_truncated(r) for r in chunk],
            )
    finally:
        shutdown_pool()
    with open(args.output, "w", encoding="utf-8") as f:
        for row, res in zip(rows, results):
            out = dict(row)
            out.update(
                correct=res.correct,
                extracted=res.extracted,
                reason=res.reason,
                status=res.status,
                elapsed_s=round(res.elapsed_s, 6),
                format_ok=res.format_ok,
                reward=res.reward,
            )
            f.write(json.dumps(out, ensure_ascii=False) + "\n")
    summary = summarize(results)
    summary["rows"] = float(len(rows))
    summary["wall_s"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
