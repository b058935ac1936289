"""Metrics over n graded samples per problem: pass@k, avg@n, maj@n, and their breakdowns.

Pure functions over plain Python values (no torch, no files, no processes):

* pass@k: the probability that at least one of k samples, drawn without replacement from the n
  taken, is correct, estimated without bias as 1 - C(n-c, k) / C(n, k) for a problem with c
  correct samples (Chen et al., 2021), then averaged over problems.
* avg@n: the mean correctness over all samples (equal to pass@1).
* maj@n: a problem counts as solved when its most frequent extracted answer is correct. Answers
  are compared after normalisation (`answer_key`): LaTeX wrappers and units removed, numbers in
  one exact form, so `\\frac{1}{2}`, `1/2` and `0.5` vote together.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any, Iterable, Sequence

from nemo_grpo.rewards.normalize import clean, parse_number

BREAKDOWN_KEYS = ("subject", "level")  # MATH-500 rows carry both


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` correct out of `n` samples: 1 - C(n-c, k) / C(n, k)."""
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:  # every draw of k samples contains a correct one
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)  # exact integers, one rounding at the end


def answer_key(answer: str | None) -> str | None:
    """The form in which answers vote: cleaned text without spaces; plain numbers as exact fractions."""
    if answer is None:
        return None
    text = clean(answer)
    if not text:
        return None
    number = parse_number(text)
    if number is not None:
        return number.digits if number.value is None else str(number.value)
    return text.replace(" ", "")


def majority_vote(answers: Sequence[str | None]) -> int | None:
    """Index of the sample whose answer wins the vote, or None when no sample has an answer.

    Answers vote by `answer_key`; samples without an answer never win. A tie goes to the answer
    seen first in sample order, and the index returned is that answer's first sample (samples are
    exchangeable, so this is a fair draw among tied answers).
    """
    keys = [answer_key(a) for a in answers]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(i for i, k in enumerate(keys) if k is not None and counts[k] == best)


@dataclass
class ProblemSamples:
    """The n graded samples of one problem."""

    correct: list[bool]
    answers: list[str | None]  # extracted final answers (None: none found)
    lengths: list[int] = field(default_factory=list)  # response tokens
    truncated: list[bool] = field(default_factory=list)  # cut by the length limit
    grader_failed: list[bool] = field(default_factory=list)  # grader timeout or error
    groups: dict[str, Any] = field(default_factory=dict)  # e.g. {"subject": "Algebra", "level": 3}


def all_ks(n: int) -> list[int]:
    return list(range(1, n + 1))


def logged_ks(n: int) -> list[int]:
    """The k of pass@k logged during training: powers of two below n, and n itself."""
    return sorted({2**i for i in range(n.bit_length()) if 2**i < n} | {n})


def metric_names(n: int, ks: Iterable[int]) -> list[str]:
    """The keys `summarize` reports for n samples per problem (without `by` and the counts)."""
    return [f"avg@{n}", *(f"pass@{k}" for k in ks), f"maj@{n}",
            "response_length_mean", "truncated_rate", "no_answer_rate", "grader_failures"]


def _scores(problems: Sequence[ProblemSamples], n: int, ks: Sequence[int]) -> dict[str, float]:
    counts = [sum(p.correct) for p in problems]
    out = {f"avg@{n}": fmean(c / n for c in counts)}
    for k in ks:
        out[f"pass@{k}"] = fmean(pass_at_k(n, c, k) for c in counts)
    votes = [majority_vote(p.answers) for p in problems]
    out[f"maj@{n}"] = fmean(float(v is not None and p.correct[v]) for p, v in zip(problems, votes))
    return out


def summarize(problems: Sequence[ProblemSamples], ks: Iterable[int] | None = None,
              breakdown: Sequence[str] = BREAKDOWN_KEYS) -> dict[str, Any]:
    """avg@n, pass@k for each k in `ks` (default: 1..n), maj@n, lengths and rates, the counts, and
    under `by` the same scores per value of each `breakdown` key that the problems carry."""
    if not problems:
        raise ValueError("summarize: no problems")
    n = len(problems[0].correct)
    for p in problems:
        if len(p.correct) != n or len(p.answers) != n:
            raise ValueError(f"summarize: every problem needs the same number of samples ({n})")
    ks = sorted(set(ks)) if ks is not None else all_ks(n)
    samples = [(p, i) for p in problems for i in range(n)]
    out: dict[str, Any] = {"num_problems": len(problems), "num_samples": n, **_scores(problems, n, ks)}
    out["response_length_mean"] = fmean(l for p in problems for l in p.lengths) if problems[0].lengths else 0.0
    out["truncated_rate"] = fmean(float(t) for p in problems for t in p.truncated) if problems[0].truncated else 0.0
    out["no_answer_rate"] = fmean(float(p.answers[i] is None) for p, i in samples)
    out["grader_failures"] = float(sum(f for p in problems for f in p.grader_failed))
    by: dict[str, dict[str, Any]] = {}
    for key in breakdown:
        values = {p.groups[key] for p in problems if p.groups.get(key) is not None}
        if not values:
            continue
        by[key] = {}
        for value in sorted(values, key=lambda v: (isinstance(v, str), v)):
            subset = [p for p in problems if p.groups.get(key) == value]
            by[key][str(value)] = {"num_problems": len(subset), **_scores(subset, n, ks)}
    if by:
        out["by"] = by
    return out
