"""A small, safe numeric evaluator for a subset of LaTeX, used as a fast path before sympy.

It reads numbers, single-letter variables, ``\\pi``, ``e``, ``i``, + - * / ^, implicit
multiplication, ``\\frac``, ``\\sqrt``, ``\\sqrt[n]``, ``\\cdot``, ``\\times`` and brackets, and
evaluates with Python complex numbers at fixed sample points for the variables. It never calls
``eval``; anything outside the subset raises ``Unsupported`` and the case goes to the engine.
Two expressions that agree to 1e-9 at every sample point are equal; that differ by more than 1e-6
at some point are different; otherwise the engine decides.
"""

from __future__ import annotations

import cmath
import math
import re
from fractions import Fraction

_TOKEN = re.compile(r"\s*(\d+\.\d*|\.\d+|\d+|\\[a-zA-Z]+|[a-zA-Z]|[-+*/^(){}\[\]!_=])")
MAX_SUM_TERMS = 2000
_FUNCS = {
    "\\sin": cmath.sin, "\\cos": cmath.cos, "\\tan": cmath.tan,
    "\\sec": lambda z: 1 / cmath.cos(z), "\\csc": lambda z: 1 / cmath.sin(z), "\\cot": lambda z: 1 / cmath.tan(z),
    "\\ln": cmath.log, "\\log": cmath.log, "\\exp": cmath.exp,
}
_GREEK = {"\\alpha", "\\beta", "\\gamma", "\\theta", "\\phi", "\\lambda", "\\mu", "\\omega", "\\sigma", "\\tau"}
# Sample points: every variable gets its own value at each point (never x - y constant).
_SAMPLES = (
    (0.7316, 1.4142, 0.6180, 1.7725),
    (1.2519, 0.8313, 1.9123, 0.9431),
    (1.9123, 1.1071, 0.7854, 1.3863),
    (0.9887, 1.6931, 1.2346, 0.6619),
)
_INT_SAMPLES = ((3, 5, 2, 4), (4, 2, 6, 3), (6, 7, 3, 5), (7, 3, 5, 2), (10, 4, 7, 6), (13, 6, 4, 7))
MAX_TOKENS = 200
MAX_EXACT_TOKENS = 4000  # exact integer/fraction arithmetic is linear in the tokens: long sums are fine
MAX_EXACT_BITS = 1 << 20  # an exact power may have at most about 315,000 digits
# Deeper nesting of ( and { is never evaluated here: the recursive evaluator would decide it or not
# depending on the process's recursion limit (which torch's compiler raises), not on the answer.
MAX_NESTING = 24


def nesting_depth(s: str) -> int:
    """The deepest nesting of ( and { in `s`."""
    depth = deepest = 0
    for c in s:
        if c in "{(":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "})":
            depth -= 1
    return deepest


class Unsupported(Exception):
    pass


def _tokens(s: str, limit: int = MAX_TOKENS) -> list[str]:
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\div", "/")
    out, pos = [], 0
    s = s.strip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            raise Unsupported(s[pos : pos + 10])
        out.append(m.group(1))
        pos = m.end()
        if len(out) > limit:
            raise Unsupported("too long")
    return out


class _Parser:
    def __init__(self, toks: list[str], env: dict[str, complex]) -> None:
        self.t, self.k, self.env = toks, 0, env

    def peek(self) -> str | None:
        return self.t[self.k] if self.k < len(self.t) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise Unsupported(f"expected {want}")
        self.k += 1
        return tok

    def expr(self) -> complex:
        val = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            val = val + rhs if op == "+" else val - rhs
        return val

    def term(self) -> complex:
        val = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "/"):
                self.take()
                rhs = self.unary()
                if tok == "/":
                    if rhs == 0:
                        raise Unsupported("division by zero")
                    val = val / rhs
                else:
                    val = val * rhs
            elif tok is not None and tok not in ("+", "-", ")", "}", "]", "^"):
                val = val * self.power()  # implicit multiplication
            else:
                return val

    def unary(self) -> complex:
        if self.peek() == "-":
            self.take()
            return -self.unary()
        if self.peek() == "+":
            self.take()
        return self.power()

    def power(self) -> complex:
        base = self.atom()
        while self.peek() == "!":
            self.take()
            if base.imag != 0 or base.real != int(base.real) or not 0 <= base.real <= 30:
                raise Unsupported("factorial")
            base = complex(math.factorial(int(base.real)))
        if self.peek() == "^":
            self.take()
            exp = self.unary() if self.peek() == "-" else self.atom()
            if abs(exp) > 200 or abs(base) > 1e12:
                raise Unsupported("large power")
            if exp.imag == 0 and base.imag == 0 and base.real < 0 and exp.real != int(exp.real):
                raise Unsupported("branch")
            if exp.imag == 0 and exp.real == int(exp.real) and base.imag == 0:
                if base == 0 and exp.real < 0:
                    raise Unsupported("division by zero")
                return complex(base.real ** int(exp.real))
            return base**exp
        return base

    def group(self) -> complex:
        if self.peek() == "{":
            self.take()
            v = self.expr()
            self.take("}")
            return v
        tok = self.take()  # \frac12: single-character arguments
        if tok.isdigit():
            if len(tok) > 1:  # "12" after \frac is two arguments
                self.t[self.k - 1 : self.k] = [tok[0], tok[1:]]
            return complex(int(tok[0]))
        self.k -= 1
        return self.atom()

    def function(self, name: str) -> complex:
        """``\\sin^2(x)``, ``\\log_2 8``, ``\\ln x``: optional base and power, then the argument."""
        base = None
        if name == "\\log" and self.peek() == "_":
            self.take()
            base = self.group()
        power = None
        if self.peek() == "^":
            self.take()
            power = self.atom()
        arg = self.group() if self.peek() in ("{", "(") else self.power()
        if arg == 0 and name in ("\\ln", "\\log"):
            raise Unsupported("log 0")
        value = _FUNCS[name](arg)
        if base is not None:
            value = value / cmath.log(base)
        return value**power if power is not None else value

    def atom(self) -> complex:
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            if len(tok) > 30:
                raise Unsupported("long number")
            return complex(float(tok))
        if tok in ("(", "{", "["):
            v = self.expr()
            self.take({"(": ")", "{": "}", "[": "]"}[tok])
            return v
        if tok == "\\frac":
            num = self.group()
            den = self.group()
            if den == 0:
                raise Unsupported("division by zero")
            return num / den
        if tok == "\\sqrt":
            if self.peek() == "[":
                self.take()
                n = self.expr()
                self.take("]")
                rad = self.group()
                if rad.imag == 0 and rad.real < 0:
                    raise Unsupported("branch")
                return rad ** (1 / n)
            rad = self.group()
            return cmath.sqrt(rad)
        if tok in _FUNCS:
            return self.function(tok)
        if tok == "\\binom":
            n, k = self.group(), self.group()
            if any(v.imag or v.real != int(v.real) or not 0 <= v.real <= 200 for v in (n, k)):
                raise Unsupported("binom")
            return complex(math.comb(int(n.real), int(k.real)))
        if tok in ("\\sum", "\\prod"):
            return self.big_operator(tok)
        if tok in self.env and self.peek() != "_":  # a summation index may be called i or e
            return self.env[tok]
        if tok == "\\pi":
            return complex(math.pi)
        if tok == "e":
            return complex(math.e)
        if tok == "i":
            return 1j
        if len(tok) == 1 and tok.isalpha() and self.peek() == "_":
            self.take()
            index = self.group()
            if index.imag or index.real != int(index.real) or abs(index.real) > 10**6:
                raise Unsupported("subscript")
            # An unknown sequence or function: a fixed pseudo-random value per (name, index), so two
            # answers agree only when they use the same terms (F_k F_{n-k-1} summed either way).
            return complex(1 + ((int(index.real) * 7919 + ord(tok) * 104729) % 9973) / 9973)
        if tok in _GREEK or (len(tok) == 1 and tok.isalpha()):
            if tok not in self.env:
                raise Unsupported("unknown variable")
            return self.env[tok]
        raise Unsupported(tok)

    def big_operator(self, op: str) -> complex:
        """``\\sum_{k=a}^{b} body`` / ``\\prod``: finite, integer bounds, at most MAX_SUM_TERMS terms."""
        self.take("_")
        self.take("{")
        var = self.take()
        if not (len(var) == 1 and var.isalpha()):
            raise Unsupported("index")
        self.take("=")
        lo = self.expr()
        self.take("}")
        self.take("^")
        hi = self.group()
        if lo.imag or hi.imag or lo.real != int(lo.real) or hi.real != int(hi.real):
            raise Unsupported("bounds")
        a, b = int(lo.real), int(hi.real)
        if b - a + 1 > MAX_SUM_TERMS:
            raise Unsupported("too many terms")
        start, saved = self.k, self.env.get(var)
        total = complex(0 if op == "\\sum" else 1)
        end = None
        for j in range(a, b + 1):
            self.env[var] = complex(j)
            self.k = start
            term = self.term()
            end = self.k
            total = total + term if op == "\\sum" else total * term
        if end is None:  # empty range: skip the body
            self.env[var] = complex(a)
            self.k = start
            self.term()
            end = self.k
        self.k = end
        if saved is None:
            self.env.pop(var, None)
        else:
            self.env[var] = saved
        return total


class _ExactParser(_Parser):
    """Integers and fractions only (+ - * / ^ ! binom frac, brackets): exact, with bounded powers.

    Used before the sample-point evaluator so that ``2^{100}+1`` never equals ``2^{100}`` through a
    float tolerance, and so that towers such as ``2^{2^{2^{2^{2}}}}`` are compared exactly when their
    value fits in ``MAX_EXACT_BITS`` (and rejected, not evaluated, when it does not).
    """

    def power(self):
        base = self.atom()
        while self.peek() == "!":
            self.take()
            if base.denominator != 1 or not 0 <= base <= 1000:
                raise Unsupported("factorial")
            base = Fraction(math.factorial(int(base)))
        if self.peek() == "^":
            self.take()
            exp = self.unary() if self.peek() == "-" else self.atom()
            if exp.denominator != 1:
                raise Unsupported("fractional power")
            e = int(exp)
            if base == 0 and e < 0:
                raise Unsupported("division by zero")
            size = max(abs(base.numerator).bit_length(), abs(base.denominator).bit_length())
            if abs(e) > MAX_EXACT_BITS or (size > 1 and size * abs(e) > MAX_EXACT_BITS):
                raise Unsupported("huge power")
            return base**e
        return base

    def group(self):
        if self.peek() == "{":
            self.take()
            v = self.expr()
            self.take("}")
            return v
        tok = self.take()
        if tok.isdigit():
            if len(tok) > 1:
                self.t[self.k - 1 : self.k] = [tok[0], tok[1:]]
            return Fraction(int(tok[0]))
        self.k -= 1
        return self.atom()

    def atom(self):
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            if len(tok) > 4000:
                raise Unsupported("long number")
            return Fraction(tok)
        if tok in ("(", "{", "["):
            v = self.expr()
            self.take({"(": ")", "{": "}", "[": "]"}[tok])
            return v
        if tok == "\\frac":
            num, den = self.group(), self.group()
            if den == 0:
                raise Unsupported("division by zero")
            return num / den
        if tok == "\\binom":
            n, k = self.group(), self.group()
            if any(v.denominator != 1 or not 0 <= v <= 5000 for v in (n, k)):
                raise Unsupported("binom")
            return Fraction(math.comb(int(n), int(k)))
        raise Unsupported(tok)


def exact_value(s: str) -> Fraction | None:
    """The exact rational value of a variable-free integer/fraction expression, or None."""
    try:
        p = _ExactParser(_tokens(s, MAX_EXACT_TOKENS), {})
        v = p.expr()
        return v if p.peek() is None else None
    except (Unsupported, ValueError, ZeroDivisionError, RecursionError, OverflowError):
        return None


def variables(s: str) -> set[str]:
    return {t for t in _tokens(s) if (len(t) == 1 and t.isalpha() and t not in "ei") or t in _GREEK}


def evaluate(s: str, env: dict[str, complex]) -> complex:
    p = _Parser(_tokens(s), env)
    v = p.expr()
    if p.peek() is not None:
        raise Unsupported("trailing tokens")
    if not (cmath.isfinite(v)):
        raise Unsupported("not finite")
    return v


def numeric_equal(pred: str, gold: str) -> bool | None:
    """True / False when the sample points decide it, None when the engine must."""
    if max(nesting_depth(pred), nesting_depth(gold)) > MAX_NESTING:
        return None
    ea, eb = exact_value(pred), exact_value(gold)
    if ea is not None and eb is not None:
        return ea == eb
    big = next((abs(v) for v in (ea, eb) if v is not None), 0)
    if big > 10**12:
        return None  # a float cannot tell a huge exact value from its neighbour
    try:
        names = sorted(variables(pred) | variables(gold))
        if len(names) > 4:
            return None
        decided_equal = True
        discrete = any(x in pred + gold for x in ("\\sum", "\\prod", "_"))
        for k in range(len(_INT_SAMPLES) if discrete else len(_SAMPLES)):
            # sums, products and subscripts are evaluated at whole numbers (their bounds must be)
            env = {n: complex(_INT_SAMPLES[k][j] if discrete else _SAMPLES[k][j]) for j, n in enumerate(names)}
            a, b = evaluate(pred, env), evaluate(gold, env)
            scale = max(1.0, abs(a), abs(b))
            diff = abs(a - b)
            if diff > 1e-6 * scale:
                return False
            if diff > 1e-9 * scale or scale > 1e12:
                decided_equal = False  # near-equal, or too large for a float to be sure
            if not names:
                break
        return True if decided_equal else None
    except (Unsupported, OverflowError, ZeroDivisionError, ValueError, RecursionError):
        return None
