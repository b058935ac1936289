"""`report.md`: the headline numbers, the breakdown tables, and a few right and wrong samples."""

from __future__ import annotations

from typing import Any

EXAMPLES = 3  # right and wrong samples shown, each from a different problem
PROBLEM_CHARS, RESPONSE_CHARS = 400, 700
FENCE = "`````"  # longer than the fences models write in their responses


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _clip_head(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def _clip_tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "[...] " + text[-limit:]


def _examples(records: list[dict[str, Any]], correct: bool) -> list[dict[str, Any]]:
    picked, problems = [], set()
    for rec in records:
        if bool(rec["correct"]) == correct and rec["problem_id"] not in problems:
            picked.append(rec)
            problems.add(rec["problem_id"])
            if len(picked) == EXAMPLES:
                break
    return picked


def render_report(name: str, summary: dict[str, Any], records: list[dict[str, Any]]) -> str:
    n, s = summary["num_samples"], summary["settings"]
    sampling = s["sampling"]
    lines = [
        f"# Evaluation of {s['model']} on {name}",
        "",
        f"{summary['num_problems']} problems x {n} samples; backend {s['backend']}, temperature "
        f"{sampling['temperature']}, top_p {sampling['top_p']}, max_new_tokens {sampling['max_new_tokens']}, "
        f"prompt template `{s['prompt']['template']}`, seed {s['seed']}.",
        "",
        "| metric | % |",
        "|---|---|",
        f"| avg@{n} | {_pct(summary[f'avg@{n}'])} |",
        *(f"| pass@{k} | {_pct(summary[f'pass@{k}'])} |" for k in range(1, n + 1)),
        f"| maj@{n} | {_pct(summary[f'maj@{n}'])} |",
        f"| responses cut at max_new_tokens | {_pct(summary['truncated_rate'])} |",
        f"| responses without an answer | {_pct(summary['no_answer_rate'])} |",
        "",
        f"Mean response length {summary['response_length_mean']:.0f} tokens; grader failures "
        f"{summary['grader_failures']:.0f}.",
    ]
    for key, table in summary.get("by", {}).items():
        lines += ["", f"## By {key}", "", f"| {key} | problems | avg@{n} % | pass@{n} % | maj@{n} % |",
                  "|---|---|---|---|---|"]
        for value, row in table.items():
            lines.append(f"| {value} | {row['num_problems']} | {_pct(row[f'avg@{n}'])} | {_pct(row[f'pass@{n}'])} "
                         f"| {_pct(row[f'maj@{n}'])} |")
    for title, correct in (("Right", True), ("Wrong", False)):
        picked = _examples(records, correct)
        lines += ["", f"## {title} samples ({len(picked)})"]
        for rec in picked:
            lines += [
                "", f"### problem {rec['problem_id']}, sample {rec['sample']}: gold `{rec['gold']}`, "
                f"extracted `{rec['extracted']}` ({rec['reason']}, stopped by {rec['finish_reason']})",
                "", "Problem:", "", FENCE, _clip_head(rec["problem"], PROBLEM_CHARS), FENCE,
                "", f"Response ({rec['response_tokens']} tokens, end shown):", "", FENCE,
                _clip_tail(rec["response"], RESPONSE_CHARS), FENCE,
            ]
    return "\n".join(lines) + "\n"
