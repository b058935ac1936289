"""String normalisation of answers and the exact fast paths that never touch sympy.

Everything here is plain string and integer/Fraction work, bounded in time by the input length:
it runs in the calling process. Anything it cannot decide is handed to the math-verify engine in a
worker process (see ``equivalence.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# ---------------------------------------------------------------------------------------------
# Cleanup of LaTeX wrappers, units, degrees, thousands separators.
# ---------------------------------------------------------------------------------------------

_UNIT_WORDS = (
    "cm|mm|km|m|meters?|centimeters?|kilometers?|inches|inch|in|feet|foot|ft|yards?|miles?|"
    "units?|square|sq|cubic|degrees?|deg|seconds?|sec|minutes?|min|hours?|hrs?|days?|weeks?|"
    "months?|years?|cents?|dollars?|pounds?|lbs?|ounces?|oz|grams?|g|kg|kilograms?|liters?|l|ml|"
    "gallons?|mph|points?|people|students?|ways|times|pages|apples|marbles|coins|books|"
    "cookies|pieces|boxes|bottles|cups|eggs|tickets|toys|trees|cars|miles per hour|per hour"
)
_UNIT_TEXT = re.compile(  # a unit only after a number: "\\text{M}" alone is an answer
    r"(?<=[\d}])\s*\\(?:text|textbf|textrm|mathrm|mbox|textnormal|rm)\s*\{\s*(?:" + _UNIT_WORDS + r")"
    r"(?:\s+(?:" + _UNIT_WORDS + r"))*\s*\.?\s*\}(?:\s*\^\s*\{?[23]\}?)?",
    re.IGNORECASE,
)
_TRAILING_UNIT = re.compile(
    r"(?<=[\d}])(?:\s+(?:" + _UNIT_WORDS + r")(?:\s*\^\s*\{?[23]\}?)?"
    r"|(?:cm|mm|km|kg|ml|m\^\{?[23]\}?|cm\^\{?[23]\}?|km\^\{?[23]\}?))\s*\.?\s*$",
    re.IGNORECASE,
)
_TRAILING_TEXT = re.compile(r"(?<=\d)\s*\\(?:text|mbox|mathrm|textrm)\s*\{\s*[A-Za-z][A-Za-z ]*\}\s*$")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|textnormal|operatorname|mathbf)\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°")
_PERCENT_WORD = re.compile(r"\s*(?:\\text\{\s*)?(?:percentage|percent|pct)\b\s*\}?", re.IGNORECASE)
_THOUSANDS = re.compile(r"^[+-]?(?:[1-9]\d{0,2}|0(?=\.))(?:,\d{3})+(?:\.\d+)?$")
_SPACES = re.compile(r"\s+")
_DOLLAR_SIGN = re.compile(r"\\\$|(?<![\\\w])\$(?=\s*\d)")

# Unicode math that models (and some golds) write instead of LaTeX.
_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": " \\times ", "\u22c5": " \\cdot ", "\u00b7": " \\cdot ",
    "\u00f7": " \\div ", "\u2264": " \\le ", "\u2265": " \\ge ", "\u2260": " \\ne ", "\u221e": "\\infty ",
    "\u03c0": "\\pi ", "\u2205": "\\emptyset ", "\u00b2": "^2", "\u00b3": "^3", "\u2208": " \\in ",
    "\u222a": " \\cup ", "\u2229": " \\cap ", "\u00b1": "\\pm ", "\u2248": " \\approx ",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
_UNICODE_SQRT = re.compile(r"\u221a\s*(?:\(([^()]*)\)|\{([^{}]*)\}|(\d+(?:\.\d+)?|\\[a-zA-Z]+|[a-zA-Z]))")
_EMPTY_SET = re.compile(r"\\varnothing|\\emptyset|\\\{\s*\\\}|^\{\s*\}$")
_CURRENCY = re.compile(r"[\u20ac\u00a3\u00a5\u20b9]|\\euro\b|\\pounds\b|\\yen\b|\b(?:USD|EUR|GBP|yuan|RMB|euros?)\b")


def unicode_to_latex(s: str) -> str:
    """``\u221a2`` -> ``\\sqrt{2}``, ``\u03c0`` -> ``\\pi``, ``\u2264`` -> ``\\le`` and friends."""
    if s.isascii():
        return s
    s = _UNICODE_SQRT.sub(lambda m: "\\sqrt{" + next(g for g in m.groups() if g is not None) + "}", s)
    return _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], s)


_LEADING_PHRASES = re.compile(
    r"^(?:the\s+)?(?:final\s+)?(?:answer|result|solution)\s*(?:is|:|=)\s*", re.IGNORECASE
)


def strip_math_delimiters(s: str) -> str:
    """Remove surrounding ``$...$``, ``\\(...\\)``, ``\\[...\\]`` and a trailing full stop."""
    s = s.strip()
    for _ in range(3):
        before = s
        if s.startswith("$$") and s.endswith("$$") and len(s) >= 4:
            s = s[2:-2].strip()
        elif s.startswith("$") and s.endswith("$") and len(s) >= 2:
            s = s[1:-1].strip()
        elif (s.startswith("\\(") and s.endswith("\\)")) or (s.startswith("\\[") and s.endswith("\\]")):
            s = s[2:-2].strip()
        s = s.rstrip(" .;")
        if s == before:
            break
    return s


def clean(s: str) -> str:
    """Canonical string form of an answer (gold or extracted), for comparison and display.

    Removes LaTeX spacing and sizing commands, ``\\text{}`` units, degree marks, dollar signs,
    thousands separators and a leading "The answer is". Keeps the percent sign (its meaning is a
    policy decided in ``equivalence.py``).
    """
    s = unicode_to_latex(s)
    s = strip_math_delimiters(s)
    s = _LEADING_PHRASES.sub("", s)
    s = re.sub(r",\\!\s*", ",", s).replace("\\!", "").replace("{,}", ",")
    s = _EMPTY_SET.sub("\\\\emptyset", s.strip())
    for cmd in ("\\left", "\\right", "\\big", "\\Big", "\\bigg", "\\Bigg"):
        s = re.sub(re.escape(cmd) + r"(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[,;:> ]|~|\\quad|\\qquad", " ", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = re.sub(r"\\(?:geqslant|geq|ge)(?![a-zA-Z])|>=|=>", r" \\ge ", s)
    s = re.sub(r"\\(?:leqslant|leq|le)(?![a-zA-Z])|<=|=<", r" \\le ", s)
    s = re.sub(r"\\(?:neq|ne)(?![a-zA-Z])|!=", r" \\ne ", s)
    s = re.sub(r"\\lt(?![a-zA-Z])", "<", s)
    s = re.sub(r"\\gt(?![a-zA-Z])", ">", s)
    s = s.replace("\\displaystyle", "")
    s = _DEGREES.sub("", s)
    s = _DOLLAR_SIGN.sub("", s)
    s = re.sub(r"(?<!\\)\$", " ", s).strip()  # a stray $ left inside: a currency sign or a broken delimiter
    s = _UNIT_TEXT.sub("", s)
    s = _TRAILING_TEXT.sub("", s)
    s = _CURRENCY.sub("", s)
    s = re.sub(r"\\(?:text|mbox|mathrm|textrm)\s*\{\s*\}|(?<=\d)\s*\$$", "", s)
    s = s.replace("\\%", "%").replace("\\percent", "%")
    s = _PERCENT_WORD.sub("%", s)
    s = _SPACES.sub(" ", s).strip()
    s = _TRAILING_UNIT.sub("", s).strip() if re.search(r"\d", s) else s
    if s.startswith("{") and s.endswith("}") and _closing(s, 0) == len(s) - 1:
        s = s[1:-1].strip()  # TeX grouping braces, not a set
    compact = s.replace(" ", "")
    if _THOUSANDS.match(compact) and not re.search(r",\s", s):  # "32, 349" is a list
        s = compact.replace(",", "")
    return strip_math_delimiters(s)


def _closing(s: str, i: int) -> int:
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{" and (j == 0 or s[j - 1] != "\\"):
            depth += 1
        elif s[j] == "}" and (j == 0 or s[j - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return j
    return -1


def unwrap_text(s: str) -> str:
    """``\\text{Monday}`` -> ``Monday`` (used for word answers and choice letters)."""
    for _ in range(3):
        s2 = _TEXT_WRAPPER.sub(r"\1", s)
        if s2 == s:
            break
        s = s2
    return s.strip()


# ---------------------------------------------------------------------------------------------
# Exact numbers: integers of any length, decimals, fractions, negative signs.
# ---------------------------------------------------------------------------------------------

_INT = re.compile(r"^[+-]?\d+$")
_DEC = re.compile(r"^[+-]?(?:\d+\.\d*|\.\d+)$")
_SLASH = re.compile(r"^([+-]?\d+)/(\d+)$")
_FRAC = re.compile(r"^([+-]?)\\frac\s*\{\s*([+-]?\d+)\s*\}\s*\{\s*(\d+)\s*\}$")
_FRAC_SHORT = re.compile(r"^([+-]?)\\frac\s*(\d)\s*(\d)$")
_SCI = re.compile(r"^([+-]?\d+(?:\.\d+)?)\s*(?:\\times|\\cdot|\*)\s*10\s*\^\s*\{?\s*([+-]?\d{1,4})\s*\}?$")


@dataclass(frozen=True)
class Number:
    """An exactly parsed number; ``digits`` keeps huge integers exact without int() limits."""

    value: Fraction | None  # None for integers too long for a cheap int() conversion
    digits: str | None = None  # canonical digits of a huge integer (sign included)
    decimal_places: int = 0  # how many digits after the point were written


_MAX_INT_DIGITS = 4000  # Python refuses int(str) beyond 4300 digits by default


def parse_number(s: str) -> Number | None:
    """Parse a plain number (no sympy). Returns None when ``s`` is anything else."""
    mixed = mixed_number(s)
    if mixed is not None:
        return Number(mixed[0]) if mixed[0] is not None else None
    s = s.replace(" ", "")
    if s.startswith("+"):
        s = s[1:]
    if not s or len(s) > 100_000:
        return None
    if _INT.match(s):
        neg = s.startswith("-")
        body = s.lstrip("+-").lstrip("0") or "0"
        if len(body) > _MAX_INT_DIGITS:
            return Number(None, ("-" if neg and body != "0" else "") + body)
        return Number(Fraction(int(body) * (-1 if neg else 1)))
    if len(s) > 200:
        return None
    if _DEC.match(s):
        places = len(s.split(".")[1])
        return Number(Fraction(s), decimal_places=places)
    m = _SLASH.match(s)
    if m and int(m.group(2)) != 0:
        return Number(Fraction(int(m.group(1)), int(m.group(2))))
    m = _FRAC.match(s) or _FRAC_SHORT.match(s)
    if m and int(m.group(3)) != 0:
        val = Fraction(int(m.group(2)), int(m.group(3)))
        return Number(-val if m.group(1) == "-" else val)
    m = re.match(r"^-\\frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}$", s)
    if m and int(m.group(2)) != 0:
        return Number(-Fraction(int(m.group(1)), int(m.group(2))))
    rep = repeating_decimal(s)
    if rep is not None:
        return Number(rep)
    m = _SCI.match(s)
    if m:
        mant = Fraction(m.group(1))
        return Number(mant * Fraction(10) ** int(m.group(2)))
    return None


_MIXED = re.compile(
    r"^([+-]?)(\d+)\s*(?:\\frac\s*(?:\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}|(\d)(\d))|\s(\d+)\s*/\s*(\d+))$"
)


def mixed_number(s: str) -> tuple[Fraction | None, bool] | None:
    """``2\\frac{1}{3}`` / ``4 4/9`` -> (7/3, True). None when ``s`` is not of that shape.

    A whole number directly followed by a proper fraction is a mixed number (it is how MATH and
    school books write 7/3); with an improper fraction (``2\\frac{4}{3}``) the writer's intent is
    unclear, so the value is None and the caller must not declare it equal to anything but itself.
    """
    m = _MIXED.match(s.strip())
    if not m:
        return None
    sign, whole = m.group(1), int(m.group(2))
    num, den = next((int(a), int(b)) for a, b in ((m.group(3), m.group(4)), (m.group(5), m.group(6)), (m.group(7), m.group(8))) if a)
    if den == 0 or num >= den:
        return None, True
    val = whole + Fraction(num, den)
    return (-val if sign == "-" else val), True


_REPEATING = re.compile(r"^([+-]?)(\d*)\.(\d*)\s*\\(?:overline|dot)\s*(?:\{\s*(\d+)\s*\}|(\d))$")


def repeating_decimal(s: str) -> Fraction | None:
    """``0.\\overline{3}`` -> 1/3, ``0.1\\overline{6}`` -> 1/6, ``1.\\overline{27}`` -> 14/11 (exact)."""
    m = _REPEATING.match(s.replace(" ", ""))
    if not m:
        return None
    sign, whole, fixed, rep = m.group(1), m.group(2) or "0", m.group(3), m.group(4) or m.group(5)
    if len(fixed) + len(rep) > 60:
        return None
    val = Fraction(int(whole)) + (Fraction(int(fixed), 10 ** len(fixed)) if fixed else 0)
    val += Fraction(int(rep), 10 ** len(fixed) * (10 ** len(rep) - 1))
    return -val if sign == "-" else val


_UNITS_WORDS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS_WORDS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUE = {w: i for i, w in enumerate(_UNITS_WORDS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS_WORDS)}


def number_word(s: str) -> int | None:
    """``five`` / ``Twenty-one`` / ``one hundred and five`` / ``two thousand`` -> int; else None."""
    words = re.split(r"[\s-]+", unwrap_text(s).strip().lower().rstrip("."))
    if not words or not all(re.fullmatch(r"[a-z]+", w) for w in words) or len(words) > 8:
        return None
    total = current = 0
    seen = False
    for w in words:
        if w in _WORD_VALUE:
            current += _WORD_VALUE[w]
            seen = True
        elif w == "hundred" and seen:
            current *= 100
        elif w in ("thousand", "million") and seen:
            total += current * (1000 if w == "thousand" else 10**6)
            current = 0
        elif w == "and" and seen:
            continue
        else:
            return None
    return total + current if seen else None


def numbers_equal(gold: Number, pred: Number, rel_tol: float = 1e-6) -> bool:
    """Exact for integers and fractions; a written decimal may round a non-terminating gold."""
    if gold.digits is not None or pred.digits is not None:
        return gold.digits is not None and gold.digits == pred.digits
    assert gold.value is not None and pred.value is not None
    if gold.value == pred.value:
        return True
    if pred.decimal_places >= 2 or gold.decimal_places >= 2:
        # 0.333333 for 1/3: allow the rounding error of what was written, bounded by rel_tol.
        places = max(pred.decimal_places, gold.decimal_places)
        tol = max(Fraction(1, 2 * 10**places), Fraction(0))
        tol = min(tol, Fraction(rel_tol).limit_denominator(10**9) * max(1, abs(gold.value)))
        return abs(gold.value - pred.value) <= tol
    return False


# ---------------------------------------------------------------------------------------------
# Multiple-choice letters and plain words.
# ---------------------------------------------------------------------------------------------

_CHOICE = re.compile(r"^\(?\s*([A-Ea-e])\s*\)?(?:\s*[).:].*)?$")


def choice_letter(s: str) -> str | None:
    """``\\text{(C)}``, ``(C)``, ``C``, ``C) 12`` -> ``C``; anything else -> None."""
    t = unwrap_text(s).strip()
    t = re.sub(r"^\\textbf\{?|^\*\*", "", t).strip()
    if re.search(r"[,;]|\b(?:or|and)\b", t):
        return None  # several letters offered
    m = _CHOICE.match(t)
    if not m:
        return None
    if len(t) > 1 and not t.startswith("(") and t[1:2] not in (")", ".", ":"):
        return None
    return m.group(1).upper()


_WORD = re.compile(r"^[A-Za-z][A-Za-z '\-]*$")


def plain_words(s: str) -> str | None:
    """``\\text{Monday}`` -> ``monday`` when the answer is only words, else None."""
    t = unwrap_text(s)
    if _WORD.match(t) and len(t) > 1:
        return " ".join(t.lower().split())
    return None


_BASE = re.compile(r"^([0-9A-Za-z]+)_\{?(\d+)\}?$")


def base_number(s: str) -> tuple[str, str] | None:
    """``4210_{5}`` / ``40_9`` -> (digits, base); None for anything else."""
    m = _BASE.match(s.replace(" ", ""))
    return (m.group(1).upper().lstrip("0") or "0", m.group(2)) if m else None
