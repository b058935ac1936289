"""A learning rate changed between a run and its resume is applied to the restored optimizer and schedule."""

import torch

from nemo_grpo.policy.worker import apply_peak_lr


def restored(lr: float, steps: int):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4))  # warm-up over 4 steps
    for _ in range(steps):
        opt.step()
        sched.step()
    opt2 = torch.optim.AdamW(model.parameters(), lr=lr)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: min(1.0, (s + 1) / 4))
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    return opt2, sched2


def test_a_new_peak_lr_takes_effect_at_the_schedules_position_and_afterwards():
    opt, sched = restored(1e-3, steps=1)
    assert apply_peak_lr(opt, sched, 4e-3) == (1e-3, 4e-3)
    assert sched.get_last_lr() == [4e-3 * 2 / 4] and opt.param_groups[0]["lr"] == 4e-3 * 2 / 4
    assert opt.param_groups[0]["initial_lr"] == 4e-3
    opt.step()
    sched.step()
    assert sched.get_last_lr() == [4e-3 * 3 / 4]
    state = sched.state_dict()
    assert state["base_lrs"] == [4e-3]  # the next checkpoint records the new peak


def test_the_same_lr_changes_nothing():
    opt, sched = restored(1e-3, steps=2)
    assert apply_peak_lr(opt, sched, 1e-3) is None
    assert sched.get_last_lr() == [1e-3 * 3 / 4]
