"""A pool of grader worker processes with a hard per-task time limit.

Why not ``multiprocessing.Pool`` or ``concurrent.futures``: neither can stop one running task. Here
each worker owns a pipe; a task that outlives its deadline gets its worker SIGKILLed and replaced
(the replacement forks from a preloaded forkserver, so it is ready in milliseconds), and the task
is reported as ``timeout``. A worker that dies while it runs a task (killed from outside, out of
memory) is replaced and the task is given once more, to the replacement: its answer is graded as
if nothing had happened; a task whose second worker dies too (an input that crashes the grader),
or that raises, is reported as ``error``. Timeouts, errors, retries and replacements are counted in
``stats``, never folded silently into a result.

``run`` is safe to call from any thread (one batch runs at a time, guarded by a lock) and uses no
signals. A pool created before ``os.fork`` is not used by the child: ``get_pool`` builds a new one.
"""

from __future__ import annotations

import atexit
import io
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerProcess, set_spawning_popen
from pathlib import Path
from typing import Any

from nemo_grpo.utils.faults import slow_grade

log = logging.getLogger(__name__)

_PRELOAD = ["nemo_grpo.rewards._preload"]
_MEMORY_LIMIT_BYTES = 4 << 30


def _debug_sleep(seconds: float) -> str:
    """Test hook: a task that takes ``seconds`` (used to prove that time-outs kill workers)."""
    time.sleep(seconds)
    return "slept"


def _debug_crash(code: int) -> None:
    """Test hook: a worker that dies mid-task."""
    os._exit(code)


def _slowed(seconds: float, marker: str, name: str, args: tuple) -> Any:
    """A fault injected on purpose (`slow_grade`, utils/faults.py): `name(*args)`, `seconds` late,
    announced by creating the file `marker` (when given)."""
    if marker:
        Path(marker).touch()
    time.sleep(seconds)
    return _task_functions()[name](*args)


def _task_functions() -> dict[str, Any]:
    from nemo_grpo.rewards.equivalence import engine_equal

    return {"engine_equal": engine_equal, "debug_sleep": _debug_sleep, "debug_crash": _debug_crash,
            "slowed": _slowed}


def _worker_main(conn: Connection) -> None:
    # Ctrl-C or a scheduler's SIGTERM reaches the whole process group: the parent decides when its
    # graders stop (it kills them, and a closed pipe ends this loop), so they ignore both.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT_BYTES, _MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    funcs = _task_functions()
    from nemo_grpo.rewards.equivalence import _math_verify

    _math_verify()  # import sympy/math-verify before declaring readiness
    conn.send(("ready", None))
    while True:
        try:
            name, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", funcs[name](*args)))
        except MemoryError:
            conn.send(("error", "MemoryError"))
        except Exception as e:  # reported to the caller as status "error"
            conn.send(("error", f"{type(e).__name__}: {e}"[:300]))


@dataclass
class TaskResult:
    status: str  # ok | timeout | error
    value: Any
    elapsed_s: float


class _NoMainPopen(popen_forkserver.Popen):
    """Forkserver launch that does not re-run the caller's ``__main__`` in the worker.

    The stock launch re-imports the main script in every child, which fails for scripts without
    an ``if __name__ == "__main__"`` guard and would re-run a training driver's top level. Grader
    workers only need this package, so the main-module entries are dropped from the preparation
    data; the rest mirrors ``popen_forkserver.Popen._launch``.
    """

    def _launch(self, process_obj):
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _WorkerProcess(ForkServerProcess):
    @staticmethod
    def _Popen(process_obj):
        return _NoMainPopen(process_obj)


class _Worker:
    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = _WorkerProcess(target=_worker_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task: tuple[int, float, float] | None = None  # (index, start, deadline)

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(timeout=5)
        finally:
            self.conn.close()


class GraderPool:
    """``num_workers`` worker processes; ``run(tasks)`` returns one TaskResult per task, in order."""

    def __init__(self, num_workers: int = 2, timeout_s: float = 1.0, start_timeout_s: float = 60.0) -> None:
        if num_workers < 1 or timeout_s <= 0:
            raise ValueError("GraderPool needs num_workers >= 1 and timeout_s > 0")
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(_PRELOAD)
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.pid = os.getpid()
        self.stats = {"tasks": 0, "timeouts": 0, "errors": 0, "retries": 0, "worker_restarts": 0}
        self._lock = threading.Lock()
        self._workers = [_Worker(self._ctx) for _ in range(num_workers)]
        self._closed = False

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._workers[self._workers.index(w)] = _Worker(self._ctx)
        self.stats["worker_restarts"] += 1

    def run(self, name: str, arg_list: list[tuple], timeout_s: float | None = None) -> list[TaskResult]:
        """Run ``name(*args)`` for each args in a worker; hard limit ``timeout_s`` per task."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            if self._closed:
                raise RuntimeError("GraderPool is closed")
            return self._run_locked(name, arg_list, limit)

    def _run_locked(self, name: str, arg_list: list[tuple], limit: float) -> list[TaskResult]:
        results: list[TaskResult | None] = [None] * len(arg_list)
        pending = deque(range(len(arg_list)))
        started: dict[int, float] = {}  # a task's first start (a retried task's time counts from there)
        retried: set[int] = set()  # tasks given again after their worker died
        slow = slow_grade()  # tests: the first task sent is slowed (a grader busy on purpose)
        self.stats["tasks"] += len(arg_list)
        start_deadline = time.monotonic() + self.start_timeout_s
        while pending or any(w.task for w in self._workers):
            now = time.monotonic()
            for w in list(self._workers):
                if pending and w.ready and w.task is None:
                    i = pending.popleft()
                    message = (name, arg_list[i])
                    if slow is not None and i not in retried:
                        message, slow = ("slowed", (slow[0], slow[1], name, arg_list[i])), None
                    try:
                        w.conn.send(message)
                    except OSError:  # the worker died while idle (killed, out of memory): replace it, retry the task
                        pending.appendleft(i)
                        self._replace(w)
                        continue
                    started.setdefault(i, now)
                    w.task = (i, started[i], now + limit)
            if not any(w.ready for w in self._workers) and now > start_deadline:
                raise RuntimeError(f"no grader worker became ready in {self.start_timeout_s:.0f} s")
            deadlines = [w.task[2] for w in self._workers if w.task]
            wait_s = max(0.0, min(deadlines) - now) if deadlines else 0.5
            ready_conns = wait([w.conn for w in self._workers], timeout=wait_s)
            now = time.monotonic()
            for w in list(self._workers):
                if w.conn in ready_conns:
                    try:
                        kind, value = w.conn.recv()
                    except (EOFError, OSError):
                        kind, value = "died", None
                    if kind == "ready":
                        w.ready = True
                        continue
                    if w.task is None:  # died while starting up
                        self._replace(w)
                        self.stats["errors"] += 1
                        continue
                    i, t0, _ = w.task
                    w.task = None
                    if kind == "died":
                        w.proc.join(timeout=1)
                        if i not in retried:  # killed from outside, most likely: the task goes to the replacement
                            log.warning("a grader process (pid %s) died while grading (exit status %s); replaced "
                                        "it and gave its answer to the new process", w.proc.pid, w.proc.exitcode)
                            retried.add(i)
                            pending.appendleft(i)
                            self.stats["retries"] += 1
                        else:
                            self.stats["errors"] += 1
                            results[i] = TaskResult("error", f"worker died twice (exit {w.proc.exitcode})", now - t0)
                        self._replace(w)
                    else:
                        if kind == "error":
                            self.stats["errors"] += 1
                        results[i] = TaskResult(kind, value, now - t0)
                elif w.task and now >= w.task[2]:
                    i, t0, _ = w.task
                    self.stats["timeouts"] += 1
                    results[i] = TaskResult("timeout", None, now - t0)
                    self._replace(w)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:  # never drop a result: the rewards would no longer line up with their responses
            raise RuntimeError(f"grader pool lost the results of tasks {missing[:10]} ({len(missing)} of {len(results)})")
        return results

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for w in self._workers:
                w.kill()


_POOL: GraderPool | None = None
_POOL_LOCK = threading.Lock()


def get_pool(num_workers: int = 2, timeout_s: float = 1.0) -> GraderPool:
    """The process-wide pool (created on first use; rebuilt if its size changed or after fork)."""
    global _POOL
    with _POOL_LOCK:
        p = _POOL
        if p is None or p.pid != os.getpid() or len(p._workers) != num_workers or p._closed:
            if p is not None and p.pid == os.getpid():
                p.close()
            _POOL = GraderPool(num_workers, timeout_s)
        _POOL.timeout_s = timeout_s
        return _POOL


def pool_restarts() -> int | None:
    """How many grader workers this process's pool has replaced so far (killed, crashed or timed
    out); None when no pool was started (every answer was decided without the grading engine)."""
    p = _POOL
    return p.stats["worker_restarts"] if p is not None and p.pid == os.getpid() else None


def shutdown_pool() -> None:
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL.pid == os.getpid():
            _POOL.close()
        _POOL = None


atexit.register(shutdown_pool)
