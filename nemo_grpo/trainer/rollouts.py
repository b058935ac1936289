"""Generation and grading for one GRPO step, with DAPO's reward shaping and dynamic sampling.

`collect_rollouts` draws prompt batches, samples G responses each, grades them and shapes the
rewards. With `dapo.dynamic_sampling`, groups whose rewards are all equal are dropped and more
batches are drawn (at most `dapo.max_num_gen_batches`; 0 means no limit) until
`num_prompts_per_step` groups with a learning signal are collected; if the limit is reached first,
the step is filled up with dropped groups (they add no gradient) and the shortfall is reported,
rather than stopping the run.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from nemo_grpo.algorithms.config import DapoConfig
from nemo_grpo.algorithms.dapo import dynamic_sampling_keep_mask, shape_rewards
from nemo_grpo.generation.interface import GenerateFn, Rollout, SamplingParams
from nemo_grpo.rewards.config import RewardConfig
from nemo_grpo.rewards.math_reward import GradeResult, grade_batch


@dataclass
class StepRollouts:
    rollouts: list[Rollout] = field(default_factory=list)  # prompt_index renumbered 0..P-1
    grades: list[GradeResult] = field(default_factory=list)
    rewards: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # shaped
    answers: list[str] = field(default_factory=list)  # gold answer per prompt
    prompts: list[str] = field(default_factory=list)  # prompt text per prompt, as the model read it
    problems: list[str] = field(default_factory=list)  # problem text per prompt
    prompts_drawn: int = 0
    gen_batches: int = 0
    filled_groups: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def collect_rollouts(next_prompts: Callable[[], list[dict[str, Any]]], generate: GenerateFn, params: SamplingParams,
                     *, num_prompts: int, group_size: int, reward: RewardConfig, dapo: DapoConfig) -> StepRollouts:
    """`num_prompts` groups of `group_size` graded responses. `next_prompts()` draws a batch of prompt
    rows (`prompt_ids`, `answer`, ...); `generate` samples them (a backend's `generate`, or a call
    to the run's engine). With dynamic sampling, batches are drawn until enough groups carry a
    signal or `dapo.max_num_gen_batches` batches were drawn (0: no limit)."""
    dynamic = dapo.dynamic_sampling
    limit = (dapo.max_num_gen_batches or None) if dynamic else 1  # None: unlimited
    kept: list[tuple[list[Rollout], list[GradeResult], torch.Tensor, dict]] = []  # one entry per group
    dropped: list[tuple[list[Rollout], list[GradeResult], torch.Tensor, dict]] = []
    out = StepRollouts(seconds={"generation": 0.0, "reward": 0.0})
    for attempt in itertools.count():
        if limit is not None and attempt >= limit:
            break
        prompts = next_prompts()
        out.prompts_drawn += len(prompts)
        out.gen_batches += 1
        start = time.perf_counter()
        seeded = SamplingParams(**{**params.__dict__, "seed": params.seed + 7919 * attempt})
        rollouts = generate([p["prompt_ids"] for p in prompts], seeded)
        out.seconds["generation"] += time.perf_counter() - start
        start = time.perf_counter()
        golds = [prompts[r.prompt_index]["answer"] for r in rollouts]
        grades = grade_batch([r.text for r in rollouts], golds, reward, [r.truncated for r in rollouts])
        raw = torch.tensor([g.reward for g in grades], dtype=torch.float32)
        lengths = torch.tensor([len(r.response_ids) for r in rollouts])
        truncated = torch.tensor([r.truncated for r in rollouts])
        rewards = shape_rewards(raw, lengths, dapo, truncated).to(torch.float32)
        keep = (dynamic_sampling_keep_mask(rewards, torch.tensor([r.prompt_index for r in rollouts]))
                if dynamic else torch.ones(len(rollouts), dtype=torch.bool))
        out.seconds["reward"] += time.perf_counter() - start
        for g in range(len(prompts)):
            rows = slice(g * group_size, (g + 1) * group_size)
            entry = (rollouts[rows], grades[rows], rewards[rows], prompts[g])
            (kept if bool(keep[rows].all()) else dropped).append(entry)
        if len(kept) >= num_prompts:
            break
    if len(kept) < num_prompts:
        out.filled_groups = num_prompts - len(kept)
        kept += dropped[: out.filled_groups]
    for index, (rolls, grades, rewards, prompt) in enumerate(kept[:num_prompts]):
        for r in rolls:
            out.rollouts.append(Rollout(index, r.prompt_ids, r.response_ids, r.logprobs, r.finish_reason, r.text))
        out.grades.extend(grades)
        out.answers.append(prompt["answer"])
        out.prompts.append(prompt.get("prompt", ""))
        out.problems.append(prompt.get("problem", ""))
        out.rewards = torch.cat([out.rewards, rewards])
    return out
