"""Answer extraction from a model response: boxes, ``<answer>`` tags, "final answer is".

Pure string scanning, linear in the response length (no backtracking regex over the whole
response), so it runs in the calling process. Hedges are not resolved here: several final answers
are returned as ``alternatives`` and judged as one answer set by the equivalence step, so
"3 or 5" can only ever match a gold that is the set {3, 5}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from nemo_grpo.rewards.normalize import strip_math_delimiters

ExtractionPolicy = Literal["auto", "boxed", "answer_tag"]

MAX_ANSWER_CHARS = 1000  # an "answer" longer than this is not an answer; graded as wrong


@dataclass(frozen=True)
class Extraction:
    answer: str | None  # the final answer text (alternatives joined by ", "), None if none found
    source: str  # boxed | answer_tag | final_answer | bare | last_number | none
    alternatives: tuple[str, ...] = field(default_factory=tuple)  # >1: several final answers
    hedge: str | None = None  # "or" / "multi_box" when the final answer offers alternatives


_BOX_CMDS = ("\\boxed", "\\fbox")


def _match_brace(text: str, open_idx: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_idx``; escaped braces are skipped."""
    depth = 0
    i = open_idx
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def find_boxes(text: str) -> list[tuple[int, int, str]]:
    """All complete ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed 5`` as (start, end, content)."""
    out: list[tuple[int, int, str]] = []
    i = 0
    while True:
        starts = [(text.find(cmd, i), cmd) for cmd in _BOX_CMDS]
        starts = [(s, c) for s, c in starts if s >= 0]
        if not starts:
            return out
        start, cmd = min(starts)
        j = start + len(cmd)
        if j < len(text) and (text[j].isalpha()):  # \boxedx is another command
            i = j
            continue
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            close = _match_brace(text, j)
            if close is None:  # unbalanced (truncated) box: not an answer
                i = j + 1
                continue
            out.append((start, close + 1, text[j + 1 : close].strip()))
            i = close + 1
        elif j > start + len(cmd):  # "\boxed 5"
            m = re.match(r"[^\s$]+", text[j:])
            if m:
                out.append((start, j + m.end(), m.group(0)))
                i = j + m.end()
            else:
                i = j
        else:
            i = j


_CONNECTOR = re.compile(
    r"\\text\s*\{\s*(?:or|and)\s*\}|\\(?:quad|qquad|,|;)|\b(?:or|and)\b|[\s$,;.]|\\\(|\\\)|\\\[|\\\]"
)


_CORRECTION = re.compile(r"\b(?:wait|actually|mistake|wrong|instead|correct(?:ion|ed)?|recheck|re-check|however|but|hmm|no)\b", re.I)


def _final_box_group(
    text: str, boxes: list[tuple[int, int, str]], want: int = 1, max_words: int | None = None
) -> tuple[list[str], bool, int]:
    """The last box plus the boxes just before it that are only joined by connectors.

    Returns (contents, joined_by_or, end_position). A box followed later by ordinary prose and
    another box is a superseded attempt, so only the final group counts, with two exceptions:
    ``want`` > 1 (the gold has that many parts) also takes earlier boxes of the same paragraph
    that are separated by a short phrase without a correction word ("the area is \\boxed{6} and
    the perimeter is \\boxed{12}"); ``max_words`` (for golds) allows that many words in a gap.
    """
    group = [boxes[-1]]
    has_or = False
    for prev in reversed(boxes[:-1]):
        gap = text[prev[1] : group[0][0]]
        rest = _CONNECTOR.sub(" ", gap).strip()
        short_phrase = (
            len(group) < want and len(gap) <= 200 and "\n\n" not in gap and not _CORRECTION.search(gap)
        ) or (max_words is not None and len(re.findall(r"[A-Za-z]+", rest)) <= max_words and len(gap) <= 80)
        if (len(gap) > 40 or rest) and not short_phrase:
            break
        has_or = has_or or bool(re.search(r"\bor\b", gap))
        group.insert(0, prev)
    return [b[2] for b in group], has_or, boxes[-1][1]


_OR_SPLIT = re.compile(r"\\(?:text|mbox|textrm|mathrm)\s*\{\s*or\s*\}|\\lor\b|\\vee\b|(?<![a-zA-Z\\])or(?![a-zA-Z])")
_AND_SPLIT = re.compile(r"\\(?:text|mbox|textrm|mathrm)\s*\{\s*(?:and|,)\s*\}|(?<![a-zA-Z\\])and(?![a-zA-Z])")


def split_alternatives(answer: str) -> tuple[list[str], bool]:
    """Split "3 or 5" / "x=2 \\text{ and } x=3" into parts; True when "or" was the joiner."""
    has_or = bool(_OR_SPLIT.search(answer))
    parts = _OR_SPLIT.split(answer)
    parts = [q for p in parts for q in _AND_SPLIT.split(p)]
    parts = [p.strip().strip(",;").strip() for p in parts]
    parts = [p for p in parts if p]
    return parts, has_or and len(parts) > 1


_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
_PHRASE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer\s+is|^\s*\**answer\**\s*:|^\s*####)\s*(?:is)?\s*[:：]?\s*",
    re.IGNORECASE | re.MULTILINE,
)
_LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _answer_tag_content(text: str) -> str | None:
    start = text.rfind(_ANSWER_OPEN)
    if start < 0:
        return None
    body = text[start + len(_ANSWER_OPEN) :]
    end = body.find(_ANSWER_CLOSE)
    return (body if end < 0 else body[:end]).strip()


def _phrase_answer(text: str) -> tuple[str, int] | None:
    last = None
    for m in _PHRASE.finditer(text[-20000:]):
        last = m
    if last is None:
        return None
    offset = max(0, len(text) - 20000)
    rest = text[offset + last.end() :]
    line = rest.split("\n", 1)[0].strip()
    if line.startswith("$") and line.count("$") >= 2:  # keep the whole math span
        close = line.find("$", 1 if not line.startswith("$$") else 2)
        line = line[: close + (2 if line.startswith("$$") else 1)]
    else:
        line = re.split(r"(?<=[^\d\s])\.(?:\s|$)|\.\s", line, maxsplit=1)[0]
    if re.search(r"[A-Za-z]{3,}", re.sub(r"\$[^$]*\$|\\[a-zA-Z]+", "", line)) and " is " in line:
        line = line.rsplit(" is ", 1)[1]  # "Final Answer: The volume of $V$ is 120"
    line = strip_math_delimiters(re.sub(r'^(?:\\?")+|(?:\\?")+$', "", line.strip()).strip())
    if not line:
        return None
    return line, offset + last.end() + len(line)


_TURN_MARKERS = re.compile(
    r"<\|im_end\|>|<\|im_start\|>|<\|eot_id\|>|<\|eom_id\|>|<\|end_of_text\|>|<\|endoftext\|>|<\|end\|>"
    r"|<\|start_header_id\|>|<end_of_turn>|<start_of_turn>|</s>|<\uff5cend\u2581of\u2581sentence\uff5c>"
    r"|<\uff5cUser\uff5c>|<\uff5cAssistant\uff5c>|<\|user\|>|<\|assistant\|>"
)


def cut_turn_markers(text: str) -> str:
    """The response up to the first chat-template turn marker (a run-on into the next turn is not
    the answer). A marker at the very start is skipped."""
    m = _TURN_MARKERS.search(text)
    while m is not None and not text[: m.start()].strip():
        text = text[m.end() :]
        m = _TURN_MARKERS.search(text)
    return text[: m.start()] if m else text


# --- the reader's fallback: the final statement of a response with no anchor ----------------------

_MATH_SPAN = re.compile(
    r"(?<!\\)\$\$(.+?)\$\$|\\\[(.+?)\\\]|(?<!\\)\$((?:\\.|[^$\n\\])+?)\$|\\\(([^\n]+?)\\\)", re.DOTALL
)
_STRAY_DELIMITER = re.compile(r"(?<![\\\d\s])\s*(?<!\\)\$(?!\s*\d)|^\s*\$(?!\s*\d)|\\[()\[\]]")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_NUMBER_TOKEN = re.compile(
    r"(?<![\w.])[-\u2212]?\$?\d[\d,]*(?:\.\d+)?(?:\s+\d+/\d+|\s*/\s*\d+(?:\.\d+)?)?"
    r"(?:\s*(?:%|\u20ac|\u00a3|\u00a5|\$|percent\b|m\u00b2|km\u00b2|cm\u00b2))?"
)
_VERB = re.compile(r"\b(?:is|are|was|were|equals|be|gives|get|becomes)\b|=|:", re.I)
READER_SENTENCES = 3  # how many final sentences the reader looks back through


def reader_answer(text: str) -> str | None:
    """What a reader takes as the answer of a response without box, tag or "answer is" phrase.

    Looking back over the last few sentences (math spans are kept whole; inline math never spans a
    line), the first sentence that holds math or a number gives it: its last formula (a display
    block, ``$...$`` or ``\\(...\\)``), else, in a finished sentence, the number after its last
    "is" / "=" (or its last number), with units and currency left for normalisation.
    """
    text = text[-4000:]
    spans: list[str] = []

    def hide(m: re.Match) -> str:
        spans.append(next(g for g in m.groups() if g is not None).strip())
        return f"\x00{len(spans) - 1}\x00"

    masked = _MATH_SPAN.sub(hide, text)
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(masked):
        pieces.append((masked[start : m.start()], m.group(0) != "\n"))
        start = m.end()
    pieces.append((masked[start:], False))
    seen = 0
    for sentence, finished in reversed(pieces):
        if not sentence.strip():
            continue
        seen += 1
        if seen > READER_SENTENCES:
            return None
        if _STRAY_DELIMITER.search(sentence.replace("\x00", " ")):
            return None  # broken math (an inline formula across lines): nothing a reader can read
        ids = list(re.finditer(r"\x00(\d+)\x00", sentence))
        after = sentence[ids[-1].end() :] if ids else ""
        if ids and not _NUMBER_TOKEN.search(after):
            answer = spans[int(ids[-1].group(1))]
            return answer or None
        plain = re.sub(r"\x00\d+\x00", " ", sentence) if ids else sentence
        if not _NUMBER_TOKEN.search(plain):
            continue
        if "\\boxed" in plain or "\\fbox" in plain:
            return None  # an unclosed box: the answer was never finished
        if not finished:  # only a value stated last: "... which is 1,000.99\u20ac" (not "2 + 2 = 4")
            last = list(_NUMBER_TOKEN.finditer(plain))[-1]
            if not re.search(r"(?:\b(?:is|are|was|were|equals|be|becomes)|'s|:)\s*$", plain[: last.start()]):
                return None
            if re.search(r"[A-Za-z]{2,}.*[A-Za-z]|\d", plain[last.end() :]) or re.search(r"\w", plain[last.end() :].strip(" .")) and len(plain[last.end() :].split()) > 1:
                return None  # "2 + 2 = 4, and I still need to add the rest" is not a statement
            return last.group(0).strip().rstrip(",")
        verbs = list(_VERB.finditer(plain))
        tail = plain[verbs[-1].end() :] if verbs else plain
        nums = _NUMBER_TOKEN.findall(tail) or _NUMBER_TOKEN.findall(plain)
        return nums[0 if verbs and _NUMBER_TOKEN.findall(tail) else -1].strip().rstrip(",")
    return None


def _prose_value(line: str) -> str:
    """``Jane started growing Sphere 3 hours ago`` -> ``3``: a phrase answer that is a sentence."""
    if not re.search(r"[A-Za-z]{3,}\s+[A-Za-z]{3,}", re.sub(r"\$[^$]*\$|\\[a-zA-Z]+(?:\{[^{}]*\})?", "", line)):
        return line
    value = reader_answer(line.rstrip(".") + ".")
    return value if value else line


def _from_text(
    text: str, policy: ExtractionPolicy, allow_last_number: bool, source: str, reader: bool = False, want: int = 1
) -> Extraction:
    boxes = find_boxes(text)
    box_cand = None
    if boxes:
        contents, or_joined, end = _final_box_group(text, boxes, want)
        box_cand = (contents, or_joined, end)
    phrase = _phrase_answer(text) if policy != "boxed" else None
    if phrase is not None and ("\\boxed" in phrase[0] or "\\fbox" in phrase[0]):
        phrase = None
    if box_cand and (phrase is None or box_cand[2] >= phrase[1]):
        contents, or_joined, _ = box_cand
        return _make(contents, "boxed" if source == "text" else source, "multi_box" if len(set(contents)) > 1 else None, or_joined)
    if phrase is not None:
        answer = _prose_value(phrase[0]) if reader else phrase[0]
        return _make([answer], "final_answer" if source == "text" else source, None, False)
    if source == "answer_tag" and text.strip():
        return _make([text.strip()], source, None, False)
    # A one-line bare answer counts under `auto` only: `boxed` means the final box group, nothing else.
    bare = _bare_answer(text) if source == "text" and policy == "auto" else None
    if bare is not None:
        return _make([bare], "bare", None, False)
    if reader and source == "text" and policy == "auto":
        found = reader_answer(text)
        if found:
            return _make([found], "reader", None, False)
    if allow_last_number:
        nums = _LAST_NUMBER.findall(text[-2000:])
        if nums:
            return _make([nums[-1].rstrip(",")], "last_number", None, False)
    return Extraction(None, "none")


_BARE_MAX_CHARS = 80


def _bare_answer(text: str) -> str | None:
    """A response that is nothing but a short math answer ("$\\frac{1}{3}$", "28 %", "Answer: 9").

    Only one line, at most 80 characters and no prose: a truncated reasoning never qualifies.
    """
    t = text.strip()
    if not t or "\n" in t or len(t) > _BARE_MAX_CHARS:
        return None
    t = re.sub(r"^\**answer\**\s*:?\s*", "", t, flags=re.IGNORECASE)
    t = strip_math_delimiters(t).replace("$", " ").strip()
    prose = re.sub(r"\\[a-zA-Z]+|\b(?:percent|percentage|pct|degrees?|cm|m|units?)\b", "", t)
    if not t or re.search(r"[A-Za-z]{2,}", prose):
        return None
    return t


def _make(contents: list[str], source: str, hedge: str | None, or_joined: bool) -> Extraction:
    parts: list[str] = []
    any_or = or_joined
    for c in dict.fromkeys(c for c in contents if c.strip()):  # repeated boxes count once
        sub, has_or = split_alternatives(c) if len(c) <= MAX_ANSWER_CHARS else ([c], False)
        any_or = any_or or has_or
        parts.extend(sub or [c])
    if any_or and len(parts) > 1:
        hedge = "or"
    if not parts:
        return Extraction(None, "none")
    answer = parts[0] if len(parts) == 1 else ", ".join(parts)
    return Extraction(answer, source, tuple(parts) if len(parts) > 1 else (), hedge)


def extract_answer(
    response: str, policy: ExtractionPolicy = "auto", allow_last_number: bool = False, reader: bool = False,
    want: int = 1,
) -> Extraction:
    """Extract the final answer of ``response``.

    - ``answer_tag``: only the last ``<answer>...</answer>`` (a box inside it wins; an unclosed tag at
      the end counts, since ``</answer>`` is often the stop string).
    - ``boxed``: only the final group of ``\\boxed{}`` / ``\\fbox{}``.
    - ``auto``: the answer tag if present, else whichever of the final box group and the last
      "final answer is ..." ends later, else a response that is nothing but a one-line answer.
    ``allow_last_number`` enables the last-number fallback for responses with no anchor at all;
    ``reader`` (under ``auto``) the reader's fallback first: the last display block or formula of
    the final sentence, or the value a finished final sentence states (``reader_answer``).
    ``want`` > 1 (the gold has that many parts) lets one final group hold that many boxes of the
    same paragraph. Text after a chat-template turn marker (``<|im_end|>``, ...) is never read.
    """
    response = cut_turn_markers(response)
    if policy in ("auto", "answer_tag"):
        tag = _answer_tag_content(response)
        if tag is not None:
            return _from_text(tag, "auto", False, "answer_tag", want=want)
        if policy == "answer_tag":
            return Extraction(None, "none")
    return _from_text(response, policy, allow_last_number, "text", reader, want)


def gold_answer(gold: str) -> str:
    """The answer a gold string states. Golds are usually bare answers and pass unchanged; a gold
    that is a worked solution or holds boxes (some public sets store them so) is read like a
    response, every box of its final group counting (they are parts of one answer)."""
    g = gold.strip()
    if "\\boxed" in g or "\\fbox" in g:
        boxes = find_boxes(g)
        if boxes:
            contents, _, _ = _final_box_group(g, boxes, max_words=2)
            parts = [c for c in dict.fromkeys(contents) if c.strip()]
            return ", ".join(parts) if parts else g
    if len(g) > 120 and re.search(r"[A-Za-z]{3,}\s+[A-Za-z]{3,}\s+[A-Za-z]{3,}", g):
        ex = extract_answer(g, "auto", reader=True)
        if ex.answer:
            return ex.answer
    return g
