"""Building what a GRPO run needs: data, tokenizer, Ray workers, checkpoints, loggers."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch

from nemo_grpo.algorithms.minibatch import loss_needs_all_rows
from nemo_grpo.algorithms.validation import engine_max_len, load_validation_sets
from nemo_grpo.checkpoint.manager import CheckpointManager
from nemo_grpo.config.schema import TrainConfig
from nemo_grpo.data.datasets import load_problems
from nemo_grpo.data.loader import PromptLoader
from nemo_grpo.data.prompts import build_prompts
from nemo_grpo.distributed.cluster import init_ray
from nemo_grpo.generation.worker import GenerationWorker, available_backend
from nemo_grpo.models.gguf import load_tokenizer, resolve_model_path
from nemo_grpo.policy.group import PolicyGroup

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """What the driver owns between steps (and saves in each checkpoint)."""

    step: int = 0
    consumed_samples: int = 0
    # The engine lags the policy; True at the start too, because engines (vLLM) may start with
    # dummy weights and receive the real ones only by refit.
    weights_stale: bool = True
    best: dict[str, float] = field(default_factory=dict)


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
    world_size: int
    model_path: str
    need_reference: bool
    validation: list[Any] = field(default_factory=list)  # ScoredSet per data.validation entry

    @property
    def sleep_engine_while_training(self) -> bool:
        """Colocated on GPUs, vLLM frees its memory for the policy while it trains."""
        return self.backend == "vllm" and self.cfg.generation.colocated and torch.cuda.is_available()

    @property
    def group_size(self) -> int:
        return self.cfg.grpo.num_generations_per_prompt


def needs_reference(cfg: TrainConfig) -> bool:
    archer = cfg.loss.archer
    return cfg.loss.kl_coef != 0.0 or bool(archer.enabled and (archer.low_entropy_kl_coef or archer.high_entropy_kl_coef))


def needs_old_logprobs(cfg: TrainConfig) -> bool:
    """Old log-probs differ from the current ones only after an optimizer step within the step."""
    rollouts = cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt
    several_updates = cfg.grpo.ppo_epochs > 1 or rollouts > cfg.policy.train_global_batch_size
    return several_updates or cfg.loss.importance_sampling.level != "none" or cfg.loss.kl_in_reward


def world_size_of(cfg: TrainConfig) -> int:
    gpus = cfg.cluster.num_nodes * cfg.cluster.gpus_per_node
    if gpus and not torch.cuda.is_available():
        raise ValueError(f"cluster.gpus_per_node={cfg.cluster.gpus_per_node} but no CUDA GPU is visible: "
                         "set cluster.gpus_per_node=0 to train on the CPU")
    return gpus or 1


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


def setup_run(cfg: TrainConfig) -> Run:
    seed_everything(cfg.grpo.seed)
    model_path = resolve_model_path(cfg.policy.model_name)
    tokenizer_path = resolve_model_path(cfg.policy.tokenizer_name, "policy.tokenizer_name") if cfg.policy.tokenizer_name else model_path
    tokenizer = load_tokenizer(tokenizer_path)  # fails early, with a clear message, without the hub
    rows = load_train_prompts(cfg, tokenizer)
    loader = PromptLoader(rows, cfg.grpo.num_prompts_per_step, seed=cfg.grpo.seed, shuffle=cfg.data.shuffle)
    validation = load_validation_sets(cfg, tokenizer)

    world_size = world_size_of(cfg)
    on_gpu = torch.cuda.is_available() and cfg.cluster.gpus_per_node > 0
    init_ray(cfg.cluster.ray_address)
    threads = None if on_gpu else max(1, (os.cpu_count() or 1) // world_size)
    steps_per_grpo = (cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt
                      // cfg.policy.train_global_batch_size) * cfg.grpo.ppo_epochs
    need_reference = needs_reference(cfg)
    policy = PolicyGroup(
        world_size, cfg.policy, cfg.loss,
        gpus_per_worker=(0.5 if cfg.generation.colocated else 1.0) if on_gpu else 0.0,
        cpus_per_worker=cfg.cluster.cpus_per_worker, temperature=cfg.generation.temperature,
        total_optimizer_steps=steps_per_grpo * cfg.grpo.max_num_steps, seed=cfg.grpo.seed,
        need_reference=need_reference, num_threads=threads,
    )
    backend = available_backend(cfg.generation.backend)
    # Generation and training take turns, so on CPU the engine may use every core while it runs.
    engine_env = {} if on_gpu else {"env_vars": {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}}
    generation = ray.remote(GenerationWorker).options(
        num_cpus=cfg.cluster.cpus_per_worker, num_gpus=0.5 if on_gpu else 0, runtime_env=engine_env,
    ).remote(backend, model_path, tokenizer_path, cfg.generation, precision=cfg.policy.precision,
             seed=cfg.grpo.seed, max_model_len=engine_max_len(cfg, validation),
             num_threads=None if on_gpu else os.cpu_count())
    backend = ray.get(generation.backend_name.remote())
    log.info("generation backend: %s", backend)
    checkpoints = CheckpointManager(Path(cfg.checkpointing.checkpoint_dir), cfg.checkpointing.keep_top_k,
                                    cfg.checkpointing.metric_name, cfg.checkpointing.higher_is_better)
    return Run(cfg, tokenizer, loader, policy, generation, backend, checkpoints, RunState(), world_size,
               model_path, need_reference, validation)


def compat_fields(run: Run, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Settings a resumed checkpoint must share with this run."""
    cfg = run.cfg
    return {
        "model_name": cfg.policy.model_name,
        "architecture": fingerprint,
        "train_data": asdict(cfg.data.train),
        "seed": cfg.grpo.seed,
        "num_prompts_per_step": cfg.grpo.num_prompts_per_step,
        "num_generations_per_prompt": cfg.grpo.num_generations_per_prompt,
    }


def skip_zero_advantage(cfg: TrainConfig) -> bool:
    return cfg.grpo.skip_zero_advantage_groups and not loss_needs_all_rows(cfg.loss)
