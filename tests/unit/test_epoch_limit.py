"""grpo.max_num_epochs stops the run once that many passes over the prompts were drawn, and the
last step of a run is always checkpointed (so a finished stage can be exported)."""

from __future__ import annotations

from types import SimpleNamespace

from nemo_grpo.algorithms.grpo import _checkpoint_due, _epochs_done


def fake_run(consumed: int, epochs: int, batches_per_epoch: int = 5, prompts: int = 4, step: int = 0,
             max_steps: int = 100, save_period: int = 10):
    loader = type("Loader", (), {"__len__": lambda self: batches_per_epoch})()
    cfg = SimpleNamespace(grpo=SimpleNamespace(num_prompts_per_step=prompts, max_num_epochs=epochs,
                                               max_num_steps=max_steps),
                          checkpointing=SimpleNamespace(save_period=save_period))
    return SimpleNamespace(loader=loader, cfg=cfg, state=SimpleNamespace(consumed_samples=consumed, step=step))


def test_epoch_limit():
    assert not _epochs_done(fake_run(consumed=16, epochs=1))  # 4 of 5 batches used
    assert _epochs_done(fake_run(consumed=20, epochs=1))
    assert not _epochs_done(fake_run(consumed=20, epochs=2))
    assert _epochs_done(fake_run(consumed=40, epochs=2))


def test_last_step_is_always_checkpointed():
    assert not _checkpoint_due(fake_run(consumed=16, epochs=1, step=4))
    assert _checkpoint_due(fake_run(consumed=20, epochs=1, step=5))  # the epoch limit ends the run here
    assert _checkpoint_due(fake_run(consumed=0, epochs=9, step=7, max_steps=7))  # max_num_steps
    assert _checkpoint_due(fake_run(consumed=0, epochs=9, step=10))  # save_period


def test_resume_restores_a_row_lost_between_checkpoint_and_log():
    from nemo_grpo.algorithms.grpo import missing_row

    meta = {"step": 2, "metrics": {"step": 2, "timing/step_s": 3.0, "train/reward_mean": 0.5}}
    history = [{"step": 0, "val/x/avg@1": 0.1}, {"step": 1, "timing/step_s": 2.0}]
    assert missing_row(history, meta, 2) == {"step": 2, "timing/step_s": 3.0, "train/reward_mean": 0.5}
    assert missing_row(history + [{"step": 2, "timing/step_s": 3.0}], meta, 2) is None  # logged before the kill
