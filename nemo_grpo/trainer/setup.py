"""Building what a GRPO run needs: data, tokenizer, the device, the policy ranks (each with its
own generation engine), checkpoints.

The device is decided here, once (`cluster.gpus_per_node`), and passed to every rank. With
`cluster.launcher: ray` what the run asks Ray for is checked against what the cluster has before
any rank starts; with `local` the one rank lives in this process and Ray is never imported.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from nemo_grpo.checkpoint.inflight import SaveInFlight
from nemo_grpo.checkpoint.manager import CheckpointManager
from nemo_grpo.data.datasets import load_problems
from nemo_grpo.data.loader import PromptLoader
from nemo_grpo.data.prompts import build_prompts
from nemo_grpo.distributed.device import check_placeable, resolve_device
from nemo_grpo.evals.sets import ScoredSet
from nemo_grpo.generation.engine import EngineSpec, available_backend
from nemo_grpo.models.source import load_tokenizer, resolve_model_path
from nemo_grpo.policy.group import PolicyGroup
from nemo_grpo.trainer.config import TrainConfig
from nemo_grpo.trainer.state import RunState
from nemo_grpo.trainer.validation import engine_max_len, load_validation_sets

log = logging.getLogger(__name__)

@dataclass
class Run:
    cfg: TrainConfig
    tokenizer: Any
    loader: PromptLoader
    policy: PolicyGroup  # the ranks, each with its generation engine
    backend: str
    checkpoints: CheckpointManager
    state: RunState
    device: str
    validation: list[ScoredSet] = field(default_factory=list)
    resumed_from: Path | None = None  # the checkpoint this run resumed from (verified), None: a fresh start
    last_saved: Path | None = None  # the newest complete checkpoint of this run: where it resumes
    saving: SaveInFlight | None = None  # the checkpoint still being written in the background

    @property
    def sleep_engine_while_training(self) -> bool:
        """vLLM frees memory for the policy while it trains: its weights and KV cache (on GPUs kept in
        host memory, on CPU discarded until the refit that follows training)."""
        return self.backend == "vllm"


def needs_old_logprobs(cfg: TrainConfig) -> bool:
    """Old log-probs differ from the current ones only after an optimizer step within the step."""
    rollouts = cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt
    several_updates = cfg.grpo.ppo_epochs > 1 or rollouts > cfg.policy.train_global_batch_size
    return several_updates or cfg.loss.importance_sampling.level != "none" or cfg.loss.kl_in_reward


def skip_zero_advantage(cfg: TrainConfig) -> bool:
    return cfg.grpo.skip_zero_advantage_groups and not cfg.loss.needs_all_rows


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def load_train_prompts(cfg: TrainConfig, tokenizer) -> list[dict[str, Any]]:
    spec = cfg.data.train
    problems = load_problems(spec.name, split=spec.split, path=spec.path, data_dir=cfg.data.data_dir,
                             repeat=spec.repeat, max_samples=spec.max_samples)
    prompt = cfg.data.prompt
    rows, _ = build_prompts(problems, tokenizer, template=prompt.template, use_chat_template=prompt.use_chat_template,
                            system_prompt=prompt.system_prompt, max_prompt_length=prompt.max_prompt_length,
                            where=f"data.train ({spec.name})")
    return rows


def resource_plan(cfg: TrainConfig, device: str) -> dict[str, Any]:
    """What the run's ranks ask for: one bundle per rank (its engine shares the rank's device and
    process), and how many torch threads each CPU rank gets."""
    world_size = cfg.cluster.world_size
    rank_gpus = 1.0 if device == "cuda" else 0.0
    cpus = cfg.cluster.cpus_per_worker
    threads = None if device == "cuda" else max(1, (os.cpu_count() or 1) // world_size)
    return {"world_size": world_size, "rank_gpus": rank_gpus, "threads": threads,
            "launcher": cfg.cluster.resolved_launcher(),
            "total": {"CPU": cpus * world_size, "GPU": rank_gpus * world_size}}


def setup_run(cfg: TrainConfig, *, after_ray_init: Callable[[], None] | None = None) -> Run:
    """Everything a run needs; `after_ray_init` is called once Ray has started, or at once with the
    local launcher (the preemption handlers go there: `ray.init` sets a SIGTERM handler of its own)."""
    seed_everything(cfg.grpo.seed)
    model_path = resolve_model_path(cfg.policy.model_name)
    tokenizer_path = resolve_model_path(cfg.policy.tokenizer_name, "policy.tokenizer_name") if cfg.policy.tokenizer_name else model_path
    tokenizer = load_tokenizer(tokenizer_path)  # fails early, with a clear message, without the hub
    rows = load_train_prompts(cfg, tokenizer)
    loader = PromptLoader(rows, cfg.grpo.num_prompts_per_step, seed=cfg.grpo.seed, shuffle=cfg.data.shuffle)
    validation = load_validation_sets(cfg, tokenizer)

    device = resolve_device(cfg.cluster.gpus_per_node)
    plan = resource_plan(cfg, device)
    world_size, threads = plan["world_size"], plan["threads"]
    env_vars = None
    if plan["launcher"] == "ray":
        import ray

        from nemo_grpo.distributed.cluster import init_ray

        init_ray(cfg.cluster.ray_address)
        check_placeable(plan["total"], ray.cluster_resources(), num_nodes=cfg.cluster.num_nodes,
                        nodes=[n["Resources"] for n in ray.nodes() if n.get("Alive")])
        # in-process vLLM-CPU fixes torch's threads from OMP_NUM_THREADS (Ray sets 1 by default)
        env_vars = {"OMP_NUM_THREADS": str(threads)} if threads else None
    elif threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    if after_ray_init is not None:
        after_ray_init()
    steps_per_grpo = (cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt
                      // cfg.policy.train_global_batch_size) * cfg.grpo.ppo_epochs
    in_flight = tuple((-(-n // world_size), length) for n, length in batches_in_flight(cfg, rows, validation))
    engine = EngineSpec(available_backend(cfg.generation.backend), str(model_path), str(tokenizer_path),
                        cfg.generation, cfg.policy.precision, cfg.grpo.seed, engine_max_len(cfg, validation),
                        in_flight, max_seqs=in_flight[0][0])  # a training step's share at once
    policy = PolicyGroup(
        world_size, cfg.policy, cfg.loss, gpus_per_worker=plan["rank_gpus"],
        cpus_per_worker=cfg.cluster.cpus_per_worker, launcher=plan["launcher"], env_vars=env_vars,
        num_nodes=cfg.cluster.num_nodes, device=device,
        temperature=cfg.generation.temperature, total_optimizer_steps=steps_per_grpo * cfg.grpo.max_num_steps,
        seed=cfg.grpo.seed, need_reference=cfg.loss.needs_reference, num_threads=threads, engine=engine,
    )
    backend = policy.engine_name()
    log.info("%d policy rank(s) on %s (%s launcher), each with a %s engine", world_size, device, plan["launcher"],
             backend)
    checkpoints = CheckpointManager(Path(cfg.checkpointing.checkpoint_dir), cfg.checkpointing.keep_top_k,
                                    cfg.checkpointing.metric_name, cfg.checkpointing.higher_is_better)
    return Run(cfg, tokenizer, loader, policy, backend, checkpoints, RunState(), device, validation)


def batches_in_flight(cfg: TrainConfig, train_rows: list[dict[str, Any]],
                      validation: list[ScoredSet]) -> list[tuple[int, int]]:
    """What the run generates at once, as (sequences, tokens each at most): a training step's prompts x
    responses, each at most the longest training prompt plus the response length and at most the
    training length, and each validation set's problems x samples up to its longest prompt plus its
    new tokens (split over the ranks, the largest sizes each vLLM-CPU KV cache)."""
    train = cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt
    longest_prompt = max((len(r["prompt_ids"]) for r in train_rows), default=0)
    train_tokens = min(cfg.policy.max_total_sequence_length, longest_prompt + cfg.max_response_length)
    return [(train, train_tokens),
            *((len(s.rows) * s.params.n, s.max_prompt_tokens + s.params.max_new_tokens) for s in validation)]


def compat_fields(cfg: TrainConfig, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Settings a resumed checkpoint must share with this run."""
    return {
        "model_name": cfg.policy.model_name,
        "architecture": fingerprint,
        "train_data": asdict(cfg.data.train),
        "seed": cfg.grpo.seed,
        "num_prompts_per_step": cfg.grpo.num_prompts_per_step,
        "num_generations_per_prompt": cfg.grpo.num_generations_per_prompt,
    }
