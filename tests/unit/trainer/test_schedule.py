"""grpo.max_num_epochs stops the run once that many passes over the prompts were drawn, and the
last step of a run is always checkpointed (so a finished stage can be exported)."""

from __future__ import annotations

from types import SimpleNamespace

from nemo_grpo.trainer.checkpointing import missing_row
from nemo_grpo.trainer.loop import checkpoint_due, epochs_done, finished
from nemo_grpo.trainer.state import RunState

BATCHES = 5  # batches of 4 prompts per epoch


def config(epochs: int, max_steps: int = 100, save_period: int = 10):
    return SimpleNamespace(grpo=SimpleNamespace(num_prompts_per_step=4, max_num_epochs=epochs, max_num_steps=max_steps),
                           checkpointing=SimpleNamespace(save_period=save_period))


def test_epoch_limit():
    assert not epochs_done(config(epochs=1), RunState(consumed_samples=16), BATCHES)  # 4 of 5 batches used
    assert epochs_done(config(epochs=1), RunState(consumed_samples=20), BATCHES)
    assert not epochs_done(config(epochs=2), RunState(consumed_samples=20), BATCHES)
    assert epochs_done(config(epochs=2), RunState(consumed_samples=40), BATCHES)


def test_last_step_is_always_checkpointed():
    def due(consumed, epochs, step, max_steps=100):
        cfg = config(epochs, max_steps)
        return checkpoint_due(cfg, step, last=finished(cfg, RunState(step=step, consumed_samples=consumed), BATCHES))

    assert not due(consumed=16, epochs=1, step=4)
    assert due(consumed=20, epochs=1, step=5)  # the epoch limit ends the run here
    assert due(consumed=0, epochs=9, step=7, max_steps=7)  # max_num_steps
    assert due(consumed=0, epochs=9, step=10)  # save_period


def test_resume_restores_a_row_lost_between_checkpoint_and_log():

    meta = {"step": 2, "metrics": {"step": 2, "timing/step_s": 3.0, "train/reward_mean": 0.5}}
    history = [{"step": 0, "val/x/avg@1": 0.1}, {"step": 1, "timing/step_s": 2.0}]
    assert missing_row(history, meta, 2) == {"step": 2, "timing/step_s": 3.0, "train/reward_mean": 0.5}
    assert missing_row(history + [{"step": 2, "timing/step_s": 3.0}], meta, 2) is None  # logged before the kill
