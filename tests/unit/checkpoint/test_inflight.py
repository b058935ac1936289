"""A checkpoint saved in the background (checkpointing.async_save): it is a `tmp_step_<N>` folder,
never loaded, until every rank has written its shards and the driver's thread has written the
manifest and meta.json and renamed it; an error of the background write is the one-line message of
a failed save, naming its step, where the loop next waits; the next save waits for the one in flight.
Real folders, real DCP files; the ranks' "done" is an event the test sets."""

from __future__ import annotations

import errno
import threading
import time
from types import SimpleNamespace

import pytest
import torch
import torch.distributed.checkpoint as dcp

import nemo_grpo.trainer.checkpointing as ckpt
from nemo_grpo.checkpoint.background import BackgroundWriter
from nemo_grpo.checkpoint.inflight import SaveInFlight
from nemo_grpo.checkpoint.manager import CheckpointManager, CheckpointSaveError, read_meta, verify_checkpoint
from nemo_grpo.trainer.state import RunState

COMPAT = {"model_name": "m"}


class Ranks:
    """The policy ranks as the driver sees them: `save` stages and returns, `save_done` says when the
    shards are on disk (the test decides), and may raise a rank's error."""

    def __init__(self):
        self.written = threading.Event()
        self.error: BaseException | None = None
        self.calls: list[tuple[str, str]] = []

    def save(self, path, step=None, background="none"):
        self.calls.append((path, background))
        dcp.save({"w": torch.full((4,), float(step))}, checkpoint_id=f"{path}/policy/weights", no_dist=True)

    def save_done(self):
        if self.error is not None:
            raise self.error
        return self.written.is_set()

    def wait_save(self):
        pass

    def state_bytes(self):
        return 48

    def fingerprint(self):
        return {}


def background_run(manager, monkeypatch, ranks):
    monkeypatch.setattr(ckpt, "compat_fields", lambda cfg, fingerprint: COMPAT)
    monkeypatch.setattr(ckpt, "save_config", lambda cfg, path: open(path, "w").write("x: 1\n"))
    return SimpleNamespace(checkpoints=manager, policy=ranks, tokenizer=SimpleNamespace(save_pretrained=lambda p: p.mkdir()),
                           cfg=SimpleNamespace(checkpointing=SimpleNamespace(async_save="process")), state=RunState(),
                           loader=SimpleNamespace(state_dict=dict), saving=None, last_saved=None)


def test_a_checkpoint_in_flight_is_a_tmp_folder_never_loaded_until_it_is_complete(tmp_path, monkeypatch):
    manager, ranks = CheckpointManager(tmp_path, keep_top_k=1), Ranks()
    run = background_run(manager, monkeypatch, ranks)
    run.state.step = 1
    ranks.written.set()
    ckpt.save_checkpoint(run, {"train/loss": 1.0}, wait=True)
    assert run.saving is None and run.last_saved == tmp_path / "step_1"

    ranks.written.clear()
    run.state.step = 2
    blocked = ckpt.save_checkpoint(run, {"train/loss": 2.0})
    assert ranks.calls[-1] == (str(tmp_path / "tmp_step_2"), "process") and blocked < 5
    time.sleep(0.5)  # the driver's thread asks the ranks, which are still writing
    assert not run.saving.complete and (tmp_path / "tmp_step_2" / "driver_state.pt").is_file()
    assert not (tmp_path / "tmp_step_2" / "meta.json").exists() and not (tmp_path / "step_2").exists()
    assert [step for step, _ in manager.complete()] == [1]
    assert manager.latest_verified() == (tmp_path / "step_1", [])  # a resume now would load step 1

    ranks.written.set()
    assert ckpt.finish_save(run) == tmp_path / "step_2" == run.last_saved
    assert run.saving is None and not (tmp_path / "tmp_step_2").exists()
    assert verify_checkpoint(tmp_path / "step_2") is None and read_meta(tmp_path / "step_2")["step"] == 2
    manifest = (tmp_path / "step_2" / "manifest.json").read_text()
    assert "policy/weights/__0_0.distcp" in manifest and "driver_state.pt" in manifest
    assert [step for step, _ in manager.complete()] == [2]  # pruned (keep_top_k=1) by the driver's thread


def test_the_next_save_waits_for_the_one_in_flight(tmp_path, monkeypatch):
    manager, ranks = CheckpointManager(tmp_path), Ranks()
    run = background_run(manager, monkeypatch, ranks)
    run.state.step = 1
    ckpt.save_checkpoint(run, {})
    seen_when_step_2_began = []
    ranks.save = lambda path, step=None, background="none": (
        seen_when_step_2_began.append(sorted(p.name for p in tmp_path.iterdir())), Ranks.save(ranks, path, step))
    threading.Timer(0.5, ranks.written.set).start()
    run.state.step = 2
    start = time.perf_counter()
    ckpt.save_checkpoint(run, {})
    assert time.perf_counter() - start >= 0.4  # it waited for step 1's shards
    assert seen_when_step_2_began == [["step_1", "tmp_step_2"]]  # step 1 complete before step 2 began
    assert verify_checkpoint(tmp_path / "step_1") is None and run.saving.step == 2
    ckpt.finish_save(run)
    assert [step for step, _ in manager.complete()] == [1, 2]


class RemoteError(RuntimeError):  # how Ray hands back a rank's OSError
    pass


def test_an_error_of_the_background_write_is_the_failed_save_line_naming_its_step_at_the_next_wait(tmp_path,
                                                                                                   monkeypatch):
    manager, ranks = CheckpointManager(tmp_path), Ranks()
    run = background_run(manager, monkeypatch, ranks)
    run.state.step = 1
    ranks.written.set()
    ckpt.save_checkpoint(run, {}, wait=True)
    ranks.written.clear()
    run.state.step = 2
    ckpt.save_checkpoint(run, {})
    shard = tmp_path / "tmp_step_2" / "policy" / "optimizer" / "__0_0.distcp"
    try:
        raise OSError(errno.ENOSPC, "No space left on device", str(shard))
    except OSError as exc:
        try:
            raise RemoteError("rank 0 failed") from exc
        except RemoteError as remote:
            ranks.error = remote
    run.state.step = 3
    with pytest.raises(CheckpointSaveError) as err:
        ckpt.save_checkpoint(run, {})  # the next save is where the loop waits
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot save the checkpoint of step 2 in {tmp_path / 'tmp_step_2'}: no space left on device "
                          f"({shard}); it needs about ")
    assert f"the previous checkpoint {tmp_path / 'step_1'} is intact" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_1"]  # no tmp_step_2, and step 3 never began
    assert run.saving is None and verify_checkpoint(tmp_path / "step_1") is None


def test_a_bug_in_finishing_keeps_its_traceback(tmp_path):
    def finish(tmp, step, meta):
        raise KeyError("a bug")

    saving = SaveInFlight(finish, 1, tmp_path / "tmp_step_1", {}, lambda: True, poll_s=0.01)
    with pytest.raises(KeyError):
        saving.wait()


def test_the_background_writer_writes_the_state_as_it_was_staged_and_reports_its_error_once(tmp_path):
    writer = BackgroundWriter("thread")
    weights = {"w": torch.arange(6, dtype=torch.float32)}
    release = threading.Event()
    writer.start([(weights, str(tmp_path / "a"))], before_each=lambda index, folder: release.wait(10))
    weights["w"].add_(100)  # training goes on while the write waits: the staged copy is what is written
    assert not writer.done()
    release.set()
    writer.wait()
    loaded = {"w": torch.zeros(6)}
    dcp.load(loaded, checkpoint_id=str(tmp_path / "a"), no_dist=True)
    assert torch.equal(loaded["w"], torch.arange(6, dtype=torch.float32))

    def full_disk(index, folder):
        raise OSError(errno.ENOSPC, "No space left on device", folder)

    writer.start([(weights, str(tmp_path / "b"))], before_each=full_disk)
    with pytest.raises(OSError, match="No space left"):
        while not writer.done():
            time.sleep(0.01)
    assert writer.done()  # reported once
    writer.close()
