"""How a run ends when the cluster ends it: a preemption signal, or a worker that dies.

SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) to the driver: the running step goes on
and is checkpointed if that happens within `checkpointing.preemption_grace_s`; otherwise (or on a
second signal, or when no step is running) the step is abandoned and the last checkpoint stays
the resume point. Either way the run raises `Preempted`: one line, exit status 128 + signal
(143 for SIGTERM, 130 for SIGINT), and every process the run started is stopped.

A policy rank or the engine that dies (Ray's actor-death errors) ends the run with `WorkerDied`:
one line naming the worker and the step, exit status 1.

Ray's driver installs its own SIGTERM handler at `ray.init` (it exits the process); `PreemptionWatch`
is installed after Ray has started, so its handlers are the ones that run.

A scheduler that signals every process of the job one by one (not the driver's process group) also
stops the daemons of a Ray the run started (GCS, raylet): the step cannot finish then. While a
signalled step runs, `dead_daemons` (when set) is polled; once a daemon has exited, the step is
abandoned at once, saying so (without the poll the driver learns it only at its next call to a dead
worker, and names that worker instead).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from nemo_grpo.utils.errors import RunEnded

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def resume_command() -> str:
    """The command line this process was started with (the same command resumes the run)."""
    return shlex.join(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])


def resume_point_text(checkpoint: str | None) -> str:
    return (f"the last checkpoint, {checkpoint}, is the resume point" if checkpoint
            else "no checkpoint was saved yet, so the run starts afresh")


class Preempted(RunEnded):
    """The run was stopped by a signal. `saved`: the checkpoint of the step that finished;
    otherwise `why` the step was abandoned, and `resume_point` the last checkpoint."""

    def __init__(self, signum: int, step: int | None, *, saved: str | None = None, resume_point: str | None = None,
                 why: str = ""):
        self.signum, self.step, self.saved, self.resume_point, self.why = signum, step, saved, resume_point, why
        self.exit_status = 128 + signum
        name = signal.Signals(signum).name
        if saved:
            what = f"step {step} finished and was checkpointed in {saved}, the resume point"
        elif not why:  # the step finished, checkpointing is off
            what = f"step {step} finished; nothing saved (checkpointing.enabled is false)"
        elif step is None:
            what = f"stopped before the first step ({why}); {resume_point_text(resume_point)}"
        else:
            what = f"step {step} abandoned ({why}); {resume_point_text(resume_point)}"
        super().__init__(f"stopped by {name}: {what}. To resume, run the same command: {resume_command()}")


class WorkerDied(RunEnded):
    """A Ray worker of the run (a policy rank, the generation engine) died."""

    exit_status = 1

    def __init__(self, worker: str, step: int, resume_point: str | None):
        self.worker, self.step = worker, step
        super().__init__(f"the {worker} died during step {step}; {resume_point_text(resume_point)}. To resume, "
                         f"run the same command: {resume_command()}")


class StopNow(BaseException):
    """Raised in the main thread by the signal handler: abandon what runs now. A BaseException, so
    that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int, why: str):
        super().__init__(why)
        self.signum, self.why = signum, why


class PreemptionWatch:
    """Signal handlers for the length of a run (`install`, then `restore` the previous ones).

    The loop marks the steps (`step_running`); the first signal during a step lets it finish within
    `grace_s` (then `requested` is the signal), a timer raises `StopNow` when the grace time is
    over; a first signal outside a step, or a second signal, raises `StopNow` at once."""

    DAEMON_POLL_S = 0.25

    def __init__(self, grace_s: float, dead_daemons: Callable[[], list[str]] | None = None):
        self.grace_s = grace_s
        self.dead_daemons = dead_daemons  # names of the run's exited Ray daemons (polled after a signal)
        self._daemons_gone: str | None = None
        self.signum: int | None = None  # the first signal received
        self.step_running = False
        self.stopping = False  # the run is being torn down: a signal exits at once
        self.stopped: StopNow | None = None  # what the handler raised (Ray may wrap it in a SystemError)
        self._expired = False
        self._timer: threading.Timer | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> int | None:
        return self.signum

    def install(self) -> None:
        """Take SIGTERM and SIGINT (call it after `ray.init`, which sets a SIGTERM handler of its own)."""
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous.setdefault(sig, signal.signal(sig, self._handle))

    def restore(self) -> None:
        """Give the signals back to the handlers they had before `install`."""
        if self._timer is not None:
            self._timer.cancel()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.stopping:  # a signal while the run is being torn down: go now
            name = signal.Signals(signum).name
            print(f"stopped by {name} while the run was shutting down: exiting at once; some of its processes "
                  "may remain", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        if self.signum is None:
            self.signum = signum
            if not self.step_running:
                self._stop(signum, "no step was running")
            if self.grace_s <= 0:
                self._stop(signum, "checkpointing.preemption_grace_s is 0")
            log.info("%s received: finishing the running step and checkpointing it (up to %g s, "
                     "checkpointing.preemption_grace_s); a second signal stops at once",
                     signal.Signals(signum).name, self.grace_s)
            self._timer = threading.Timer(self.grace_s, self._expire)
            self._timer.daemon = True
            self._timer.start()
            if self.dead_daemons is not None:
                threading.Thread(target=self._watch_daemons, name="preemption-ray-watch", daemon=True).start()
            return
        if self._daemons_gone:
            self._stop(self.signum, self._daemons_gone)
        if self._expired:
            self._stop(self.signum, f"it did not finish within checkpointing.preemption_grace_s={self.grace_s:g} s")
        self._stop(signum, f"a second {signal.Signals(signum).name} stopped it at once")

    def _stop(self, signum: int, why: str) -> None:
        self.stopping = True
        self.stopped = StopNow(signum, why)
        if self._timer is not None:
            self._timer.cancel()
        raise self.stopped

    def _expire(self) -> None:
        """Timer thread: the grace time is over; run the handler in the main thread."""
        if self.stopping or self.signum is None:
            return
        self._expired = True
        # a real signal to the main thread: it also interrupts a blocking call (sleep, a pipe read)
        signal.pthread_kill(threading.main_thread().ident, self.signum)

    def _watch_daemons(self) -> None:
        """Thread, after a signal during a step: the step finishes only while Ray's daemons live."""
        while not self.stopping and self.step_running and not self._expired:
            dead = self.dead_daemons()
            if dead:
                self._daemons_gone = (f"Ray's {', '.join(dead)} of this run ended with the signal too, so the step "
                                      "could not finish")
                signal.pthread_kill(threading.main_thread().ident, self.signum)
                return
            time.sleep(self.DAEMON_POLL_S)


def dead_worker(exc: BaseException, actors: dict[str, Any]) -> str | None:
    """Which of `actors` (name -> Ray actor handle) is dead, behind a Ray error: the one an
    actor-death error names, else the first that no longer answers (a busy live actor is not
    dead). None: every actor lives, the error is something else."""
    import ray
    from ray.exceptions import RayActorError

    cause = exc
    while cause is not None and not isinstance(cause, RayActorError):
        cause = getattr(cause, "cause", None)
    dead_id = getattr(cause, "actor_id", None) if cause is not None else None
    for name, actor in actors.items():
        if dead_id is not None and _actor_hex(actor) == str(dead_id):
            return name
    probes = {name: actor.__ray_ready__.remote() for name, actor in actors.items()}
    answered, _ = ray.wait(list(probes.values()), num_returns=len(probes), timeout=5)
    for name, ref in probes.items():
        if ref in answered:
            try:
                ray.get(ref)
            except RayActorError:
                return name
    return None


def _actor_hex(actor: Any) -> str | None:
    try:
        return actor._actor_id.hex()
    except AttributeError:
        return None


__all__ = ["Preempted", "WorkerDied", "PreemptionWatch", "StopNow", "dead_worker", "resume_command"]
