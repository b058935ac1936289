"""Building what a GRPO run needs: data, tokenizer, the device, Ray workers, checkpoints.

The device is decided here, once (`cluster.gpus_per_node`), and passed to every worker; what the
run asks Ray for is checked against what the cluster has before any worker starts.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import ray
import torch

from nemo_grpo.checkpoint.manager import CheckpointManager
from nemo_grpo.data.datasets import load_problems
from nemo_grpo.data.loader import PromptLoader
from nemo_grpo.data.prompts import build_prompts
from nemo_grpo.distributed.cluster import init_ray
from nemo_grpo.distributed.device import check_placeable, resolve_device
from nemo_grpo.evals.sets import ScoredSet
from nemo_grpo.generation.worker import GenerationWorker, available_backend
from nemo_grpo.models.source import load_tokenizer, resolve_model_path
from nemo_grpo.policy.group import PolicyGroup
from nemo_grpo.trainer.config import TrainConfig
from nemo_grpo.trainer.state import RunState
from nemo_grpo.trainer.validation import engine_max_len, load_validation_sets

log = logging.getLogger(__name__)

ENGINE_START_TIMEOUT_S = 900  # a vLLM engine that has not started by then never will


@dataclass
class Run:
    cfg: TrainConfig
    tokenizer: Any
    loader: PromptLoader
    policy: PolicyGroup
    generation: Any  # Ray actor handle of GenerationWorker
    backend: str
    checkpoints: CheckpointManager
    state: RunState
    device: str
    validation: list[ScoredSet] = field(default_factory=list)
    resumed_from: Path | None = None  # the checkpoint this run resumed from (verified), None: a fresh start

    @property
    def sleep_engine_while_training(self) -> bool:
        """Colocated on GPUs, vLLM frees its memory for the policy while it trains."""
        return self.backend == "vllm" and self.cfg.generation.colocated and self.device == "cuda"


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
    """What each policy rank and the generation engine ask Ray for."""
    world_size = cfg.cluster.num_nodes * cfg.cluster.gpus_per_node if device == "cuda" else 1
    if device == "cuda":
        colocated = cfg.generation.colocated
        rank_gpus, engine_gpus = (0.5, 0.5) if colocated else (1.0, float(cfg.generation.num_gpus))
    else:
        rank_gpus = engine_gpus = 0.0
    cpus = cfg.cluster.cpus_per_worker
    total = {"CPU": cpus * (world_size + 1), "GPU": rank_gpus * world_size + engine_gpus}
    return {"world_size": world_size, "rank_gpus": rank_gpus, "engine_gpus": engine_gpus, "total": total}


def setup_run(cfg: TrainConfig, *, after_ray_init: Callable[[], None] | None = None) -> Run:
    """Everything a run needs; `after_ray_init` is called once Ray has started (the preemption
    handlers go there: `ray.init` sets a SIGTERM handler of its own)."""
    seed_everything(cfg.grpo.seed)
    model_path = resolve_model_path(cfg.policy.model_name)
    tokenizer_path = resolve_model_path(cfg.policy.tokenizer_name, "policy.tokenizer_name") if cfg.policy.tokenizer_name else model_path
    tokenizer = load_tokenizer(tokenizer_path)  # fails early, with a clear message, without the hub
    rows = load_train_prompts(cfg, tokenizer)
    loader = PromptLoader(rows, cfg.grpo.num_prompts_per_step, seed=cfg.grpo.seed, shuffle=cfg.data.shuffle)
    validation = load_validation_sets(cfg, tokenizer)

    device = resolve_device(cfg.cluster.gpus_per_node)
    plan = resource_plan(cfg, device)
    world_size = plan["world_size"]
    init_ray(cfg.cluster.ray_address)
    if after_ray_init is not None:
        after_ray_init()
    check_placeable(plan["total"], ray.cluster_resources())
    on_gpu = device == "cuda"
    threads = None if on_gpu else max(1, (os.cpu_count() or 1) // world_size)
    steps_per_grpo = (cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt
                      // cfg.policy.train_global_batch_size) * cfg.grpo.ppo_epochs
    policy = PolicyGroup(
        world_size, cfg.policy, cfg.loss, gpus_per_worker=plan["rank_gpus"],
        cpus_per_worker=cfg.cluster.cpus_per_worker, device=device, temperature=cfg.generation.temperature,
        total_optimizer_steps=steps_per_grpo * cfg.grpo.max_num_steps, seed=cfg.grpo.seed,
        need_reference=cfg.loss.needs_reference, num_threads=threads,
    )
    backend = available_backend(cfg.generation.backend)
    # Generation and training take turns, so on CPU the engine may use every core while it runs.
    engine_env = {} if on_gpu else {"env_vars": {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}}
    generation = ray.remote(GenerationWorker).options(
        num_cpus=cfg.cluster.cpus_per_worker, num_gpus=plan["engine_gpus"], runtime_env=engine_env,
    ).remote(backend, model_path, tokenizer_path, cfg.generation, device=device, precision=cfg.policy.precision,
             seed=cfg.grpo.seed, max_model_len=engine_max_len(cfg, validation),
             num_threads=None if on_gpu else os.cpu_count(), max_sequences=sequences_in_flight(cfg, validation))
    backend = ray.get(generation.backend_name.remote(), timeout=ENGINE_START_TIMEOUT_S)
    log.info("generation backend: %s", backend)
    checkpoints = CheckpointManager(Path(cfg.checkpointing.checkpoint_dir), cfg.checkpointing.keep_top_k,
                                    cfg.checkpointing.metric_name, cfg.checkpointing.higher_is_better)
    return Run(cfg, tokenizer, loader, policy, generation, backend, checkpoints, RunState(), device, validation)


def sequences_in_flight(cfg: TrainConfig, validation: list[ScoredSet]) -> int:
    """The most sequences the engine generates at once: a training step's prompts x responses, or
    a validation set's problems x samples (it sizes vLLM's KV cache on CPU)."""
    train = cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt
    return max([train, *(len(s.rows) * s.params.n for s in validation)])


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
