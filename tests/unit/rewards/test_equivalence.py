from __future__ import annotations

import sys
import time

import pytest

from nemo_grpo.rewards.equivalence import engine_equal, fast_equal, pathological
from nemo_grpo.rewards.normalize import clean


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("25", "025", True),
        ("1080", "1,080", True),
        ("11111111100", "11,\\! 111,\\! 111,\\! 100", True),
        ("0.5", "\\frac12", True),
        ("-\\frac{1}{2}", "-0.5", True),
        ("0.333333", "\\frac{1}{3}", True),
        ("0.33", "\\frac{1}{3}", False),
        ("200", "2", False),
        ("0.02", "2", False),
        ("12345678901234567891", "12345678901234567890", False),
        ("1" * 5000, "1" * 5000, True),
        ("1" * 5000 + "2", "1" * 5001, False),
        ("90", "90^\\circ", True),
        ("5.4", "5.4 \\text{ cents}", True),
        ("\\$18.90", "18.9", True),
        ("C", "\\text{(C)}", True),
        ("A", "\\text{(C)}", False),
        ("\\text{(A), (B)}", "A", False),
        ("monday", "\\text{Monday}", True),
        ("[2,5]", "[2,5)", False),
        ("3, 5", "3", False),
        ("4210_{6}", "4210_{5}", False),
        ("4210", "4210_{5}", True),
    ],
)
def test_fast_path_decides(pred, gold, expected):
    assert fast_equal(pred, gold) is expected


@pytest.mark.parametrize(
    "pred, gold, policy, expected",
    [
        ("75\\%", "0.75", "either", True),
        ("75\\%", "75", "either", True),
        ("75\\%", "0.75", "number", False),
        ("75\\%", "75", "fraction", False),
        ("0.1", "10\\%", "fraction", True),
    ],
)
def test_percent_policy(pred, gold, policy, expected):
    assert fast_equal(pred, gold, policy) is expected


def test_fast_path_defers_structures_to_the_engine():
    assert fast_equal("(0,9) \\cup (9,36)", "[0,9) \\cup (9,36)") is None
    assert fast_equal("x < 3", "(-\\infty, 3)") is True  # an inequality in one unknown is an interval
    assert fast_equal("6.283185", "2\\pi") is None  # a rounded decimal near a symbolic gold


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("x=3", "3", True),
        ("\\frac{\\sqrt2}{2}", "\\frac{1}{\\sqrt2}", True),
        ("x^2+2x+1", "(x+1)^2", True),
        ("e^{i\\pi}", "-1", True),
        ("7i - 2", "-2+7i", True),
        ("3\\sqrt{14}", "3\\sqrt{13}", False),
        ("5r^4", "5r^5", False),
        ("y = 2x - 3", "y=2x+3", False),
        ("2^{10}", "1024", True),
        ("(2, 1)", "(1,2)", False),
        ("5!", "120", True),
        ("\\binom{5}{2}", "10", True),
        ("\\log_2 8", "3", True),
        ("\\sec^2(y)", "\\tan^2(y)+1", True),
        ("x", "5", False),
        ("x - x + 5", "5", True),
        ("\\pm 3", "3", False),
        ("\\pm 3", "3, -3", True),
        ("3+2\\sqrt2, 3-2\\sqrt2", "3 \\pm 2 \\sqrt{2}", True),
        ("4 \\pm 2 \\sqrt{2}", "3 \\pm 2 \\sqrt{2}", False),
        ("eval('1+1')", "2", False),
        ("5 \\text{ dogs}", "5", True),
        ("\\{3, 1, 2\\}", "\\{1,2,3\\}", True),
        ("x \\in [-2, 7]", "[-2,7]", True),
        ("(-\\infty, -2) \\cup (3, \\infty)", "(-\\infty,-2)\\cup(3,\\infty)", True),
        ("\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", True),
        ("\\begin{pmatrix} 1 & 2 \\\\ 4 & 3 \\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", False),
    ],
)
def test_sympy_free_paths_decide_expressions_and_structures(pred, gold, expected):
    assert fast_equal(pred, gold) is expected


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("x=3", "3", True),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt2}", True),
        ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("(2, 1)", "(1,2)", False),
        ("x < 3", "(-\\infty, 3)", True),
        ("\\{1,2\\}", "\\{1,2,3\\}", False),
        ("y = 3 + 2x", "y=2x+3", True),
        ("\\begin{pmatrix} 1/2 \\\\ 1 \\end{pmatrix}", "\\begin{pmatrix} \\frac{1}{2} \\\\ 1 \\end{pmatrix}", True),
        ("3, 5", "5, 3", True),
    ],
)
def test_engine(pred, gold, expected):
    assert engine_equal(pred, gold)[0] is expected


@pytest.mark.parametrize(
    "text, why",
    [
        ("9^{9^{9^9}}", "huge_power"),
        ("10^{10^{10}}", "huge_power"),
        ("2^{1000000}", "huge_power"),
        ("100000!", "huge_factorial"),
        ("(" * 40 + "1" + ")" * 40, "too_deep"),
        ("2^{2^{2^{2}}}", "huge_power"),
        ("x" * 500, "too_long"),
    ],
)
def test_pathological_inputs_are_rejected_before_sympy(text, why):
    assert pathological(text) == why
    t0 = time.perf_counter()
    assert engine_equal(text, "1") == (False, f"pred_{why}")
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize("text", ["2^{10}", "e^{x^2}", "10^{100}", "2^{2^{10}}", "x^{2}y^{3}", "5!"])
def test_ordinary_powers_are_not_pathological(text):
    assert pathological(text) is None


def test_code_in_answers_is_never_executed(tmp_path):
    target = tmp_path / "pwned"
    for text in (f"__import__('os').system('touch {target}')", f"exec(\"open('{target}','w')\")"):
        assert engine_equal(text, "0")[0] is False
    assert not target.exists()


def test_clean_removes_wrappers():
    assert clean("$\\left( 3, \\dfrac{\\pi}{2} \\right)$.") == "( 3, \\frac{\\pi}{2} )"
    assert clean("The answer is 1,080") == "1080"


def test_deep_nesting_is_left_to_the_engine_whatever_the_recursion_limit():
    """The verdict on an answer must not depend on the process: torch's compiler raises Python's
    recursion limit, and with it a recursive evaluation of 200 nested parentheses went from "cannot
    tell" to equal (an adversarial case of the labelled set then graded correct in the full suite)."""
    deep = "(" * 200 + "1" + ")" * 200
    limit = sys.getrecursionlimit()
    verdicts = []
    try:
        for raised in (1000, 100_000):
            sys.setrecursionlimit(raised)
            verdicts.append(fast_equal(deep, "1"))
    finally:
        sys.setrecursionlimit(limit)
    assert verdicts == [None, None]
