"""Prompt templates (files under `assets/prompts/`) and their rendering through a tokenizer.

A template is text with one `{problem}` placeholder. Built in: `cot` (think step by step, answer in
`\\boxed{}`), `r1_zero` (the DeepSeek-R1-Zero / Dr. GRPO `<think>`/`<answer>` format, meant for base
models without a chat template) and `bare` (the problem alone). A config may also name any file.

With `use_chat_template`, the rendered text becomes the user turn (after an optional system turn)
of the tokenizer's chat template, with the generation prompt appended; otherwise it is used raw.
Prompts longer than `max_prompt_length` tokens are dropped and counted, never cut.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_grpo.utils.errors import UserError

log = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets" / "prompts"
PLACEHOLDER = "{problem}"


class PromptError(UserError, ValueError):
    """A prompt template that cannot be used; the message says which and why."""


def load_template(name_or_path: str) -> str:
    """A built-in template by name (`cot`, `r1_zero`, `bare`) or a template file by path."""
    builtin = ASSETS_DIR / f"{name_or_path}.txt"
    path = builtin if builtin.is_file() else Path(name_or_path).expanduser()
    if not path.is_file():
        names = sorted(p.stem for p in ASSETS_DIR.glob("*.txt"))
        raise PromptError(f"prompt template '{name_or_path}' is neither a built-in ({', '.join(names)}) nor a file")
    text = path.read_text(encoding="utf-8")
    if text.count(PLACEHOLDER) != 1:
        raise PromptError(f"prompt template {path} must contain {PLACEHOLDER} exactly once")
    return text


def render_prompt(
    problem: str,
    template: str,
    tokenizer: Any = None,
    *,
    use_chat_template: bool = True,
    system_prompt: str | None = None,
) -> str:
    """The full prompt text the model sees (before tokenisation)."""
    text = template.replace(PLACEHOLDER, problem)
    if not use_chat_template:
        return text
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise PromptError(
            "use_chat_template is on but the tokenizer has no chat template: "
            "set data.prompt.use_chat_template=false for base models"
        )
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": text}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(text: str, tokenizer: Any, *, chat_rendered: bool) -> list[int]:
    """Token ids of a rendered prompt. Chat templates already insert BOS where the model wants
    one, so rendered chat text is encoded without adding special tokens again."""
    return tokenizer(text, add_special_tokens=not chat_rendered)["input_ids"]


@dataclass
class PromptStats:
    kept: int = 0
    dropped_too_long: int = 0


def build_prompts(
    problems: list[Any],
    tokenizer: Any,
    *,
    template: str = "cot",
    use_chat_template: bool = True,
    system_prompt: str | None = None,
    max_prompt_length: int | None = None,
    where: str = "dataset",
) -> tuple[list[dict[str, Any]], PromptStats]:
    """Render and tokenise every problem; drop (and count) those over `max_prompt_length` tokens.

    Returns rows `{"prompt", "prompt_ids", "answer", "problem", "index"}` and the counts.
    """
    tmpl = load_template(template)
    rows, stats = [], PromptStats()
    for index, item in enumerate(problems):
        text = render_prompt(item.problem, tmpl, tokenizer, use_chat_template=use_chat_template, system_prompt=system_prompt)
        ids = encode_prompt(text, tokenizer, chat_rendered=use_chat_template)
        if max_prompt_length is not None and len(ids) > max_prompt_length:
            stats.dropped_too_long += 1
            continue
        rows.append({"prompt": text, "prompt_ids": ids, "answer": item.answer, "problem": item.problem, "index": index})
    stats.kept = len(rows)
    if stats.dropped_too_long:
        log.warning(
            "%s: dropped %d of %d prompts longer than max_prompt_length=%d tokens",
            where, stats.dropped_too_long, len(problems), max_prompt_length,
        )
    if not rows:
        raise PromptError(f"{where}: every prompt is longer than max_prompt_length={max_prompt_length}")
    return rows, stats
