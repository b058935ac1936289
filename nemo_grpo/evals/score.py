"""Sample n responses per prompt with any generate function, grade them, and group them by problem.

`generate` is anything with the `GenerationBackend.generate` signature: a local backend's method
(evaluation) or a call through the training loop's Ray generation actor (validation).
"""

from __future__ import annotations

from typing import Any

from nemo_grpo.evals.metrics import ProblemSamples
from nemo_grpo.generation.interface import GenerateFn, SamplingParams
from nemo_grpo.rewards.config import RewardConfig
from nemo_grpo.rewards.math_reward import grade_batch

def sample_and_grade(generate: GenerateFn, rows: list[dict[str, Any]], params: SamplingParams,
                     reward: RewardConfig) -> list[dict[str, Any]]:
    """One record per sample, prompt by prompt: the problem, the response, its extracted answer
    and grade, why it stopped, its length, and the problem's breakdown groups (subject, level)."""
    rollouts = generate([r["prompt_ids"] for r in rows], params)
    if len(rollouts) != len(rows) * params.n:
        raise RuntimeError(f"generation returned {len(rollouts)} responses for {len(rows)} prompts x {params.n}")
    golds = [rows[r.prompt_index]["answer"] for r in rollouts]
    grades = grade_batch([r.text for r in rollouts], golds, reward, [r.truncated for r in rollouts])
    records, seen = [], [0] * len(rows)
    for rollout, grade in zip(rollouts, grades):
        row = rows[rollout.prompt_index]
        records.append({
            "problem_id": row["index"], "sample": seen[rollout.prompt_index],
            "problem": row["problem"], "gold": row["answer"], "response": rollout.text,
            "extracted": grade.extracted, "correct": grade.correct, "status": grade.status, "reason": grade.reason,
            "finish_reason": rollout.finish_reason, "response_tokens": len(rollout.response_ids),
            **row.get("groups", {}),
        })
        seen[rollout.prompt_index] += 1
    return records


def group_by_problem(records: list[dict[str, Any]], group_keys: tuple[str, ...] = ("subject", "level")
                     ) -> list[ProblemSamples]:
    """Records (any order) -> one ProblemSamples per problem, in order of first appearance."""
    problems: dict[Any, list[dict[str, Any]]] = {}
    for rec in records:
        problems.setdefault(rec["problem_id"], []).append(rec)
    out = []
    for recs in problems.values():
        recs = sorted(recs, key=lambda r: r["sample"])
        out.append(ProblemSamples(
            correct=[bool(r["correct"]) for r in recs], answers=[r["extracted"] for r in recs],
            lengths=[int(r["response_tokens"]) for r in recs], truncated=[r["finish_reason"] == "length" for r in recs],
            grader_failed=[r["status"] in ("timeout", "error") for r in recs],
            groups={k: recs[0][k] for k in group_keys if recs[0].get(k) is not None},
        ))
    return out
