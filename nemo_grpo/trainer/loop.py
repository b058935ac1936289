"""The GRPO loop. One step, as the data flows:

    prompts -> [refit if stale] -> generate G responses each -> grade -> advantages
            -> [old / reference log-probs if the loss needs them] -> train (minibatches)
            -> metrics -> [validation, see validation.py] -> checkpoint -> guards (may stop the run)
            -> loggers

Algorithmic choices live in the config and the pure functions of `nemo_grpo.algorithms`; this
file only moves data between the driver and the workers. The driver never holds model weights:
refit passes a Ray object reference from policy rank 0 straight to the generation worker.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from nemo_grpo.algorithms.advantages import compute_advantages
from nemo_grpo.algorithms.batch import pack_rollouts
from nemo_grpo.algorithms.kl import kl_estimate, kl_penalty_in_reward
from nemo_grpo.config import config_to_dict, save_config, to_yaml
from nemo_grpo.generation.interface import Rollout, SamplingParams
from nemo_grpo.logging.guards import GuardStop, GuardWatch
from nemo_grpo.logging.loggers import make_loggers
from nemo_grpo.logging.metrics import rollout_metrics, throughput_metrics
from nemo_grpo.logging.rollout_dump import dump_rollouts, rollout_dump_due
from nemo_grpo.rewards.pool import pool_restarts, shutdown_pool
from nemo_grpo.trainer.checkpointing import finish_save, restore_checkpoint_row, resume_or_start, save_checkpoint
from nemo_grpo.trainer.config import TrainConfig
from nemo_grpo.trainer.preemption import Preempted, PreemptionWatch, StopNow, WorkerDied, dead_worker
from nemo_grpo.trainer.rollouts import collect_rollouts
from nemo_grpo.trainer.setup import Run, needs_old_logprobs, setup_run, skip_zero_advantage
from nemo_grpo.trainer.state import RunState
from nemo_grpo.trainer.validation import run_validation, validation_due
from nemo_grpo.utils.errors import RunEnded
from nemo_grpo.utils.lock import FolderLock
from nemo_grpo.utils.faults import grading_step, maybe_stall

log = logging.getLogger(__name__)


def run_grpo(cfg: TrainConfig) -> None:
    """Train to the end; a collapse guard's stop raises GuardStop (exit status 3 from the CLI), a
    preemption signal Preempted (128 + signal), a dead worker WorkerDied (1): see preemption.py.
    The checkpoint and log folders are locked for the whole run (one run per folder)."""
    with lock_run_folders(cfg):
        _run_grpo(cfg)


def lock_run_folders(cfg: TrainConfig) -> contextlib.ExitStack:
    """Lock `<checkpoint_dir>/.lock` and `<log_dir>/.lock` before anything is written; a folder in
    use by a live run refuses this one (RunFolderLocked, exit status 2)."""
    folders = {Path(cfg.logger.log_dir).expanduser().resolve(): "logger.log_dir"}
    if cfg.checkpointing.enabled:
        folders.setdefault(Path(cfg.checkpointing.checkpoint_dir).expanduser().resolve(), "checkpointing.checkpoint_dir")
    with contextlib.ExitStack() as taking:  # a refusal releases the locks taken so far
        for folder, key in folders.items():
            taking.enter_context(FolderLock(folder, key))
        return taking.pop_all()


def _run_grpo(cfg: TrainConfig) -> None:
    watch = PreemptionWatch(cfg.checkpointing.preemption_grace_s, dead_daemons=_dead_ray_daemons)
    run, loggers, ended, failed = None, None, False, False
    current: int | None = None  # the step running
    try:
        run = setup_run(cfg, after_ray_init=watch.install)
        resume_or_start(run)  # refuses (before anything is written) a checkpoint of another run
        save_config(cfg, f"{cfg.logger.log_dir}/config.yaml")
        loggers = make_loggers(cfg.logger, start_step=run.state.step, total_steps=cfg.grpo.max_num_steps,
                               config=config_to_dict(cfg), config_text=to_yaml(cfg))
        restore_checkpoint_row(run, loggers)
        guards = GuardWatch(cfg.guards, history=loggers.history)
        if cfg.grpo.val_at_start and run.state.step == 0:  # a resumed run did it before its first step
            loggers.log({"step": 0, **validate(run)})
        while not finished(cfg, run.state, len(run.loader), announce=True):
            current = run.state.step + 1
            watch.step_running = True  # a signal from here on lets the step finish (within the grace time)
            try:
                step_start, restarts_before = time.perf_counter(), pool_restarts()
                metrics = grpo_step(run)
                run.state.step += 1
                last = finished(cfg, run.state, len(run.loader))
                if validation_due(run.state.step, cfg.grpo, last=last):  # before the checkpoint: meta.json has it
                    metrics.update(validate(run))
                metrics = finish_metrics(run, metrics, time.perf_counter() - step_start)
                metrics.update(grader_restarts(restarts_before))
                stop = guards.check(metrics)  # warn rules log here; a stop rule returns its reason
                preempted = watch.requested  # a preemption signal came during the step: save it, then stop
                # The checkpoint's meta.json carries the whole row, so a kill between saving and logging
                # loses no row (restore_checkpoint_row puts it back on resume). A stop saves first. A
                # save in the background is complete before the next save, and at the end (`wait`).
                if cfg.checkpointing.enabled and (checkpoint_due(cfg, run.state.step, last=last) or stop or preempted):
                    metrics["timing/checkpoint_s"] = save_checkpoint(run, metrics, wait=bool(last or stop or preempted))
                if stop:
                    stop.checkpoint = last_saved(run) if cfg.checkpointing.enabled else None
                loggers.log(metrics)
            except StopNow:
                raise
            except _ray_errors() as exc:
                if watch.stopped:
                    raise  # a worker died: one line naming it, not Ray's traceback
                worker = dead_worker(exc, run_actors(run))
                if worker is None:
                    raise  # not a death: a bug, keep its traceback
                ended = True
                if watch.requested:  # the same signal reached the run's workers
                    raise Preempted(watch.requested, current, resume_point=last_saved(run),
                                    why=f"the {worker} was stopped by the signal too") from None
                raise WorkerDied(worker, current, last_saved(run)) from None
            finally:
                watch.step_running = False
            current = None
            if stop:
                raise stop
            if preempted:
                ended = True
                raise Preempted(preempted, run.state.step, saved=last_saved(run) if cfg.checkpointing.enabled else None)
        log.info("finished %d steps; checkpoints in %s", run.state.step, cfg.checkpointing.checkpoint_dir)
    except (StopNow, Exception) as exc:  # a signal: abandon what runs now
        stop_now = watch.stopped  # raised by the handler, maybe wrapped by Ray (a SystemError from ray.get)
        if stop_now is None or isinstance(exc, (RunEnded, GuardStop)):
            failed = True
            raise
        ended = True
        raise Preempted(stop_now.signum, current, resume_point=last_saved(run), why=stop_now.why) from None
    finally:
        if loggers:
            loggers.close()  # flushes TensorBoard / W&B and draws the final plots
        watch.stopping = True  # from here a signal exits at once
        if failed and run is not None and run.saving is not None:
            finish_pending(run)  # a bug or a guard's stop in a later step: the earlier checkpoint completes
        if ended:
            stop_everything(run)
        elif run is not None:
            shutdown(run)
            ray = sys.modules.get("ray")
            if failed and ray is not None and ray.is_initialized():  # the run ends here (a failed save, a guard's
                with contextlib.suppress(Exception):  # stop, a bug): Ray stops before the command prints its
                    ray.shutdown()  # last line, so no worker output comes after it
        watch.restore()


def last_saved(run: Run | None) -> str | None:
    """The newest complete checkpoint of this run (or the one it resumed from): its resume point. A
    checkpoint still written in the background counts once it is complete."""
    if run is None:
        return None
    if run.saving is not None and run.saving.complete:
        return str(run.saving.final)
    return str(run.last_saved) if run.last_saved else None


def finish_pending(run: Run) -> None:
    """The run fails for another reason: let the checkpoint in flight complete, or say why it did not."""
    step = run.saving.step if run.saving is not None else None
    try:
        finish_save(run)
    except Exception as exc:  # the run's own error is the one to report
        log.warning("the checkpoint of step %s was not completed: %s", step, exc)


def run_actors(run: Run) -> dict[str, Any]:
    """The run's Ray workers by the names a user reads (each rank holds its generation engine)."""
    return {f"policy rank {i}": actor for i, actor in enumerate(run.policy.workers.actors)}


def _dead_ray_daemons() -> list[str]:
    """The exited daemons of a Ray this run started (none for a local run or a joined cluster)."""
    if "ray" not in sys.modules:
        return []
    from nemo_grpo.distributed.cluster import dead_ray_daemons

    return dead_ray_daemons()


def _ray_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors, when this run uses Ray (a local run never imports it)."""
    ray = sys.modules.get("ray")
    return (ray.exceptions.RayError,) if ray is not None and ray.is_initialized() else ()


def stop_everything(run: Run | None) -> None:
    """A run ended from outside (a signal, a dead worker): stop every process it started without
    waiting for busy workers (Ray's workers and daemons, the grader processes)."""
    if run is not None and run.policy.launcher == "local":
        with contextlib.suppress(Exception):
            run.policy.shutdown()  # the rank in this process: its engine and process group
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        with contextlib.suppress(Exception):
            ray.shutdown()
    shutdown_pool()


def epochs_done(cfg: TrainConfig, state: RunState, batches_per_epoch: int) -> bool:
    """grpo.max_num_epochs passes over the training prompts have been drawn."""
    return state.consumed_samples >= cfg.grpo.max_num_epochs * batches_per_epoch * cfg.grpo.num_prompts_per_step


def finished(cfg: TrainConfig, state: RunState, batches_per_epoch: int, *, announce: bool = False) -> bool:
    """The run has done grpo.max_num_steps steps or used grpo.max_num_epochs of prompts."""
    if state.step >= cfg.grpo.max_num_steps:
        return True
    if epochs_done(cfg, state, batches_per_epoch):
        if announce:
            log.info("stopping: %d epoch(s) of training prompts used (grpo.max_num_epochs)", cfg.grpo.max_num_epochs)
        return True
    return False


def checkpoint_due(cfg: TrainConfig, step: int, *, last: bool) -> bool:
    """Every save_period steps, and always at the last step (so a finished run can be exported)."""
    return step % cfg.checkpointing.save_period == 0 or last


def generate(run: Run):
    """The ranks' engines as a plain generate function (each rank samples its share of the prompts)."""
    def call(prompts: list[list[int]], params: SamplingParams) -> list[Rollout]:
        return run.policy.generate(prompts, params)

    return call


def validate(run: Run) -> dict[str, float]:
    """Validation on the weights being trained: refit first if the engine lags."""
    start = time.perf_counter()
    if run.state.weights_stale:
        refit(run)
    refit_s = time.perf_counter() - start
    metrics = run_validation(run.validation, generate(run), run.cfg.reward, run.state.step)
    metrics["timing/validation_s"] += refit_s  # the engine's catching up counts as validation time
    return metrics


def grpo_step(run: Run) -> dict[str, Any]:
    cfg, timing = run.cfg, {}
    maybe_stall(run.state.step + 1)  # tests: a step that hangs
    if run.state.weights_stale:
        with _timer(timing, "refit"):
            refit(run)
    with grading_step(run.state.step + 1):  # tests: a grader slowed in this step (slow_grade)
        step = collect_rollouts(run.loader.next_batch, generate(run), sampling_params(run),  # -> generation -> reward
                                num_prompts=cfg.grpo.num_prompts_per_step,
                                group_size=cfg.grpo.num_generations_per_prompt, reward=cfg.reward, dapo=cfg.dapo)
    timing.update(step.seconds)
    rollouts, rewards = step.rollouts, step.rewards
    batch = pack_rollouts([r.prompt_ids for r in rollouts], [r.response_ids for r in rollouts],
                          [r.logprobs for r in rollouts], torch.zeros(len(rollouts)), rewards, _pad_id(run))
    with _timer(timing, "logprobs"):
        if needs_old_logprobs(cfg):
            batch.old_logprobs = run.policy.logprobs(batch)
        if cfg.loss.needs_reference:
            batch.ref_logprobs = run.policy.logprobs(batch, reference=True)
    if cfg.loss.kl_in_reward:
        kl = kl_estimate(batch.old_logprobs, batch.ref_logprobs, cfg.loss.kl_type,
                         input_clamp=cfg.loss.kl_input_clamp, output_clamp=cfg.loss.kl_output_clamp)
        rewards = kl_penalty_in_reward(rewards, kl, batch.mask, cfg.loss.kl_coef)
        batch.rewards = rewards
    group_ids = torch.tensor([r.prompt_index for r in rollouts])
    batch.advantages = compute_advantages(rewards, group_ids, cfg.advantage, batch.mask)
    if run.sleep_engine_while_training:
        run.policy.sleep_engines()
    with _timer(timing, "train"):
        norm_constant = cfg.loss.norm_constant or cfg.max_response_length
        train_metrics = run.policy.train(batch, ppo_epochs=cfg.grpo.ppo_epochs, norm_constant=norm_constant,
                                         skip_zero_advantage=skip_zero_advantage(cfg),
                                         metrics_on_skipped_rows=cfg.logger.metrics_on_skipped_rows)
    run.state.weights_stale = True
    run.state.consumed_samples += step.prompts_drawn
    seq_adv = batch.advantages.sum(-1) / batch.mask.sum(-1).clamp(min=1)
    metrics = rollout_metrics(rollouts, step.grades, rewards, seq_adv, cfg.grpo.num_generations_per_prompt)
    if cfg.loss.kl_in_reward:
        metrics["train/kl_ref"] = float((kl * batch.mask).sum() / batch.mask.sum().clamp(min=1))
    if rollout_dump_due(cfg.logger.rollout_dump_period, run.state.step + 1):
        dump_rollouts(cfg.logger.log_dir, run.state.step + 1, step, rewards, seq_adv)
    metrics.update({f"train/{k}": v for k, v in train_metrics.items() if k != "train_time_s"})
    metrics.update({f"timing/{k}_s": v for k, v in timing.items()})
    if cfg.dapo.dynamic_sampling:
        metrics.update({"dapo/gen_batches": step.gen_batches, "dapo/filled_groups": step.filled_groups})
    return metrics


def sampling_params(run: Run) -> SamplingParams:
    cfg = run.cfg
    stop = tuple(t for t in [run.tokenizer.eos_token_id] if t is not None)
    # A new seed each step, fixed by (seed, step): a resumed run samples exactly what it would have.
    return SamplingParams(n=cfg.grpo.num_generations_per_prompt, temperature=cfg.generation.temperature,
                          top_p=cfg.generation.top_p, top_k=cfg.generation.top_k,
                          max_new_tokens=cfg.max_response_length, stop_token_ids=stop,
                          stop_strings=tuple(cfg.generation.stop_strings),
                          seed=cfg.grpo.seed * 1_000_003 + run.state.step)


def refit(run: Run) -> None:
    """Every rank gathers its shards into its own engine, on its own device (nothing passes through
    the driver or Ray's object store); the step number is the weights' version."""
    run.policy.refit(run.state.step)
    run.state.weights_stale = False


def finish_metrics(run: Run, metrics: dict[str, Any], step_seconds: float) -> dict[str, Any]:
    metrics["step"] = run.state.step
    metrics["timing/step_s"] = step_seconds
    phases = sum(v for k, v in metrics.items() if k.startswith("timing/") and k != "timing/step_s")
    metrics["timing/other_s"] = max(0.0, step_seconds - phases)
    metrics.update(throughput_metrics(metrics))
    metrics["train/consumed_samples"] = run.state.consumed_samples
    metrics["generation/backend"] = run.backend
    return metrics


def grader_restarts(before: int | None) -> dict[str, float]:
    """`reward/grader_restarts`: grader processes replaced during the step (one killed, crashed or
    timed out); only in the rows of steps where one was, so the rows of a run without trouble keep
    their keys."""
    now = pool_restarts()
    restarts = 0 if now is None else max(0, now - (before or 0))
    return {"reward/grader_restarts": float(restarts)} if restarts else {}


def shutdown(run: Run) -> None:
    run.policy.shutdown()  # the ranks and their engines: frees CPUs / GPUs for the next run (curriculum)


def _pad_id(run: Run) -> int:
    tok = run.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


class _timer:
    def __init__(self, sink: dict[str, float], name: str):
        self.sink, self.name = sink, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.sink[self.name] = self.sink.get(self.name, 0.0) + time.perf_counter() - self.start


__all__ = ["run_grpo", "grpo_step"]
