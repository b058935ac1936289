"""The ``reward:`` section of a recipe YAML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args, get_type_hints


@dataclass
class RewardConfig:
    # Where the final answer is read from: "boxed" (last \boxed{} group, nothing else), "answer_tag"
    # (r1_zero <answer>...</answer>), or "auto" (answer tag if present, else the later of the last
    # box group and a "final answer is ..." phrase, else a response that is only a one-line answer).
    answer_format: Literal["auto", "boxed", "answer_tag"] = "auto"
    # Responses with no box, tag or "final answer" phrase: "zero" gives no reward (status
    # no_answer); "reader" grades what a reader takes as the answer: the last display-math block or
    # formula of the final sentence, or the value a finished final sentence states (the CLI's
    # default, for evaluation); "last_number" grades the last number in the text (math-verify's
    # behaviour, which rewards truncated responses that happen to end on the right number).
    no_answer: Literal["zero", "reader", "last_number"] = "zero"
    # Responses cut off by the length limit (no EOS): "zero" gives no correctness reward (status
    # truncated); "grade" grades whatever complete answer they contain.
    truncated: Literal["zero", "grade"] = "zero"
    # Weight of the format reward: total = correct + format_weight * format_ok. The format is
    # well formed for answer_tag when <think>...</think><answer>...</answer> is clean, for boxed when
    # one final (non-hedged) box exists, for auto when either holds. 0 disables it.
    format_weight: float = 0.0
    # Reward given (on top of the format term) when the grader timed out or failed; the status and
    # the counters still report it, so it is never silently a wrong answer.
    failure_reward: float = 0.0
    # Hard wall-clock limit per answer in the worker process; the worker is killed on expiry.
    timeout_s: float = 1.0
    # Number of grader worker processes (per driver or Ray actor that grades).
    num_workers: int = 2
    # Percent policy: "either" accepts 75\% as 75 or as 0.75 (and gold 75\% likewise);
    # "number" reads 75\% as 75 only; "fraction" reads it as 0.75 only. A number without a percent
    # sign is never rescaled (so 200 never passes for 2).
    percent: Literal["either", "number", "fraction"] = "either"

    def validate(self) -> None:
        if self.timeout_s <= 0 or self.timeout_s > 60:
            raise ValueError(f"reward.timeout_s: must be in (0, 60] seconds, got {self.timeout_s}; use about 1")
        if self.num_workers < 1 or self.num_workers > 256:
            raise ValueError(f"reward.num_workers: must be between 1 and 256, got {self.num_workers}")
        if self.format_weight < 0:
            raise ValueError(f"reward.format_weight: must be >= 0, got {self.format_weight}; use 0 to disable")
        if self.answer_format == "answer_tag" and self.no_answer != "zero":
            raise ValueError(
                f"reward.no_answer: '{self.no_answer}' cannot be combined with answer_format 'answer_tag'; "
                "set no_answer: zero (r1_zero rewards only tagged answers)"
            )
        hints = get_type_hints(RewardConfig)
        for name in ("answer_format", "no_answer", "truncated", "percent"):
            allowed = get_args(hints[name])
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"reward.{name}: unknown value {value!r}; allowed: {allowed}")
