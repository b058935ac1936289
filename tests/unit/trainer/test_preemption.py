"""Preemption signals and dead workers: the handlers, the one-line messages, the exit statuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from nemo_grpo.cli import run_reporting_user_errors
from nemo_grpo.trainer.preemption import Preempted, PreemptionWatch, StopNow, WorkerDied


@pytest.fixture
def watch():
    w = PreemptionWatch(grace_s=0.5)
    w.install()
    yield w
    w.restore()


def test_a_signal_during_a_step_lets_it_finish_and_a_second_stops_at_once(watch):
    watch.step_running = True
    os.kill(os.getpid(), signal.SIGTERM)
    assert watch.requested == signal.SIGTERM  # no exception: the step goes on
    with pytest.raises(StopNow, match="second SIGINT"):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)


def test_a_step_that_outlasts_the_grace_time_is_abandoned(watch):
    watch.step_running = True
    os.kill(os.getpid(), signal.SIGINT)
    start = time.monotonic()
    with pytest.raises(StopNow, match="did not finish within checkpointing.preemption_grace_s=0.5 s") as caught:
        time.sleep(5)
    assert caught.value.signum == signal.SIGINT and 0.4 < time.monotonic() - start < 3


def test_a_signal_outside_a_step_stops_at_once(watch):
    with pytest.raises(StopNow, match="no step was running"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)


def test_a_signalled_step_is_abandoned_at_once_when_the_signal_also_ended_rays_daemons():
    """A scheduler signalling every process one by one: the run's own Ray daemons die with it, and the
    step cannot finish. A real process stands for the raylet; while it lives the step goes on."""
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    w = PreemptionWatch(grace_s=30, dead_daemons=lambda: ["raylet"] if daemon.poll() is not None else [])
    w.install()
    try:
        w.step_running = True
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the daemon lives: the step goes on
        assert w.requested == signal.SIGTERM and w.stopped is None
        daemon.terminate()
        start = time.monotonic()
        with pytest.raises(StopNow, match="Ray's raylet of this run ended with the signal too") as caught:
            time.sleep(10)
        assert caught.value.signum == signal.SIGTERM and time.monotonic() - start < 2
    finally:
        w.restore()
        daemon.kill()
        daemon.wait()


def test_restore_gives_the_signals_back():
    before = signal.getsignal(signal.SIGTERM)
    w = PreemptionWatch(1.0)
    w.install()
    assert signal.getsignal(signal.SIGTERM) == w._handle
    w.restore()
    assert signal.getsignal(signal.SIGTERM) == before


def fail_with(exc):
    def main():
        raise exc
    return main


def test_exit_status_is_128_plus_the_signal_with_one_line(capsys):
    saved = Preempted(signal.SIGTERM, 3, saved="/ck/step_3")
    assert run_reporting_user_errors(fail_with(saved)) == 143
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("stopped by SIGTERM: step 3 finished and was checkpointed in /ck/step_3")
    assert "run the same command" in err
    abandoned = Preempted(signal.SIGINT, 3, resume_point="/ck/step_2", why="a second SIGINT stopped it at once")
    assert run_reporting_user_errors(fail_with(abandoned)) == 130
    err = capsys.readouterr().err
    assert "step 3 abandoned (a second SIGINT stopped it at once); the last checkpoint, /ck/step_2, is the " \
           "resume point" in err and err.count("\n") == 1


def test_a_dead_worker_is_one_line_naming_it_and_the_step_with_exit_status_1(capsys):
    assert run_reporting_user_errors(fail_with(WorkerDied("policy rank 0", 4, None))) == 1
    err = capsys.readouterr().err
    assert err.startswith("the policy rank 0 died during step 4; no checkpoint was saved yet")
    assert err.count("\n") == 1
