"""Every fast path that can say "equal" (issue 15's kinds), each with its negative twin."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nemo_grpo.rewards.config import RewardConfig
from nemo_grpo.rewards.equivalence import fast_equal
from nemo_grpo.rewards.extract import cut_turn_markers, extract_answer, gold_answer
from nemo_grpo.rewards.math_reward import grade_batch
from nemo_grpo.rewards.numeric import exact_value

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "grader"

# (pred, gold, equal?): pairs follow each other as (equal case, its negative twin)
TWINS = [
    # mixed numbers (the old false positive) and exact big integers (the other one)
    ("\\frac{7}{3}", "2\\frac{1}{3}", True), ("\\frac{2}{3}", "2\\frac{1}{3}", False),
    ("4 4/9", "\\frac{40}{9}", True), ("4 4/9", "4", False),
    ("-1\\frac14", "-1.25", True), ("-1\\frac14", "-0.25", False),
    ("2\\frac{4}{3}", "\\frac{8}{3}", False), ("2\\frac{4}{3}", "\\frac{10}{3}", False),  # ambiguous: never equal
    ("2^{100}+1", "1267650600228229401496703205377", True), ("2^{100}", "2^{100}+1", False),
    ("10^{20}", "100000000000000000000", True), ("10^{20}+1", "10^{20}", False),
    ("\\frac{10^{30}}{10^{30}}", "1", True), ("\\frac{10^{30}+1}{10^{30}}", "1", False),
    # towers, compared exactly
    ("2^{65536}", "2^{2^{2^{2^{2}}}}", True), ("2^{65537}", "2^{2^{2^{2^{2}}}}", False),
    ("3^{3^3}", "7625597484987", True), ("3^{3^3}", "7625597484986", False),
    # relations in every spelling
    ("x >= 5", "x \\geq 5", True), ("x > 5", "x \\geq 5", False),
    ("5 \\le x", "x \\ge 5", True), ("5 \\ge x", "x \\ge 5", False),
    ("x \\lt 3", "x<3", True), ("x \\gt 3", "x<3", False),
    ("x != 2", "x \\neq 2", True), ("x = 2", "x \\neq 2", False),
    ("-x > -1", "x < 1", True), ("x > -1", "x < 1", False),
    ("2x \\le 6", "x \\le 3", True), ("-2x \\le 6", "x \\le 3", False),
    ("x ≥ 2", "[2, \\infty)", True), ("x > 2", "[2, \\infty)", False),
    ("0 < x < 4", "(0, 4)", True), ("0 \\le x < 4", "(0, 4)", False),
    # equations: proportional differences
    ("x^2/16 + y^2/12 = 1/4", "\\frac{x^2}{4}+\\frac{y^2}{3}=1", True), ("x^2/16 + y^2/12 = 1/2", "\\frac{x^2}{4}+\\frac{y^2}{3}=1", False),
    ("y = -\\frac12 x + \\frac34", "2x+4y-3=0", True), ("y = \\frac12 x + \\frac34", "2x+4y-3=0", None),
    # matrices
    ("\\left[\\begin{array}{cc} \\frac12 & 0 \\\\ 0 & 1 \\end{array}\\right]", "\\begin{pmatrix} 0.5 & 0 \\\\ 0 & 1 \\end{pmatrix}", True),
    ("\\left[\\begin{array}{cc} \\frac13 & 0 \\\\ 0 & 1 \\end{array}\\right]", "\\begin{pmatrix} 0.5 & 0 \\\\ 0 & 1 \\end{pmatrix}", False),
    # repeating decimals, number words, empty set
    ("0.\\overline{3}", "\\frac13", True), ("0.3", "0.\\overline{3}", False),
    ("1.\\overline{27}", "\\frac{14}{11}", True), ("1.\\overline{2}", "\\frac{14}{11}", False),
    ("\\text{five}", "5", True), ("\\text{five}", "6", False),
    ("twenty-one", "21", True), ("twenty-one", "12", False),
    ("\\varnothing", "\\emptyset", True), ("\\{0\\}", "\\emptyset", False),
    # plus-minus, lists, named values
    ("\\pm 2021", "\\{-2021, 2021\\}", True), ("\\pm 2021", "\\{-2021, 2022\\}", False),
    ("x = \\pm 2", "2, -2", True), ("x = \\pm 2", "2", False),
    ("3, 5", "3 \\text{ and } 5", True), ("3, 6", "3 \\text{ and } 5", False),
    ("21, 16, 11", "21,16 or 11", True), ("21, 16", "21,16 or 11", False),
    ("k = 1", "1", True), ("a + 3z = 0", "0", False),
    ("7, 2", "a=7, b=2", True), ("2, 7", "a=7, b=2", False),
    ("a_{37} = 19, a_3 = 2", "a_3 = 2, a_{37} = 19", True), ("a_{37} = 2, a_3 = 19", "a_3 = 2, a_{37} = 19", False),
    ("x = 5 + 5 + 1 = 11", "x = 11", True), ("x = 11 = 12", "x = 11", False),
    # text, Unicode, decimal commas, parentheses and sums
    ("Even", "\\text{even}", True), ("\\text{odd}", "\\text{even}", False),
    ("√2", "\\sqrt{2}", True), ("√3", "\\sqrt{2}", False),
    ("−5", "-5", True), ("−5", "5", False),
    ("1,22", "1.22", True), ("1,23", "1.22", False),
    ("32,349", "32349", True), ("32, 349", "32349", False),
    ("((((5))))", "5", True), ("((((5))))", "6", False),
    ("+".join(["1"] * 300), "300", True), ("+".join(["1"] * 300), "299", False),
    # sums and subscripted sequences, evaluated at whole numbers
    ("\\sum_{i=1}^{n} i^2", "\\frac{n(n+1)(2n+1)}{6}", True), ("\\sum_{i=1}^{n} i^2", "\\frac{n(n+1)(2n+1)}{5}", False),
    ("F_n = \\sum_{k=0}^{n-1} F_{n-k-1} F_k", "F_n = \\sum_{k=0}^{n-1} F_k F_{n-k-1}", True),
    ("F_n = \\sum_{k=0}^{n-2} F_k F_{n-k-2}", "F_n = \\sum_{k=0}^{n-1} F_k F_{n-k-1}", False),
    ("x - y", "-0.1", False),  # sample points are independent per variable
]


@pytest.mark.parametrize("pred, gold, expected", TWINS)
def test_fast_paths_and_their_twins(pred, gold, expected):
    got = fast_equal(pred, gold)
    if expected is True:
        assert got is True
    else:  # a twin: the fast path never says equal (it says different, or leaves it to the engine)
        assert got is not True


def test_twins_end_to_end(grader_pool):
    res = grade_batch([f"So $\\boxed{{{p}}}$." for p, _, _ in TWINS], [g for _, g, _ in TWINS],
                      RewardConfig(timeout_s=5.0), pool=grader_pool)
    wrong = [(p, g, r.reason) for (p, g, e), r in zip(TWINS, res) if r.correct != bool(e)]
    assert wrong == []


def test_towers_are_exact_or_rejected_quickly():
    t0 = time.perf_counter()
    assert exact_value("2^{2^{2^{2^{2}}}}") == 2**65536
    assert exact_value("9^{9^{9^{9}}}") is None
    assert exact_value("2^{2^{2^{2^{2^{2}}}}}") is None
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize(
    "response, answer",
    [
        ("Reasoning.\nAnswer \\[ 9 \\]", "9"),
        ("Reasoning.\n\n$$ 9 $$", "9"),
        ("Reasoning.\nTherefore $x \\geq 5$ is the solution.", "x \\geq 5"),
        ("Reasoning.\nSo the probability that Alice wins is 2/3.", "2/3"),
        ("the number is not 10 which is 1,000.99€", "1,000.99€"),
        ("Reasoning. Final Answer: Jane started growing it 3 hours ago. I hope it is correct.", "3"),
        ("Reasoning.\nThere are 12 sequences. I hope it is correct. <|im_start|>user\nWhat is 2+2?", "12"),
    ],
)
def test_reader_finds_what_a_reader_finds(response, answer):
    assert extract_answer(response, reader=True).answer == answer
    if "Final Answer" not in response:
        assert extract_answer(response).answer is None  # the training default stays anchored-only


@pytest.mark.parametrize(
    "response",
    ["Let me compute.\nFirst 2 + 2 = 4, and I still need to add the rest", "Answer $ \n 9 \n $", "AZYUK2A", "no answer here"],
)
def test_reader_reads_no_unfinished_or_broken_statement(response):
    assert extract_answer(response, reader=True).answer is None


@pytest.mark.parametrize(
    "marker", ["<|im_end|>", "<|eot_id|>", "<｜end▁of▁sentence｜>", "</s>", "<|endoftext|>", "<|im_start|>assistant"]
)
def test_text_after_a_turn_marker_is_not_read(marker):
    text = f"So the answer is $\\boxed{{41}}$.{marker}\nThe answer is $\\boxed{{42}}$."
    assert cut_turn_markers(text).endswith("$\\boxed{41}$.")
    assert extract_answer(text).answer == "41"


def test_golds_that_hold_boxes_or_solutions():
    assert gold_answer("\\boxed{1} papers and \\boxed{2} bins") == "1, 2"
    assert gold_answer("\\boxed{1} no no no no no \\boxed{2}") == "2"
    assert gold_answer("2\\frac{1}{3}") == "2\\frac{1}{3}"


def test_several_boxed_parts_answer_one_question(grader_pool):
    base = "Reasoning.\nThe area is $\\boxed{6}$ and the perimeter is $\\boxed{%s}$."
    res = grade_batch([base % 12, base % 14, "First $\\boxed{5}$.\n\nWait, that is wrong: $\\boxed{3}$."],
                      ["6, 12", "6, 12", "3, 5"], pool=grader_pool)
    assert [r.correct for r in res] == [True, False, False]


def test_external_set_dev_split(grader_pool):
    """The external set (dev split, CLI policy): no false positive, accuracy at least 0.98."""
    rows = [json.loads(line) for line in open(FIXTURES / "external.jsonl", encoding="utf-8")]
    assert {r["split"] for r in rows} == {"dev", "heldout"} and all(r["source"] for r in rows)
    rows = [r for r in rows if r["split"] == "dev"]
    cfg = RewardConfig(no_answer="reader", timeout_s=5.0)
    res = grade_batch([r["response"] for r in rows], [r["gold"] for r in rows], cfg, pool=grader_pool)
    fp = [r["id"] for r, g in zip(rows, res) if g.correct and not r["label"]]
    wrong = [(r["id"], r["gold"][-40:], g.extracted, g.reason) for r, g in zip(rows, res) if g.correct != r["label"]]
    assert fp == []
    assert 1 - len(wrong) / len(rows) >= 0.98, wrong
