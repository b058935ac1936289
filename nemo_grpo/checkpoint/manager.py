"""Checkpoint folders: written whole or not at all, found again on resume, pruned to the best K.

Layout of one checkpoint (`<checkpoint_dir>/step_<N>/`):

    policy/weights/        DCP shards of the model (HF parameter names)
    policy/optimizer/      DCP shards of the optimizer state
    policy/extra_state_rank<r>.pt   scheduler and RNG state of each rank
    driver_state.pt        step, consumed samples, data-loader position, driver RNG
    manifest.json          every other file's size and sha256, written just before meta.json
    meta.json              step, metrics, model name and architecture, written last
    config.yaml            the resolved config of the run
    tokenizer/             the tokenizer files

Everything is written into `tmp_step_<N>/` first and renamed when complete, so a crash while
saving leaves the previous checkpoint untouched and a half-written folder that is never loaded
(and is removed on the next start). A save in the background (`checkpointing.async_save`,
`inflight.py`) is finished the same way once its shards are written. Before writing, `check_space` estimates the bytes the
checkpoint needs (`estimate_checkpoint_bytes`) and refuses a save that clearly does not fit the
free space, before anything is written. A save that fails anyway (a full disk, a permission)
removes its own `tmp_step_<N>/` and raises `CheckpointSaveError`, one line with the folder, the
error, the bytes needed and the bytes free.

On resume a checkpoint is verified before anything of it is loaded (`verify_checkpoint`): a
readable meta.json, a `.metadata` file in every DCP folder, and every file of the manifest present
with its size and checksum. Checkpoints written before manifests existed get the first two checks
and what their own files can show: complete torch archives, shards as long as `.metadata` says.
A damaged checkpoint is never deleted here: it is named and left in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed.checkpoint as dcp

from nemo_grpo.utils.errors import UserError
from nemo_grpo.utils.faults import injected_free_bytes

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step_(\d+)$")
MANIFEST = "manifest.json"
META = "meta.json"
DRIVER_STATE = "driver_state.pt"
DCP_FOLDERS = ("policy/weights", "policy/optimizer")
_HASH_CHUNK = 1 << 20
# Beyond the model and optimizer state a checkpoint holds the tokenizer (a Qwen2.5 one is about
# 11 MiB), the config, the driver and scheduler state and the manifest; and the estimate gets a margin.
SAVE_EXTRA_BYTES = 16 << 20
SAVE_MARGIN = 0.10


class CheckpointMismatch(UserError, ValueError):
    """A checkpoint that this run must not resume; the message lists what differs."""


class CheckpointDamaged(UserError, ValueError):
    """No checkpoint that can be loaded (or the one asked for is damaged); the message names the
    damaged files and what to do."""


class CheckpointSaveError(UserError):
    """A save that failed on the filesystem (no space, no permission); the previous checkpoint is intact."""


@dataclass
class CheckpointManager:
    root: Path
    keep_top_k: int | None = None
    metric_name: str | None = None
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.needed_bytes: int | None = None  # the estimate of the save in progress (see check_space)

    def remove_incomplete(self) -> list[Path]:
        """Delete folders of saves that never finished."""
        removed = []
        if self.root.is_dir():
            for path in self.root.glob("tmp_step_*"):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        if removed:
            log.warning("removed %d incomplete checkpoint folder(s) in %s", len(removed), self.root)
        return removed

    def complete(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        out = []
        for path in self.root.iterdir():
            match = STEP_DIR.match(path.name)
            if match and (path / "meta.json").is_file():
                out.append((int(match.group(1)), path))
        return sorted(out)

    def latest(self) -> Path | None:
        """The newest complete checkpoint folder (not verified: see `latest_verified`)."""
        found = self.complete()
        return found[-1][1] if found else None

    def latest_verified(self) -> tuple[Path | None, list[tuple[Path, str]]]:
        """The newest complete checkpoint that verifies, and the newer ones that did not, each with
        what is damaged. Raises CheckpointDamaged when there are checkpoints and none verifies."""
        damaged: list[tuple[Path, str]] = []
        for _, path in reversed(self.complete()):
            problem = verify_checkpoint(path)
            if problem is None:
                return path, damaged
            damaged.append((path, problem))
        if damaged:
            listed = "; ".join(f"{path.name}: {problem}" for path, problem in damaged)
            raise CheckpointDamaged(
                f"no checkpoint in {self.root} can be resumed, every one is damaged ({listed}); nothing was "
                "deleted. Move the damaged step_<N> folders away to start this run from scratch, or set "
                "checkpointing.checkpoint_dir to another folder")
        return None, []

    def check_space(self, step: int, state_bytes: int | None) -> int:
        """Estimate the bytes the checkpoint of `step` needs (`estimate_checkpoint_bytes`) and refuse
        the save, before anything is written, when the free space of the checkpoint folder's
        filesystem is below it: CheckpointSaveError naming the folder, the bytes needed and free."""
        previous = self._previous(step)
        self.needed_bytes = needed = estimate_checkpoint_bytes(state_bytes, folder_size(previous) if previous else None)
        free = injected_free_bytes(step)
        if free is None:
            free = free_bytes(self.root)
        if isinstance(free, int) and free < needed:
            raise CheckpointSaveError(
                f"refusing to save the checkpoint of step {step} in {self.root / f'step_{step}'}: it needs about "
                f"{show_bytes(needed)} and only {show_bytes(free)} are free on that filesystem; nothing was written "
                f"and {self._kept(previous)}. Free space (or set checkpointing.checkpoint_dir to a larger disk) and "
                "rerun the same command to resume")
        return needed

    def _previous(self, step: int) -> Path | None:
        """The newest complete checkpoint of another step than `step`."""
        found = [path for s, path in self.complete() if s != step]
        return found[-1] if found else None

    @staticmethod
    def _kept(previous: Path | None) -> str:
        return (f"the previous checkpoint {previous} is intact, {show_bytes(folder_size(previous))}" if previous
                else "there is no earlier checkpoint")

    def begin(self, step: int) -> Path:
        tmp = self.root / f"tmp_step_{step}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        except OSError as exc:
            raise self.save_failed(tmp, step, exc) from None
        return tmp

    def finish(self, tmp: Path, step: int, meta: dict[str, Any]) -> Path:
        """Write the manifest, then meta.json last, then make the checkpoint visible with one rename."""
        final = self.root / f"step_{step}"
        try:
            write_manifest(tmp)
            (tmp / "meta.json.tmp").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            (tmp / "meta.json.tmp").rename(tmp / META)
            if final.exists():
                log.warning("replacing %s, left by an earlier attempt of this run", final)
                shutil.rmtree(final)
            tmp.rename(final)
        except OSError as exc:
            raise self.save_failed(tmp, step, exc) from None
        self.prune(current_step=step)
        return final

    def save_failed(self, tmp: Path, step: int, exc: BaseException) -> CheckpointSaveError:
        """Remove the partial `tmp` folder of a failed save and return the one-line error to raise:
        the folder, the filesystem error, the bytes the save needs (when estimated) and the free
        bytes there, and the size of the last checkpoint."""
        shutil.rmtree(tmp, ignore_errors=True)
        cause = find_os_error(exc) or exc
        if isinstance(cause, OSError) and cause.errno is not None:
            what = (cause.strerror or os.strerror(cause.errno)).lower()
            if cause.filename:
                what += f" ({cause.filename})"
        else:
            what = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        free = free_bytes(self.root)
        free_text = show_bytes(free) if isinstance(free, int) else f"{free} bytes"
        needs = f"it needs about {show_bytes(self.needed_bytes)} and " if self.needed_bytes else ""
        return CheckpointSaveError(
            f"cannot save the checkpoint of step {step} in {tmp}: {what}; {needs}{free_text} are free on that "
            f"filesystem; the partial folder was removed and {self._kept(self._previous(step))}. Free space (or fix "
            "the folder's permissions) and rerun the same command to resume")

    def prune(self, current_step: int | None = None) -> list[Path]:
        """Keep the latest checkpoint plus the best `keep_top_k` by `metric_name`. With
        `current_step` (the step just saved), folders of later steps (left by an earlier attempt,
        e.g. damaged ones this run fell back from) are neither ranked nor removed."""
        found = self.complete()
        if current_step is not None:
            found = [(s, p) for s, p in found if s <= current_step]
        if self.keep_top_k is None or len(found) <= self.keep_top_k:
            return []
        latest_step = found[-1][0]

        def score(item: tuple[int, Path]) -> tuple[int, float, int]:
            value = meta_metric(item[1], self.metric_name) if self.metric_name else None
            if value is None:  # no metric: rank by recency
                return (0, 0.0, item[0])
            return (1, float(value) if self.higher_is_better else -float(value), item[0])

        ranked = sorted(found, key=score, reverse=True)
        keep = {step for step, _ in ranked[: self.keep_top_k]} | {latest_step}
        removed = [path for step, path in found if step not in keep]
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        return removed


def read_meta(step_dir: Path) -> dict[str, Any]:
    return json.loads((Path(step_dir) / "meta.json").read_text())


def meta_metric(step_dir: Path, name: str) -> Any:
    """A metric of a checkpoint's meta.json; None when it has none or meta.json is unreadable
    (a damaged checkpoint is ranked by its step, never crashes a save)."""
    try:
        meta = read_meta(step_dir)
        return meta.get("metrics", {}).get(name) if isinstance(meta, dict) else None
    except (OSError, ValueError):
        return None


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _payload_files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*")
                  if p.is_file() and p.relative_to(step_dir).as_posix() not in (MANIFEST, META, "meta.json.tmp"))


def write_manifest(step_dir: Path) -> dict[str, Any]:
    """`manifest.json`: size and sha256 of every file under `step_dir` (but itself and meta.json)."""
    step_dir = Path(step_dir)
    files = {p.relative_to(step_dir).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
             for p in _payload_files(step_dir)}
    manifest = {"version": 1, "files": files}
    tmp = step_dir / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    tmp.rename(step_dir / MANIFEST)
    return manifest


def verify_checkpoint(step_dir: Path) -> str | None:
    """None when the checkpoint can be loaded, else what is damaged, naming the file
    (e.g. "policy/weights/__0_0.distcp: 512 bytes, the manifest says 1024")."""
    step_dir = Path(step_dir)
    try:
        meta = read_meta(step_dir)
        if not isinstance(meta, dict):
            raise ValueError(f"a JSON {type(meta).__name__}, not an object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{META}: unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    manifest_path = step_dir / MANIFEST
    if manifest_path.is_file():
        try:
            files = json.loads(manifest_path.read_text())["files"]
            entries = [(name, int(e["size"]), str(e["sha256"])) for name, e in files.items()]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            return f"{MANIFEST}: unreadable"
        for name, size, sha in entries:
            path = step_dir / name
            if not path.is_file():
                return f"{name}: missing"
            actual = path.stat().st_size
            if actual != size:
                return f"{name}: {actual} bytes, the manifest says {size}"
        for name, _, sha in entries:  # sizes first: cheap, and the usual damage (a truncated shard)
            try:
                if sha256_file(step_dir / name) != sha:
                    return f"{name}: checksum differs from the manifest"
            except OSError as exc:
                return f"{name}: unreadable ({exc.strerror or exc})"
    dcp_dirs = {p.parent for p in step_dir.rglob("*.distcp")}
    dcp_dirs |= {step_dir / d for d in DCP_FOLDERS if (step_dir / d).is_dir()}
    for folder in sorted(dcp_dirs):
        if not (folder / ".metadata").is_file():
            return f"{(folder / '.metadata').relative_to(step_dir).as_posix()}: missing"
    if not manifest_path.is_file():
        return _check_without_manifest(step_dir, sorted(dcp_dirs))
    return None


def _check_without_manifest(step_dir: Path, dcp_dirs: list[Path]) -> str | None:
    """What a checkpoint written before manifests can still show of its damage, from its own files:
    the driver state present, every torch file a complete zip archive (CRCs checked), and every DCP
    shard at least as long as its `.metadata` says its last item ends."""
    if not (step_dir / DRIVER_STATE).is_file():
        return f"{DRIVER_STATE}: missing"
    for path in sorted(step_dir.rglob("*.pt")):
        name = path.relative_to(step_dir).as_posix()
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            return f"{name}: not a complete torch file (truncated or damaged: {exc})"
        if bad is not None:
            return f"{name}: damaged (the checksum of its part {bad} differs)"
    for folder in dcp_dirs:
        try:
            storage = dcp.FileSystemReader(str(folder)).read_metadata().storage_data
        except Exception as exc:  # an unpickling error of a damaged file can be almost any exception
            name = (folder / ".metadata").relative_to(step_dir).as_posix()
            return f"{name}: unreadable ({type(exc).__name__}: {str(exc)[:120]})"
        ends: dict[str, int] = {}
        for info in storage.values():
            ends[info.relative_path] = max(ends.get(info.relative_path, 0), info.offset + info.length)
        for relative, end in sorted(ends.items()):
            shard = folder / relative
            name = shard.relative_to(step_dir).as_posix()
            if not shard.is_file():
                return f"{name}: missing"
            size = shard.stat().st_size
            if size < end:
                return f"{name}: {size} bytes, its .metadata says at least {end}"
    return None


def find_os_error(exc: BaseException | None, _depth: int = 0) -> OSError | None:
    """The filesystem error behind `exc`: itself, its cause or context, a Ray task error's cause, or
    one of a DCP CheckpointException's per-rank failures."""
    if exc is None or _depth > 8:
        return None
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc
    inner: list[Any] = [exc.__cause__, exc.__context__, getattr(exc, "cause", None)]
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict):
        for value in failures.values():
            inner += list(value) if isinstance(value, tuple) else [value]
    for candidate in inner:
        if isinstance(candidate, BaseException) and candidate is not exc:
            found = find_os_error(candidate, _depth + 1)
            if found is not None:
                return found
    return None


def free_bytes(path: Path) -> int | str:
    """Free bytes on the filesystem of `path` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return "unknown"


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def estimate_checkpoint_bytes(state_bytes: int | None, previous_size: int | None) -> int:
    """The bytes a checkpoint is expected to take: the model and optimizer state (`state_bytes`:
    parameters x dtype bytes plus AdamW's two moments) and SAVE_EXTRA_BYTES for the tokenizer,
    config and driver state, or the previous checkpoint's size when that is larger (it is the real
    figure of this run), plus a SAVE_MARGIN margin."""
    base = max((state_bytes or 0) + SAVE_EXTRA_BYTES, previous_size or 0)
    return int(base * (1 + SAVE_MARGIN))


def show_bytes(n: int) -> str:
    """`123456789 bytes (118 MiB)`: the exact figure, and one a reader takes in at a glance."""
    size, unit = float(n), "bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024:
            break
    return f"{n} bytes ({size:.3g} {unit})" if n >= 1024 else f"{n} bytes"


def check_resumable(meta: dict[str, Any], expected: dict[str, Any], where: Path) -> None:
    """Refuse a checkpoint whose model or run-shaping settings differ from this run's."""
    saved = meta.get("compat", {})
    diffs = [
        f"{key}: checkpoint has {saved.get(key)!r}, this run has {value!r}"
        for key, value in expected.items()
        if saved.get(key) != value
    ]
    if diffs:
        raise CheckpointMismatch(
            f"refusing to resume {where}: it belongs to another model or an incompatible config ("
            + "; ".join(diffs)
            + "). Use another checkpointing.checkpoint_dir for a new run, or start a new stage from an "
            "HF export with policy.model_name=<folder>."
        )
