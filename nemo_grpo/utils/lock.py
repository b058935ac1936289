"""One run per folder: `<folder>/.lock` holds the owner's host and pid while a run uses the folder.

    with FolderLock(checkpoint_dir):   # RunFolderLocked (a UserError) if a live run holds it
        ...

The file is created atomically (O_CREAT | O_EXCL), so of two runs started together exactly one
gets it. A lock left by a process that no longer exists on this host (a kill -9, a crash) is
taken over with one warning; a lock of another host cannot be checked and is refused, with the
way out in the message. The lock is removed when the run ends, only if it is still this process's.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from nemo_grpo.utils.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunFolderLocked(UserError):
    """Another live run uses the folder; the message names it (host, pid) and what to do."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    def __init__(self, folder: str | Path, what: str = "folder"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self.owner = {"host": socket.gethostname(), "pid": os.getpid()}
        self.held = False

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # tries again after taking over a stale lock, or after a release meanwhile
            if self._create():
                self.held = True
                return self
            holder = self._read()
            if holder == {}:
                continue
            if holder is None:
                raise RunFolderLocked(
                    f"{self.what} {self.folder} is locked by {self.path}, which cannot be read; if no run uses "
                    f"this folder, delete {self.path} and start again")
            host, pid = holder.get("host"), holder.get("pid")
            if host == self.owner["host"] and isinstance(pid, int) and (pid == os.getpid() or not pid_alive(pid)):
                log.warning("taking over the stale lock %s of process %s on %s, which no longer runs", self.path,
                            pid, host)
                self.path.unlink(missing_ok=True)
                continue
            raise RunFolderLocked(
                f"{self.what} {self.folder} is in use by another run (host {host}, pid {pid}, see {self.path}); "
                "wait for it to end, or give this run another folder. If that run is gone (another host), "
                f"delete {self.path}")
        raise RunFolderLocked(f"{self.what} {self.folder}: another run took the lock {self.path} at the same time")

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({**self.owner, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}, f)
        return True

    def _read(self) -> dict | None:
        for _ in range(5):  # the owner may be between creating the file and writing it
            try:
                holder = json.loads(self.path.read_text())
                return holder if isinstance(holder, dict) else None
            except FileNotFoundError:
                return {}  # released meanwhile: the next try creates it
            except (OSError, ValueError):
                time.sleep(0.05)
        return None

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if holder.get("host") == self.owner["host"] and holder.get("pid") == self.owner["pid"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
