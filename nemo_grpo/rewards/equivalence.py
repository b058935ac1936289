"""Answer equivalence: our exact fast paths first, math-verify (sympy) as the engine second.

``fast_equal`` runs in the calling process and decides the common cases (numbers of any size,
fractions, decimals, percentages, choice letters, words, interval ends) without sympy.
``engine_equal`` calls math-verify and must run inside a worker process (see ``pool.py``): it uses
sympy, which can be slow, so the caller owns the time limit; math-verify's own ``signal.alarm``
limits are switched off so it works from any thread. Inputs reach sympy only through
math-verify's LaTeX parser, and only after ``pathological`` has rejected what could hang it.
Model text is never passed to ``eval``, ``exec`` or ``sympify``.
"""

from __future__ import annotations

import logging
import math
import re
from fractions import Fraction
from typing import Literal

from nemo_grpo.rewards.numeric import (
    _SAMPLES,
    MAX_NESTING,
    Unsupported,
    evaluate,
    exact_value,
    nesting_depth,
    numeric_equal,
    variables,
)
from nemo_grpo.rewards.normalize import (
    Number,
    base_number,
    choice_letter,
    clean,
    mixed_number,
    number_word,
    numbers_equal,
    parse_number,
    plain_words,
)

PercentPolicy = Literal["either", "number", "fraction"]

MAX_ENGINE_CHARS = 400  # longer answers are compared as strings only
MAX_BRACE_DEPTH = MAX_NESTING


# ---------------------------------------------------------------------------------------------
# Guards: what must never reach sympy.
# ---------------------------------------------------------------------------------------------

_CHAIN = re.compile(r"([\w.]+)((?:\^[-+]?[\w.]+)+)")
_FACTORIAL = re.compile(r"(\d+)\s*!")


def _tower_too_big(base: str, exps: list[str]) -> bool:
    if len(exps) >= 3:
        return True
    nums = []
    for tok in [base, *exps]:
        try:
            nums.append(float(tok))
        except ValueError:
            nums.append(None)
    # log10 of the value, evaluated from the top of the tower; give up when unknown
    if len(exps) == 2:
        b, c = nums[1], nums[2]
        if b is None or c is None:
            return any(n is not None and abs(n) > 1e4 for n in nums[1:])
        if abs(b) > 1 and c * math.log10(abs(b)) > 6:
            return True
        exponent = abs(b) ** c
    else:
        if nums[1] is None:
            return False
        exponent = abs(nums[1])
    base_val = nums[0]
    if base_val is None:
        return exponent > 1e5
    return abs(base_val) > 1 and exponent * math.log10(abs(base_val)) > 1e5


def pathological(s: str) -> str | None:
    """Why ``s`` must not be handed to sympy (None when it is safe)."""
    if len(s) > MAX_ENGINE_CHARS:
        return "too_long"
    if nesting_depth(s) > MAX_BRACE_DEPTH:
        return "too_deep"
    flat = re.sub(r"\\left|\\right|[{}()\s]", "", s).replace("**", "^")
    for m in _CHAIN.finditer(flat):
        exps = [e.lstrip("+-") for e in m.group(2).split("^")[1:]]
        if _tower_too_big(m.group(1), exps):
            return "huge_power"
    for m in _FACTORIAL.finditer(s):
        if len(m.group(1)) > 5 or int(m.group(1)) > 10000:
            return "huge_factorial"
    if re.search(r"\d{2000,}", s):
        return "huge_number"
    return None


# ---------------------------------------------------------------------------------------------
# Fast paths (calling process).
# ---------------------------------------------------------------------------------------------

_INTERVAL = re.compile(r"^([\[(])\s*([^,\[\]()]+?)\s*,\s*([^,\[\]()]+?)\s*([\])])$")


def _strip_pct(s: str) -> tuple[str, bool]:
    s = s.strip()
    if s.endswith("%"):
        return s[:-1].strip(), True
    return s, False


def percent_readings(s: str, policy: PercentPolicy) -> list[str]:
    """The readings of an answer that may carry a percent sign, under the percent policy."""
    body, pct = _strip_pct(s)
    if not pct:
        return [s]
    as_fraction = f"\\frac{{{body}}}{{100}}"
    if policy == "number":
        return [body]
    if policy == "fraction":
        return [as_fraction]
    return [body, as_fraction]


def _num_with_pct(s: str, policy: PercentPolicy):
    body, pct = _strip_pct(s)
    num = parse_number(body)
    if num is None:
        return None
    if not pct or num.value is None:
        return [num]
    scaled = Number(num.value / 100, decimal_places=num.decimal_places + 2)
    return {"number": [num], "fraction": [scaled], "either": [num, scaled]}[policy]


_CODE_LIKE = re.compile(r"['\"`]|__|\b(?:import|lambda|eval|exec)\b")
_PM = re.compile(r"\\(?:pm|mp)")


def _plus_minus(p: str, g: str, percent: PercentPolicy) -> bool | None:
    """``a \\pm b`` is the pair {a+b, a-b}: it never equals a single value."""
    p_pm, g_pm = bool(_PM.search(p)), bool(_PM.search(g))
    if not (p_pm or g_pm):
        return None
    p, g = (_unset(named_value(x)[1]) if "=" in x else _unset(x) for x in (p, g))
    other = g if p_pm else p
    if p_pm != g_pm and len(_split_top(other)) == 1:
        return False
    if len(_PM.findall(p)) > 1 or len(_PM.findall(g)) > 1 or _split_top(p if p_pm else g)[1:]:
        return None  # several signs, or a \\pm inside a list: the element-wise paths decide

    def pair(s: str) -> str:
        return f"{_PM.sub('+', s)}, {_PM.sub('-', s)}" if _PM.search(s) else s

    return _compare_sequences(pair(p), pair(g), percent)


_GOLD_JOINERS = re.compile(r"\\text\{\s*(?:and|or)\s*\}|\s+(?:and|or)\s+|(?<=[\d)}$])\s*(?:and|or)\s*(?=[\d($\\-])")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")


def _decimal_comma(p: str, g: str) -> bool | None:
    """``1,22`` vs ``1.22``: a comma that cannot be a thousands separator, against a decimal point."""
    for a, b in ((p, g), (g, p)):
        a, b = a.replace(" ", ""), b.replace(" ", "")
        if _DECIMAL_COMMA.match(a) and "." in b and "," not in b and parse_number(b) is not None:
            other = parse_number(a.replace(",", "."))
            return other is not None and numbers_equal(parse_number(b), other)
    return None


def _unset(s: str) -> str:
    """``\\{a, b\\}`` -> ``a, b`` (for comparing a set of values with a \\pm pair)."""
    s = s.strip()
    return s[2:-2].strip() if s.startswith("\\{") and s.endswith("\\}") else s


def fast_equal(pred: str, gold: str, percent: PercentPolicy = "either") -> bool | None:
    """Decide equality without sympy; None when the engine must decide.

    Every path that can answer True is exact (integers and fractions in rational arithmetic, words and
    letters as strings, structures element by element), or a sample-point check of expressions that
    only says True when the two agree to 1e-9 everywhere it looked and the values are small enough
    for a float to tell neighbours apart.
    """
    p, g = clean(pred), clean(gold)
    if _GOLD_JOINERS.search(g) and not re.search(r"[<>]|\\[lg]e\b", g):  # "12 and 13", "11 or 7": a list
        g = ", ".join(x for x in _split_top(_GOLD_JOINERS.sub(", ", g)) if x)
    if not p:
        return False
    if p.replace(" ", "") == g.replace(" ", ""):
        return True
    for s in (p, g):
        mixed = mixed_number(s)
        if mixed is not None and mixed[0] is None:
            return False  # "2\\frac{4}{3}": a whole number before an improper fraction is ambiguous
    g_letter = choice_letter(g)
    if g_letter is not None and not re.fullmatch(r"[a-e]", g) and "=" not in g:  # "C" or "(C)" as a gold choice
        return choice_letter(p) == g_letter
    g_base = base_number(g)
    if g_base is not None:  # a number written in another base: same digits (and base, if given)
        p_base = base_number(p)
        if p_base is not None:
            return p_base == g_base
        return re.fullmatch(r"[0-9A-Za-z]+", p) is not None and (p.upper().lstrip("0") or "0") == g_base[0]
    comma = _decimal_comma(p, g)
    if comma is not None:
        return comma
    g_nums, p_nums = _num_with_pct(g, percent), _num_with_pct(p, percent)
    if g_nums is not None and p_nums is not None:
        return any(numbers_equal(gn, pn) for gn in g_nums for pn in p_nums)
    g_word, p_word = number_word(g), number_word(p)
    if (g_word is not None or p_word is not None) and (g_word is not None or g_nums) and (p_word is not None or p_nums):
        gv = [Number(Fraction(g_word))] if g_word is not None else g_nums
        pv = [Number(Fraction(p_word))] if p_word is not None else p_nums
        return any(numbers_equal(a, b) for a in gv for b in pv)
    if g_nums is not None and len(_split_top(p)) > 1 and not _NAMED.match(p):
        return False  # one number asked, several given (hedge or answer list)
    if g_nums is not None and _CODE_LIKE.search(p):
        return False  # quotes, dunders, backticks: program text is never a number
    named = _compare_named(p, g, percent)
    if named is not None:
        return named
    for a, b in ((p, g), (g, p)):
        parts = _top_parts(a, _REL_SPLIT)
        if (len(parts) >= 2 and all(sep == "=" for sep, _ in parts[1:]) and not _is_name(parts[0][1])
                and not _REL_SPLIT.search(b) and len(_split_top(a)) == 1 and all(x for _, x in parts)):
            if re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", a)):
                if len(parts) == 2:
                    return False  # "a + 3z = 0" is an equation, not the value 0
                continue
            last = parts[-1][1]  # "3 + 4 = 7": a computation; its result is the value
            return fast_equal(last, b, percent) if a is p else fast_equal(b, last, percent)
    pm = _plus_minus(p, g, percent)
    if pm is not None:
        return pm
    g_words, p_words = plain_words(g), plain_words(p)
    if g_words is not None and (p_words is not None or g_nums is None and parse_number(p) is not None):
        return g_words == p_words
    rel = _compare_relations(p, g, percent)
    if rel is not None:
        return rel
    gi, pi = _INTERVAL.match(g.replace(" ", "")), _INTERVAL.match(p.replace(" ", ""))
    if gi and pi and (gi.group(1), gi.group(4)) != (pi.group(1), pi.group(4)):
        return False  # open and closed ends must match
    for compare in (_compare_unions, _compare_matrices, _compare_sequences):
        verdict = compare(_strip_membership(p), _strip_membership(g), percent)
        if verdict is not None:
            return verdict
    return _numeric_decide(p, g)


# ---------------------------------------------------------------------------------------------
# Named values ("x = 3", "(p, q) = (3, 2)", "a_3 = 2, a_{37} = 19", "x = 5 + 5 + 1 = 11").
# ---------------------------------------------------------------------------------------------

_REL_SPLIT = re.compile(r"\\approx|(?<![<>\\!])=|\\ge\b|\\le\b|\\ne\b|<|>")
_NAMED = re.compile(r"^\s*(?:\\[a-zA-Z]+\s*)?[A-Za-z|(]")


def _top_parts(s: str, pattern: re.Pattern) -> list[tuple[str, str]]:
    """Split ``s`` at top-level matches of ``pattern``: [(separator before, part), ...]."""
    out, depth, start, sep = [], 0, 0, ""
    i = 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            m = pattern.match(s, i)
            if m and m.end() > i:
                out.append((sep, s[start:i].strip()))
                sep, start, i = m.group(0), m.end(), m.end()
                continue
        i += 1
    out.append((sep, s[start:].strip()))
    return out


def _is_name(lhs: str) -> bool:
    """A left-hand side that names a value: ``x``, ``a_{37}``, ``f(x)``, ``|AB|``, ``(p,q)``, ``A:B``."""
    t = lhs.strip()
    if not t or len(t) > 40 or not re.search(r"[A-Za-z]", t) or t[0].isdigit() or t[0] in "+-." or "^" in t:
        return False
    return not any(sep for sep, _ in _top_parts(t, re.compile(r"[+\-]"))[1:])


def named_value(item: str) -> tuple[str | None, str]:
    """``x = 5 + 5 + 1 = 11`` -> ("x", "11"); ``x \\approx 11`` -> ("x", "11"); ``y = 2x+3`` -> ("y", "2x+3")."""
    parts = _top_parts(item, _REL_SPLIT)
    if len(parts) < 2 or any(sep not in ("=", "\\approx") for sep, _ in parts[1:]) or not _is_name(parts[0][1]):
        return None, item
    exact = [part for sep, part in parts[1:] if sep == "=" and part]
    value = exact[-1] if exact else parts[-1][1]
    return re.sub(r"[\s{}]", "", parts[0][1]), value


def _items(s: str) -> list[str]:
    inner = s[2:-2] if s.startswith("\\{") and s.endswith("\\}") else s
    return [x for x in _split_top(inner) if x]


def _compare_named(p: str, g: str, percent: PercentPolicy) -> bool | None:
    """Compare the values of named answers; names must agree when both sides give them."""
    if ("=" not in p and "=" not in g) or _PM.search(p + g):
        return None
    pn, gn = [named_value(x) for x in _items(p)], [named_value(x) for x in _items(g)]
    if all(n is None for n, _ in pn) and all(n is None for n, _ in gn):
        return None
    if any(n is None and "=" in v for n, v in pn + gn):
        return None  # a real equation among them: the relation paths decide
    pnames, gnames = [n for n, _ in pn], [n for n, _ in gn]
    if None not in pnames and None not in gnames and len(pn) == len(gn):
        if sorted(pnames) == sorted(gnames) and len(set(gnames)) == len(gnames):
            verdicts = [fast_equal(dict(pn)[k], v, percent) for k, v in gn]
            if False in verdicts:
                return False
            return True if all(verdicts) else None
        if len(pn) == 1:
            return None  # "x = 3" vs "y = 3": different unknowns, let the relation paths decide
    if len(pn) == 1 and len(gn) == 1:
        return fast_equal(pn[0][1], gn[0][1], percent)
    if len(pn) != len(gn):
        return False
    distinct = [len(set(names)) == len(names) and None not in names for names in (pnames, gnames)]
    unnamed = [all(n is None for n in names) for names in (pnames, gnames)]
    if (distinct[0] and unnamed[1]) or (distinct[1] and unnamed[0]):
        # "a = 2, b = 7" against "2, 7": distinct unknowns are answered in the order they were named
        verdicts = [fast_equal(a, b, percent) for (_, a), (_, b) in zip(pn, gn)]
        if False in verdicts:
            return False
        return True if all(verdicts) else None
    return _compare_sequences(", ".join(v for _, v in pn), ", ".join(v for _, v in gn), percent)


# ---------------------------------------------------------------------------------------------
# Relations: equations and inequalities in any spelling, compared as proportional differences.
# ---------------------------------------------------------------------------------------------

_REL_OPS = re.compile(r"\\ge\b|\\le\b|\\ne\b|<|>|(?<![<>\\!])=")
_FLIP = {">": "<", "\\ge": "\\le"}


def _relation(s: str) -> list[tuple[str, str]] | None:
    parts = _top_parts(s, _REL_OPS)
    if len(parts) < 2 or any(not part for _, part in parts):
        return None
    return parts


def _difference(lhs: str, rhs: str) -> str:
    return f"({lhs})-({rhs})"


def _proportional(a: str, b: str) -> float | None:
    """The constant c with a = c * b at every sample point (both must have variables), else None."""
    names = sorted(variables(a) | variables(b))
    if not names or len(names) > 4:
        return None
    ratios = []
    for point in _SAMPLES:
        env = {n: complex(point[j]) for j, n in enumerate(names)}
        va, vb = evaluate(a, env), evaluate(b, env)
        if abs(vb) < 1e-9 or abs(va) < 1e-9:
            return None
        ratios.append(va / vb)
    r0 = ratios[0]
    if abs(r0.imag) > 1e-9 * abs(r0) or any(abs(r - r0) > 1e-9 * abs(r0) for r in ratios[1:]):
        return None
    return r0.real


def _interval_of(s: str) -> str | None:
    """``0 < x \\le 4`` -> ``(0,4]``; ``x \\ge 2`` -> ``[2,\\infty)`` (one unknown, no other letters)."""
    parts = _relation(s)
    if parts is None or any(sep in ("=", "\\ne") for sep, _ in parts[1:]) or len(parts) > 3:
        return None
    ops = [sep for sep, _ in parts[1:]]
    terms = [t for _, t in parts]
    names = [i for i, t in enumerate(terms) if re.fullmatch(r"[a-zA-Z](?:_\{?\w+\}?)?|[a-zA-Z]\([a-z]\)", t.replace(" ", ""))]
    if len(names) != 1:
        return None
    k = names[0]
    if len(terms) == 3 and k != 1:
        return None
    if len(terms) == 3 and {op in ("<", "\\le") for op in ops} != {True} and {op in (">", "\\ge") for op in ops} != {True}:
        return None
    lo, hi, lo_open, hi_open = "-\\infty", "\\infty", True, True
    if len(terms) == 2:
        op = ops[0] if k == 0 else {"<": ">", ">": "<", "\\le": "\\ge", "\\ge": "\\le"}[ops[0]]
        bound = terms[1 - k]
        if op in ("<", "\\le"):
            hi, hi_open = bound, op == "<"
        else:
            lo, lo_open = bound, op == ">"
    else:
        a, b = terms[0], terms[2]
        if ops[0] in (">", "\\ge"):
            a, b, ops = b, a, [ops[1], ops[0]]
        lo, lo_open, hi, hi_open = a, ops[0] in ("<", ">"), b, ops[1] in ("<", ">")
    if re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", lo + hi)):
        return None
    return ("(" if lo_open else "[") + lo + ", " + hi + (")" if hi_open else "]")


def _compare_relations(p: str, g: str, percent: PercentPolicy) -> bool | None:
    pr, gr = _relation(p), _relation(g)
    if pr is None and gr is None:
        return None
    if (pr is None) != (gr is None):  # an inequality against an interval
        other = p if pr is None else g
        as_interval = _interval_of(g if pr is None else p)
        if as_interval is not None and _INTERVAL.match(other.replace(" ", "")):
            return fast_equal(as_interval if gr is None else other, other if gr is None else as_interval, percent)
        return None
    if len(pr) == 3 and len(gr) == 3:
        pi, gi = _interval_of(p), _interval_of(g)
        if pi is not None and gi is not None:
            return fast_equal(pi, gi, percent)
    if len(pr) != 2 or len(gr) != 2:
        return None

    def canon(parts):
        (_, lhs), (op, rhs) = parts
        if op in _FLIP:
            return _FLIP[op], _difference(rhs, lhs)
        return op, _difference(lhs, rhs)

    (pop, pd), (gop, gd) = canon(pr), canon(gr)
    try:
        ratio = _proportional(pd, gd)
    except (Unsupported, OverflowError, ZeroDivisionError, ValueError, RecursionError):
        return None
    if ratio is None:
        return None
    if pop != gop:
        return False  # same boundary, different relation (< vs \\le, = vs \\ne)
    if pop in ("<", "\\le"):
        return ratio > 0
    return True


_MEMBERSHIP = re.compile(r"^[a-zA-Z]\s*\\in\s*")
_MATRIX = re.compile(r"^\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.DOTALL)


def _strip_membership(s: str) -> str:
    """``x \\in [1, 2]`` -> ``[1, 2]``."""
    return _MEMBERSHIP.sub("", s)


def _compare_unions(p: str, g: str, percent: PercentPolicy) -> bool | None:
    """Unions of intervals, piece by piece in the written order (other orders go to the engine)."""
    if "\\cup" not in p or "\\cup" not in g:
        return None
    pp, gp = [x.strip() for x in p.split("\\cup")], [x.strip() for x in g.split("\\cup")]
    if len(pp) != len(gp):
        return None
    verdicts = [fast_equal(a, b, percent) for a, b in zip(pp, gp)]
    return True if all(v is True for v in verdicts) else None


def _matrix_cells(s: str) -> list[list[str]] | None:
    s = s.strip()
    if s[:1] in "([" and s[-1:] in ")]" and s[1:].lstrip().startswith("\\begin"):
        s = s[1:-1].strip()  # \left[ \begin{array}...\end{array} \right] or (\begin{pmatrix}...)
    m = _MATRIX.match(s)
    if m and ("\\begin" in m.group(2) or "\\end" in m.group(2)):
        return None  # several matrices (a sum, a product): the engine decides
    if not m or m.group(1) in ("vmatrix", "Vmatrix"):  # a determinant is a number, not a matrix
        return None
    rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
    return [[c.strip() for c in r.split("&")] for r in rows]


def _compare_matrices(p: str, g: str, percent: PercentPolicy) -> bool | None:
    pm, gm = _matrix_cells(p), _matrix_cells(g)
    if pm is None or gm is None:
        return None
    if [len(r) for r in pm] != [len(r) for r in gm]:
        return False
    verdicts = [fast_equal(a, b, percent) for pr, gr in zip(pm, gm) for a, b in zip(pr, gr)]
    if False in verdicts:
        return False
    return True if all(verdicts) else None


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur).strip())
    return parts


def _sequence(s: str) -> tuple[str, list[str]] | None:
    """("ordered"|"unordered"|bracket pair, items) for tuples, intervals, sets and bare lists."""
    s = s.strip()
    if s.startswith("\\{") and s.endswith("\\}"):
        if "\\{" in s[2:-2] or "\\}" in s[2:-2]:
            return None  # "\\{1, 2\\} \\cup \\{3\\}" is not one set literal
        items = _split_top(s[2:-2])
        return ("unordered", items) if len(items) > 1 else None
    if s[:1] in "([" and s[-1:] in ")]" and _split_top(s[1:-1]) and len(_split_top(s)) == 1:
        inner = s[1:-1]
        depth = 0
        for c in inner:  # "(1,2) \\cup (3,4)" is not one bracket pair
            depth += c in "([{"
            depth -= c in ")]}"
            if depth < 0:
                return None
        items = _split_top(inner)
        return (s[0] + s[-1], items) if len(items) > 1 else None
    items = _split_top(s)
    if len(items) > 1 and not any(re.search(r"[=<>]|\\(?:le|ge|cup)", x) for x in items):
        return "unordered", items
    return None


def _compare_sequences(p: str, g: str, percent: PercentPolicy) -> bool | None:
    """Tuples and intervals element-wise (ends already checked); sets and bare lists as multisets."""
    ps, gs = _sequence(p), _sequence(g)
    if ps is None or gs is None:
        return None
    (pk, pitems), (gk, gitems) = ps, gs
    if pk == "unordered" and gk == "()" and not p.strip().startswith("\\{"):
        pk = "()"  # "1, 3" for the pair (1, 3): read in the order written
    if pk != gk:
        return None  # e.g. a tuple against a set: the engine decides
    if pk == "unordered":  # a set: the same element written twice counts once
        pitems = list(dict.fromkeys(x.replace(" ", "") for x in pitems))
        gitems = list(dict.fromkeys(x.replace(" ", "") for x in gitems))
    if len(pitems) != len(gitems):
        return False
    if pk != "unordered":
        verdicts = [fast_equal(a, b, percent) for a, b in zip(pitems, gitems)]
        if False in verdicts:
            return False
        return True if all(verdicts) else None
    unmatched = list(gitems)
    for a in pitems:
        hit = next((b for b in unmatched if fast_equal(a, b, percent) is True), None)
        if hit is None:
            if all(fast_equal(a, b, percent) is False for b in unmatched):
                return False
            return None
        unmatched.remove(hit)
    return True


_ASSIGN = re.compile(r"^([a-zA-Z])\s*=\s*([^=<>]+)$")


def _numeric_decide(p: str, g: str) -> bool | None:
    """Sample-point comparison of plain expressions, and of ``x = expr`` against ``expr``."""
    pa, ga = _ASSIGN.match(p), _ASSIGN.match(g)
    if pa and ga:
        if pa.group(1) != ga.group(1):
            return None
        p, g = pa.group(2), ga.group(2)
    elif pa and "=" not in g:
        p = pa.group(2)
    elif ga and "=" not in p:
        g = ga.group(2)
    return numeric_equal(p, g)


# ---------------------------------------------------------------------------------------------
# Engine (worker process only).
# ---------------------------------------------------------------------------------------------

_MV = None


def _math_verify():
    global _MV
    if _MV is None:
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        from math_verify import LatexExtractionConfig, parse, verify

        _MV = (parse, verify, LatexExtractionConfig())
    return _MV


_SIMPLE_SLASH = re.compile(r"(?<![\w}.])(\d+)\s*/\s*(\d+)(?![\w{.])")


def _mv_parse(text: str):
    # LaTeX parser only: math-verify's plain-expression parser goes through sympy's parse_expr,
    # which evaluates Python code, so model text never reaches it.
    parse, _, latex_cfg = _math_verify()
    text = _SIMPLE_SLASH.sub(r"\\frac{\1}{\2}", text)
    return parse("\\boxed{" + text + "}", [latex_cfg], parsing_timeout=None)


def engine_equal(pred: str, gold: str, percent: PercentPolicy = "either") -> tuple[bool, str]:
    """math-verify comparison of cleaned answers. Returns (equal, reason)."""
    p, g = clean(pred), clean(gold)
    for s, who in ((p, "pred"), (g, "gold")):
        why = pathological(s)
        if why is not None:
            return False, f"{who}_{why}"
    _, verify, _ = _math_verify()
    golds = [_mv_parse(x) for x in percent_readings(g, percent)]
    preds = [_mv_parse(x) for x in percent_readings(p, percent)]
    if not any(golds):
        return False, "gold_unparsed"
    for G in golds:
        for P in preds:
            if P and verify(G, P, timeout_seconds=None, allow_set_relation_comp=True):
                return True, "engine_equal"
    return False, "engine_different"


_WARM_UP_PAIRS = (
    ("x<3", "(-\\infty,3)"),
    ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("x=3", "3"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt2}"),
    ("[1,2) \\cup (3,4]", "[1,2)\\cup(3,4]"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("\\{1,2\\}", "1, 2"),
    ("2x+1", "1+2x"),
    ("3+4i", "4i+3"),
    ("\\text{Monday}", "Monday"),
    ("\\sin^2 x + \\cos^2 x", "1"),
    ("y = 2x + 3", "2x+3"),
)


def warm_up() -> None:
    """Run one comparison of each kind so sympy's lazy imports and caches are filled.

    Called in the forkserver before workers fork, so every worker (and every replacement of a
    killed one) starts warm instead of paying about a second on its first answers.
    """
    for pred, gold in _WARM_UP_PAIRS:
        try:
            engine_equal(pred, gold)
        except Exception:  # warm-up must never stop a pool from starting
            pass
