"""Rollout dumps: what the model wrote at a step, one JSON object per response, so a researcher can
read the samples behind the curves (`<log_dir>/rollouts/step_<N>.jsonl`, every
`logger.rollout_dump_period` steps).

    jq -r 'select(.correct) | .response' logs/run/rollouts/step_10.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def rollout_dump_due(period: int, step: int) -> bool:
    return period > 0 and step % period == 0


def rollout_records(step: int, collected: Any, rewards: torch.Tensor, advantages: torch.Tensor) -> list[dict[str, Any]]:
    """One record per response of `collected` (a StepRollouts: rollouts, grades and the per-prompt
    lists prompts / problems / answers, indexed by `prompt_index`). `rewards` are the rewards the
    advantages were computed from, `advantages` one value per response."""
    prompts, problems, answers = collected.prompts, collected.problems, collected.answers
    records, seen = [], {}
    for i, (rollout, grade) in enumerate(zip(collected.rollouts, collected.grades)):
        group = rollout.prompt_index
        seen[group] = seen.get(group, -1) + 1
        records.append({
            "step": step,
            "group": group,
            "sample": seen[group],
            "problem": problems[group] if group < len(problems) else None,
            "prompt": prompts[group] if group < len(prompts) else None,
            "response": rollout.text,
            "ground_truth": answers[group],
            "extracted_answer": grade.extracted,
            "correct": bool(grade.correct),
            "format_ok": bool(grade.format_ok),
            "grade_status": grade.status,
            "reward": float(rewards[i]),
            "advantage": float(advantages[i]),
            "finish_reason": rollout.finish_reason,
            "length": len(rollout.response_ids),
        })
    return records


def dump_rollouts(log_dir: str | Path, step: int, collected: Any, rewards: torch.Tensor,
                  advantages: torch.Tensor) -> Path:
    """Write `<log_dir>/rollouts/step_<step>.jsonl` (replacing the file of an earlier attempt of
    this step, as a resumed run re-runs it)."""
    path = Path(log_dir) / "rollouts" / f"step_{step}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    records = rollout_records(step, collected, rewards, advantages)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    tmp.replace(path)
    return path
