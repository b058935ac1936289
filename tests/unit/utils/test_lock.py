"""One run per folder: a live run's lock refuses a second run (naming host and pid); a lock of a
dead process is taken over with one warning."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from nemo_grpo.utils.errors import UserError
from nemo_grpo.utils.lock import FolderLock, RunFolderLocked

HOLDER = textwrap.dedent("""
    import sys, time
    from nemo_grpo.utils.lock import FolderLock
    with FolderLock(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.readline()  # hold until the test closes stdin
""")


@pytest.fixture
def holder(tmp_path):
    """A real second process that holds the lock of tmp_path/run."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_live_run_refuses_a_second_one_naming_host_and_pid(tmp_path, holder):
    with pytest.raises(RunFolderLocked) as err:
        FolderLock(tmp_path / "run", "checkpointing.checkpoint_dir").acquire()
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg
    assert f"checkpointing.checkpoint_dir {tmp_path / 'run'} is in use by another run" in msg
    assert f"host {socket.gethostname()}, pid {holder.pid}" in msg
    holder.stdin.close()
    holder.wait(timeout=30)
    assert not (tmp_path / "run" / ".lock").exists()  # released at the end of that run
    with FolderLock(tmp_path / "run") as lock:  # now free
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / ".lock").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_one_warning(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # that process has exited
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": pid}))
    with caplog.at_level(logging.WARNING):
        with FolderLock(folder) as lock:
            assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"stale lock {folder / '.lock'} of process {pid}" in warnings[0]


def test_a_lock_of_another_host_or_unreadable_is_refused_with_the_way_out(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"host": "node-17", "pid": 4242}))
    with pytest.raises(RunFolderLocked, match=r"host node-17, pid 4242.*delete .*\.lock"):
        FolderLock(tmp_path).acquire()
    (tmp_path / ".lock").write_text("{")
    with pytest.raises(RunFolderLocked, match=r"cannot be read; if no run uses this folder, delete"):
        FolderLock(tmp_path).acquire()


def test_run_grpo_locks_both_folders_before_anything_is_written(tmp_path, holder, monkeypatch):
    from nemo_grpo.trainer import loop
    from nemo_grpo.trainer.config import TrainConfig

    cfg = TrainConfig()
    cfg.logger.log_dir = str(tmp_path / "logs")
    cfg.checkpointing.checkpoint_dir = str(tmp_path / "run")  # held by the other process
    monkeypatch.setattr(loop, "setup_run", lambda cfg: pytest.fail("the run started"))
    with pytest.raises(RunFolderLocked, match=rf"checkpointing.checkpoint_dir {tmp_path / 'run'} is in use .*pid {holder.pid}"):
        loop.run_grpo(cfg)
    assert not (tmp_path / "logs" / ".lock").exists()  # the lock taken first was given back
    cfg.checkpointing.checkpoint_dir = str(tmp_path / "ckpt")
    seen = []
    locked = lambda: sorted(p.parent.name for p in tmp_path.glob("*/.lock"))  # noqa: E731
    monkeypatch.setattr(loop, "_run_grpo", lambda cfg: seen.append(locked()))
    loop.run_grpo(cfg)
    assert seen == [["ckpt", "logs", "run"]] and locked() == ["run"]  # released at the end (run: the other process)
