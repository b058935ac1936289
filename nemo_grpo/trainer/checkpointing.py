"""A run's checkpoints from the driver's side: what is saved at a step, and how a run resumes.

The policy ranks write their DCP shards (`PolicyGroup.save`); the driver adds its own state, the
config, the tokenizer, the manifest and meta.json (last), through `CheckpointManager`, which makes
the folder visible only when it is complete. With `checkpointing.async_save` the shards are
written in the background and a thread of the driver completes the folder (`SaveInFlight`); the
loop waits for it at the next save and at the end (`finish_save`). A save whose estimated size exceeds the free space is
refused before anything is written; a save that fails on the filesystem removes its partial
folder; both end the run with one line (`CheckpointSaveError`, exit status 2). A resume loads only a
checkpoint that verifies against its manifest, falling back to an older one with one warning.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from nemo_grpo.checkpoint.inflight import SaveInFlight
from nemo_grpo.checkpoint.manager import (
    DRIVER_STATE,
    CheckpointSaveError,
    check_resumable,
    find_os_error,
    read_meta,
)
from nemo_grpo.config import save_config
from nemo_grpo.trainer.setup import Run, compat_fields
from nemo_grpo.utils.faults import maybe_crash, maybe_no_space

log = logging.getLogger(__name__)


def save_checkpoint(run: Run, metrics: dict[str, Any], *, wait: bool = False) -> float:
    """Save the checkpoint of the step just done; returns the seconds the loop spent here.

    With `checkpointing.async_save` (process or thread) this waits for the save in flight (at most
    one), then blocks only while the ranks stage their state and the driver writes its small files;
    the shards, the manifest and the rename to step_<N> follow in the background (`SaveInFlight`).
    `wait`: block until this checkpoint is complete too (the last step, a stop, a preemption)."""
    start = time.perf_counter()
    finish_save(run)  # the one in flight first: its error ends the run here, naming its step
    step, mode = run.state.step, run.cfg.checkpointing.async_save
    run.checkpoints.check_space(step, run.policy.state_bytes())  # refuses a save that clearly does not fit
    tmp = run.checkpoints.begin(step)  # a failure here raises CheckpointSaveError itself
    try:
        run.policy.save(str(tmp), step, background=mode)
        maybe_crash("save", step)  # tests: a crash after the shards, before the checkpoint is complete
        # Serialised in memory, then written with a plain file write: a full disk is then an OSError
        # (ENOSPC), not torch's "unexpected pos" RuntimeError.
        buffer = io.BytesIO()
        torch.save({"state": run.state.__dict__, "loader": run.loader.state_dict(), "torch_rng": torch.get_rng_state()},
                   buffer)
        maybe_no_space(step, tmp / DRIVER_STATE, point="no_space_driver")  # tests: the driver's disk is full
        (tmp / DRIVER_STATE).write_bytes(buffer.getvalue())
        save_config(run.cfg, tmp / "config.yaml")
        run.tokenizer.save_pretrained(tmp / "tokenizer")
        fingerprint = run.policy.fingerprint()
        meta = {"step": step, "consumed_samples": run.state.consumed_samples,
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                "compat": compat_fields(run.cfg, fingerprint)}
        if mode == "none":
            run.last_saved = run.checkpoints.finish(tmp, step, meta)
        else:
            run.saving = SaveInFlight(run.checkpoints.finish, step, tmp, meta, run.policy.save_done)
    except CheckpointSaveError:
        raise
    except BaseException as exc:
        if find_os_error(exc) is not None:  # also an OSError raised on a policy rank, through Ray or DCP
            if mode != "none":  # the ranks may still write their shards into tmp: let them end first
                with contextlib.suppress(Exception):
                    run.policy.wait_save()
            raise run.checkpoints.save_failed(tmp, step, exc) from None
        raise
    if wait:
        finish_save(run)
    return time.perf_counter() - start


def finish_save(run: Run) -> Path | None:
    """Wait for the checkpoint in flight, if any, to be complete (it becomes `run.last_saved`). A
    filesystem error of its background write or of its finishing, or a writer process that died,
    is the one-line CheckpointSaveError of a failed save, naming its step; the partial folder is
    removed and the previous checkpoint stays the resume point."""
    saving, run.saving = run.saving, None
    if saving is None:
        return None
    try:
        run.last_saved = saving.wait()
    except CheckpointSaveError:
        raise
    except BaseException as exc:
        if find_os_error(exc) is None and not writer_died(exc):
            raise
        with contextlib.suppress(Exception):  # the other ranks stop writing into the folder first
            run.policy.wait_save()
        raise run.checkpoints.save_failed(saving.tmp, saving.step, exc) from None
    return run.last_saved


def writer_died(exc: BaseException) -> bool:
    """torch's process-based checkpoint writer died (killed, out of memory) during a write."""
    return "Checkpoint background process is dead" in str(exc)


def resume_or_start(run: Run) -> None:
    """Resume from the latest complete checkpoint in this run's folder, or start fresh."""
    run.checkpoints.remove_incomplete()
    latest, damaged = run.checkpoints.latest_verified()  # raises CheckpointDamaged when none verifies
    if damaged:
        log.warning(damaged_warning(damaged, latest))
    run.resumed_from = run.last_saved = latest
    if latest is None:
        log.info("starting a new run from %s", run.cfg.policy.model_name)
        return
    fingerprint = run.policy.fingerprint()
    meta = read_meta(latest)
    check_resumable(meta, _json_roundtrip(compat_fields(run.cfg, fingerprint)), latest)
    changed_lr = run.policy.load(str(latest))
    if changed_lr:
        log.info("policy.optimizer.lr changed since the checkpoint: %g -> %g, applied to the restored optimizer "
                 "and schedule", *changed_lr)
    saved = torch.load(latest / DRIVER_STATE, weights_only=False)
    run.state.__dict__.update(saved["state"])
    run.loader.load_state_dict(saved["loader"])
    torch.set_rng_state(saved["torch_rng"])
    run.state.weights_stale = True  # the engine still has the initial weights
    log.info("resumed from %s (step %d)", latest, run.state.step)


def restore_checkpoint_row(run: Run, loggers) -> None:
    """On resume, put back the metrics row of the checkpoint's step if a kill came between saving
    the checkpoint and logging the row."""
    latest = run.resumed_from  # not checkpoints.latest(): that may be a damaged newer one
    if run.state.step == 0 or latest is None:
        return
    row = missing_row(loggers.history, read_meta(latest), run.state.step)
    if row is not None:
        loggers.restore(row)
        log.info("restored the metrics row of step %d from %s", run.state.step, latest)


def missing_row(history: list[dict[str, Any]], meta: dict[str, Any], step: int) -> dict[str, Any] | None:
    """The row of `step` from a checkpoint's meta.json, when the history has no training row of it."""
    if any(r.get("step") == step and "timing/step_s" in r for r in history):
        return None
    metrics = meta.get("metrics", {})
    return {**metrics, "step": step} if metrics else None


def damaged_warning(damaged: list[tuple[Path, str]], resumed: Path | None) -> str:
    """One line: which newer checkpoints are damaged (and which file), where the run resumes, and
    that nothing was deleted."""
    listed = "; ".join(f"{path} is damaged ({problem})" for path, problem in damaged)
    return (f"{listed}; resuming from {resumed} instead. The damaged folder(s) are left in place, not deleted; "
            "this run replaces them when it saves those steps again")


def _json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
