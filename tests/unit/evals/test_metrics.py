"""pass@k against hand-computed values, majority voting, and the summary with its breakdown."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from nemo_grpo.evals import ProblemSamples, majority_vote, pass_at_k, summarize
from nemo_grpo.evals.metrics import answer_key, logged_ks, metric_names


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (4, 1, 1, 0.25),  # 1 - C(3,1)/C(4,1) = 1 - 3/4
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (4, 2, 2, 5 / 6),  # 1 - C(2,2)/C(4,2) = 1 - 1/6
        (4, 1, 4, 1.0),
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (16, 0, 1, 0.0),
        (16, 0, 16, 0.0),
        (16, 16, 1, 1.0),
        (16, 16, 16, 1.0),
        (16, 3, 4, 1 - 715 / 1820),  # 1 - C(13,4)/C(16,4)
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
    ],
)
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-15)


def test_pass_at_k_is_the_chance_that_a_random_k_subset_holds_a_correct_sample():
    n = 7
    for c in range(n + 1):
        samples = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(samples, k))
            exact = Fraction(sum(any(s) for s in subsets), len(subsets))
            assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-15)


def test_pass_at_k_stays_exact_for_large_n():
    assert pass_at_k(1024, 1, 1) == pytest.approx(1 / 1024)
    assert pass_at_k(1024, 1000, 512) == 1.0  # n - c < k
    assert 0.0 < pass_at_k(2000, 1, 1000) == pytest.approx(0.5)


@pytest.mark.parametrize("n, c, k", [(4, 1, 5), (4, 1, 0), (4, 5, 1), (4, -1, 1), (0, 0, 1)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(n, c, k)


def test_majority_vote_groups_equivalent_forms_and_ignores_missing_answers():
    # 1/2 three times in different notations beats 3 twice; None never wins.
    answers = ["3", "\\frac{1}{2}", None, "3", "0.5", "$1/2$", None, None]
    assert majority_vote(answers) == 1
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None
    assert majority_vote([None, "7"]) == 1


def test_majority_vote_tie_goes_to_the_answer_seen_first():
    assert majority_vote(["5", "6", "6", "5"]) == 0
    assert majority_vote(["6", "5", "5", "6"]) == 0
    assert majority_vote([None, "x+1", "2", "2", "x + 1"]) == 1


def test_answer_key_normalises_but_keeps_different_answers_apart():
    assert answer_key("\\boxed{12}") != answer_key("13")
    assert answer_key("12 \\text{ cm}") == answer_key("12") == answer_key("012")
    assert answer_key("\\dfrac{3}{4}") == answer_key("0.75") == answer_key("3/4")
    assert answer_key("  ") is None and answer_key(None) is None


def problem(correct, answers=None, **groups):
    answers = answers or [("right" if c else f"wrong{i}") for i, c in enumerate(correct)]
    return ProblemSamples(correct=list(correct), answers=answers, lengths=[10] * len(correct),
                          truncated=[False] * len(correct), grader_failed=[False] * len(correct), groups=groups)


def test_summary_numbers_and_breakdown_by_subject_and_level():
    problems = [
        problem([True, False, False, False], subject="Algebra", level=1),  # c=1
        problem([True, True, True, False], subject="Algebra", level=5),  # c=3
        problem([False, False, False, False], subject="Geometry", level=5),  # c=0
        # c=1, but the majority answer (7, twice) is wrong: maj fails where pass@4 succeeds
        problem([False, False, True, False], answers=["7", "7", "9", None], subject="Geometry", level=1),
    ]
    s = summarize(problems)
    assert (s["num_problems"], s["num_samples"]) == (4, 4)
    assert s["avg@4"] == pytest.approx((1 + 3 + 0 + 1) / 16)
    assert s["pass@1"] == pytest.approx(s["avg@4"])
    assert s["pass@2"] == pytest.approx((0.5 + 1.0 + 0.0 + 0.5) / 4)
    assert s["pass@4"] == pytest.approx(3 / 4)
    # problem 1: every wrong answer differs, "right" appears once -> first answer ("right") wins
    # problem 2: "right" three times; problem 3: all wrong; problem 4: "7" (wrong)
    assert s["maj@4"] == pytest.approx(2 / 4)
    assert s["no_answer_rate"] == pytest.approx(1 / 16)
    assert s["response_length_mean"] == 10
    algebra = s["by"]["subject"]["Algebra"]
    assert algebra["num_problems"] == 2 and algebra["avg@4"] == pytest.approx(4 / 8)
    assert s["by"]["subject"]["Geometry"]["pass@4"] == pytest.approx(1 / 2)
    assert list(s["by"]["level"]) == ["1", "5"]  # numeric order, as strings (JSON keys)
    assert s["by"]["level"]["5"]["maj@4"] == pytest.approx(1 / 2)
    assert set(s) - {"by", "num_problems", "num_samples"} == set(metric_names(4, range(1, 5)))


def test_summary_without_groups_has_no_breakdown_and_ks_can_be_chosen():
    s = summarize([problem([True] * 16), problem([False] * 16)], ks=logged_ks(16))
    assert "by" not in s
    assert [k for k in s if k.startswith("pass@")] == ["pass@1", "pass@2", "pass@4", "pass@8", "pass@16"]
    assert logged_ks(1) == [1] and logged_ks(6) == [1, 2, 4, 6]


def test_summary_refuses_problems_with_different_sample_counts():
    with pytest.raises(ValueError, match="same number of samples"):
        summarize([problem([True, False]), problem([True])])
