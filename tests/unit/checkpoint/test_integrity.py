"""Damaged checkpoints and failing saves, as the user meets them: which file is named, where the run
resumes, what is left on disk."""

from __future__ import annotations

import errno
import json
import logging
import zipfile
from types import SimpleNamespace

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import nemo_grpo.trainer.checkpointing as ckpt
from nemo_grpo.checkpoint.export import find_step_dir
from nemo_grpo.checkpoint.hf_files import ExportError
from nemo_grpo.checkpoint.manager import (
    CheckpointDamaged,
    CheckpointManager,
    CheckpointSaveError,
    estimate_checkpoint_bytes,
    folder_size,
    read_meta,
    sha256_file,
    verify_checkpoint,
)
from nemo_grpo.trainer.state import RunState
from nemo_grpo.utils.errors import UserError

COMPAT = {"model_name": "tiny"}


def write_step(manager: CheckpointManager, step: int, *, manifest: bool = True):
    """A checkpoint like the trainer's: real DCP shards of a tiny tensor dict and a driver state."""
    tmp = manager.begin(step)
    dcp.save({"w": torch.full((64,), float(step)), "b": torch.arange(8.0)},
             checkpoint_id=str(tmp / "policy" / "weights"), no_dist=True)
    torch.save({"state": {"step": step, "consumed_samples": 4 * step}, "loader": {"pos": step},
                "torch_rng": torch.get_rng_state()}, tmp / "driver_state.pt")
    meta = {"step": step, "metrics": {"train/loss": float(step)}, "compat": COMPAT}
    if manifest:
        return manager.finish(tmp, step, meta)
    (tmp / "meta.json").write_text(json.dumps(meta))  # written before manifests existed
    final = manager.root / f"step_{step}"
    tmp.rename(final)
    return final


def shard(step_dir):
    return next((step_dir / "policy" / "weights").glob("*.distcp"))


def test_the_manifest_lists_every_file_with_size_and_sha256_and_meta_json_comes_after_it(tmp_path):
    step = write_step(CheckpointManager(tmp_path), 1)
    files = json.loads((step / "manifest.json").read_text())["files"]
    assert "driver_state.pt" in files and "policy/weights/.metadata" in files
    assert "meta.json" not in files and "manifest.json" not in files
    s = shard(step)
    entry = files[s.relative_to(step).as_posix()]
    assert entry == {"size": s.stat().st_size, "sha256": sha256_file(s)}
    assert verify_checkpoint(step) is None


@pytest.mark.parametrize("damage, named", [
    ("truncate_shard", "policy/weights/__0_0.distcp: "),
    ("flip_byte", "checksum differs from the manifest"),
    ("delete_metadata", "policy/weights/.metadata: missing"),
    ("garbage_meta", "meta.json: unreadable"),
    ("delete_driver_state", "driver_state.pt: missing"),
])
def test_each_kind_of_damage_is_named(tmp_path, damage, named):
    step = write_step(CheckpointManager(tmp_path), 1)
    s = shard(step)
    if damage == "truncate_shard":
        s.write_bytes(s.read_bytes()[:10])
    elif damage == "flip_byte":
        data = bytearray(s.read_bytes())
        data[-1] ^= 0xFF
        s.write_bytes(bytes(data))
    elif damage == "delete_metadata":
        (step / "policy" / "weights" / ".metadata").unlink()
    elif damage == "garbage_meta":
        (step / "meta.json").write_text("{not json")
    else:
        (step / "driver_state.pt").unlink()
    problem = verify_checkpoint(step)
    assert problem is not None and named.split(":")[0] in problem and named.split(": ")[-1] in problem
    if damage == "truncate_shard":
        assert problem == f"{s.relative_to(step).as_posix()}: 10 bytes, the manifest says {problem.split()[-1]}"


def test_old_checkpoints_without_manifest_are_accepted_but_still_checked(tmp_path):
    m = CheckpointManager(tmp_path)
    step = write_step(m, 1, manifest=False)
    assert not (step / "manifest.json").exists() and verify_checkpoint(step) is None
    (step / "policy" / "weights" / ".metadata").unlink()
    assert verify_checkpoint(step) == "policy/weights/.metadata: missing"
    (step / "meta.json").write_text("[1, 2")
    assert verify_checkpoint(step).startswith("meta.json: unreadable")


@pytest.mark.parametrize("damage, named", [
    ("truncate_driver_state", "driver_state.pt: not a complete torch file"),
    ("flip_driver_state", "driver_state.pt: "),
    ("delete_driver_state", "driver_state.pt: missing"),
    ("truncate_extra_state", "policy/extra_state_rank1.pt: not a complete torch file"),
    ("truncate_shard", "policy/weights/__0_0.distcp: 3000 bytes, its .metadata says at least "),
    ("delete_shard", "policy/weights/__0_0.distcp: missing"),
    ("garbage_metadata", "policy/weights/.metadata: unreadable"),
])
def test_old_checkpoints_without_manifest_name_what_their_own_files_show_damaged(tmp_path, damage, named):
    """Before manifests a truncated driver state or shard was found only by the load that failed on it."""
    step = write_step(CheckpointManager(tmp_path), 1, manifest=False)
    extra = step / "policy" / "extra_state_rank1.pt"
    torch.save({"scheduler": {"last_epoch": 1}, "rng": torch.get_rng_state()}, extra)
    assert verify_checkpoint(step) is None
    driver, s = step / "driver_state.pt", shard(step)
    if damage == "truncate_driver_state":
        driver.write_bytes(driver.read_bytes()[:-100])
    elif damage == "flip_driver_state":  # a flipped byte inside a stored part: its CRC no longer matches
        with zipfile.ZipFile(driver) as archive:  # the RNG state's storage, the largest part
            part = max(archive.infolist(), key=lambda i: i.file_size)
        data = bytearray(driver.read_bytes())
        start = part.header_offset + 30 + len(part.filename.encode()) + int.from_bytes(
            data[part.header_offset + 28:part.header_offset + 30], "little")  # local header, then name and extra
        data[start + part.file_size // 2] ^= 0xFF
        driver.write_bytes(bytes(data))
    elif damage == "delete_driver_state":
        driver.unlink()
    elif damage == "truncate_extra_state":
        extra.write_bytes(extra.read_bytes()[:50])
    elif damage == "truncate_shard":
        s.write_bytes(s.read_bytes()[:3000])
    elif damage == "delete_shard":
        s.unlink()
        (step / "policy" / "weights" / "other.distcp").write_bytes(b"")  # still a DCP folder with a shard
    else:
        (step / "policy" / "weights" / ".metadata").write_bytes(b"\x80\x04garbage")
    problem = verify_checkpoint(step)
    assert problem is not None and problem.startswith(named), problem
    if damage == "flip_driver_state":  # torch.load checks no CRC: it would resume from the flipped state
        torch.load(driver, weights_only=False)
        return
    # what the check spares the user: the load itself fails on it, half-way and with a traceback
    with pytest.raises((Exception, CheckpointException)):  # DCP's own error is a BaseException
        if "driver_state" in damage:
            torch.load(driver, weights_only=False)
        elif "extra_state" in damage:
            torch.load(extra, weights_only=False)
        else:
            dcp.load({"w": torch.empty(64), "b": torch.empty(8)}, checkpoint_id=str(step / "policy" / "weights"),
                     no_dist=True)


class FakePolicy:
    def __init__(self):
        self.loaded = []

    def fingerprint(self):
        return {}

    def load(self, path):
        self.loaded.append(path)


def fake_run(manager):
    loader = SimpleNamespace(position=None)
    loader.load_state_dict = lambda s: setattr(loader, "position", s["pos"])
    return SimpleNamespace(checkpoints=manager, policy=FakePolicy(), cfg=SimpleNamespace(), state=RunState(),
                           loader=loader, resumed_from=None, last_saved=None)


@pytest.fixture
def plain_compat(monkeypatch):
    monkeypatch.setattr(ckpt, "compat_fields", lambda cfg, fingerprint: COMPAT)


def test_resume_falls_back_to_the_newest_checkpoint_that_verifies_with_one_warning(tmp_path, plain_compat, caplog):
    m = CheckpointManager(tmp_path)
    for step in (1, 2, 3):
        write_step(m, step)
    s = shard(tmp_path / "step_3")
    s.write_bytes(s.read_bytes()[:-5])  # a truncated shard in the newest
    run = fake_run(m)
    with caplog.at_level(logging.WARNING):
        ckpt.resume_or_start(run)
    assert run.policy.loaded == [str(tmp_path / "step_2")] and run.state.step == 2 and run.loader.position == 2
    assert run.resumed_from == tmp_path / "step_2"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert f"{tmp_path / 'step_3'} is damaged ({s.relative_to(tmp_path / 'step_3').as_posix()}: " in warnings[0]
    assert f"resuming from {tmp_path / 'step_2'}" in warnings[0] and "not deleted" in warnings[0]
    assert (tmp_path / "step_3").is_dir()  # left in place


def test_the_row_restored_on_resume_comes_from_the_checkpoint_resumed_not_a_damaged_newer_one(tmp_path, plain_compat):
    m = CheckpointManager(tmp_path)
    write_step(m, 1)
    write_step(m, 2)
    (tmp_path / "step_2" / "meta.json").write_text("garbage")
    run = fake_run(m)
    ckpt.resume_or_start(run)
    restored = []
    ckpt.restore_checkpoint_row(run, SimpleNamespace(history=[], restore=restored.append))
    assert restored == [{"train/loss": 1.0, "step": 1}]


def test_no_checkpoint_that_verifies_is_a_user_error_naming_each_damaged_file(tmp_path, plain_compat):
    m = CheckpointManager(tmp_path)
    write_step(m, 1)
    write_step(m, 2)
    (tmp_path / "step_1" / "policy" / "weights" / ".metadata").unlink()
    (tmp_path / "step_2" / "meta.json").write_text("")
    run = fake_run(m)
    with pytest.raises(CheckpointDamaged) as err:
        ckpt.resume_or_start(run)
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg
    assert "step_2: meta.json: unreadable" in msg and "step_1: policy/weights/.metadata: missing" in msg
    assert "nothing was deleted" in msg and "checkpoint_dir" in msg
    assert (tmp_path / "step_1").is_dir() and (tmp_path / "step_2").is_dir() and run.policy.loaded == []


def test_a_save_after_a_fallback_neither_prunes_the_new_checkpoint_nor_the_damaged_one(tmp_path):
    m = CheckpointManager(tmp_path, keep_top_k=1)
    for step in (1, 2, 3):
        write_step(m, step)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_3"]
    (tmp_path / "step_3" / "meta.json").write_text("garbage")  # damaged: a run would start over ...
    write_step(m, 2)  # ... and save step 2 while the damaged step_3 is still there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_2", "step_3"]


def test_export_refuses_a_damaged_checkpoint_and_names_the_one_to_export(tmp_path):
    m = CheckpointManager(tmp_path)
    write_step(m, 1)
    write_step(m, 2)
    s = shard(tmp_path / "step_2")
    s.write_bytes(s.read_bytes()[:7])
    for target in (tmp_path, tmp_path / "step_2"):
        with pytest.raises(ExportError, match=r"refusing to export .*step_2: the checkpoint is damaged "
                                              r"\(policy/weights/.*: 7 bytes, .*export .*step_1 instead"):
            find_step_dir(target)
    assert find_step_dir(tmp_path / "step_1") == tmp_path / "step_1"


# --- a save that fails on the filesystem ------------------------------------------------------


def saving_run(manager, step, monkeypatch, *, policy_save=None, tokenizer_save=None):
    monkeypatch.setattr(ckpt, "compat_fields", lambda cfg, fingerprint: COMPAT)
    monkeypatch.setattr(ckpt, "save_config", lambda cfg, path: open(path, "w").write("x: 1\n"))

    def default_policy_save(path, step=None, background="none"):
        dcp.save({"w": torch.zeros(4)}, checkpoint_id=f"{path}/policy/weights", no_dist=True)

    policy = SimpleNamespace(save=policy_save or default_policy_save, fingerprint=dict, state_bytes=lambda: 4 * 4 * 3)
    tokenizer = SimpleNamespace(save_pretrained=tokenizer_save or (lambda p: p.mkdir()))
    state = RunState()
    state.step = step
    cfg = SimpleNamespace(checkpointing=SimpleNamespace(async_save="none"))
    return SimpleNamespace(checkpoints=manager, policy=policy, tokenizer=tokenizer, cfg=cfg, state=state,
                           loader=SimpleNamespace(state_dict=dict), saving=None, last_saved=None)


def enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "tokenizer/tokenizer.json")


def test_a_full_disk_removes_the_partial_folder_and_says_so_in_one_line(tmp_path, monkeypatch):
    m = CheckpointManager(tmp_path)
    ckpt.save_checkpoint(saving_run(m, 1, monkeypatch), {"train/loss": 1.0})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(CheckpointSaveError) as err:
        ckpt.save_checkpoint(saving_run(m, 2, monkeypatch, tokenizer_save=enospc), {})
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg
    assert f"cannot save the checkpoint of step 2 in {tmp_path / 'tmp_step_2'}: no space left on device" in msg
    needed = estimate_checkpoint_bytes(4 * 4 * 3, folder_size(tmp_path / "step_1"))
    assert f"it needs about {needed} bytes (" in msg and "free on that filesystem" in msg
    assert f"{tmp_path / 'step_1'} is intact" in msg
    assert not (tmp_path / "tmp_step_2").exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert verify_checkpoint(tmp_path / "step_1") is None and read_meta(m.latest())["step"] == 1


def test_a_failure_on_a_policy_rank_is_found_behind_the_remote_error(tmp_path, monkeypatch):
    class RemoteError(RuntimeError):  # how Ray / DCP hand back a rank's OSError
        pass

    def rank_save(path, step, background="none"):
        try:
            raise PermissionError(errno.EACCES, "Permission denied", f"{path}/policy/weights/__0_0.distcp")
        except OSError as exc:
            raise RemoteError("rank 0 failed") from exc

    m = CheckpointManager(tmp_path)
    with pytest.raises(CheckpointSaveError, match=r"permission denied \(.*__0_0.distcp\).*there is no earlier checkpoint"):
        ckpt.save_checkpoint(saving_run(m, 1, monkeypatch, policy_save=rank_save), {})
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_finishing_or_beginning_a_save_is_the_same_message(tmp_path, monkeypatch):
    import nemo_grpo.checkpoint.manager as manager_module

    m = CheckpointManager(tmp_path)
    monkeypatch.setattr(manager_module, "write_manifest", enospc)
    tmp = m.begin(1)
    with pytest.raises(CheckpointSaveError, match="no space left on device"):
        m.finish(tmp, 1, {"step": 1})
    assert not tmp.exists() and m.latest() is None
    monkeypatch.setattr(manager_module.Path, "mkdir", enospc)
    with pytest.raises(CheckpointSaveError, match="step 2 .*no space left on device"):
        m.begin(2)


def test_other_errors_during_a_save_keep_their_traceback(tmp_path, monkeypatch):
    def bug(path, step, background="none"):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        ckpt.save_checkpoint(saving_run(CheckpointManager(tmp_path), 1, monkeypatch, policy_save=bug), {})


def test_the_estimate_is_the_model_and_optimizer_state_or_the_previous_checkpoint_plus_a_margin():
    from nemo_grpo.checkpoint.manager import SAVE_EXTRA_BYTES, SAVE_MARGIN

    state = 3 * (100 << 20)  # 100 MiB of fp32 parameters and AdamW's two moments
    assert estimate_checkpoint_bytes(state, None) == int((state + SAVE_EXTRA_BYTES) * (1 + SAVE_MARGIN))
    assert estimate_checkpoint_bytes(state, 10) == estimate_checkpoint_bytes(state, None)  # the larger figure
    assert estimate_checkpoint_bytes(state, 400 << 20) == int((400 << 20) * (1 + SAVE_MARGIN))
    assert estimate_checkpoint_bytes(None, None) == int(SAVE_EXTRA_BYTES * (1 + SAVE_MARGIN))


@pytest.mark.parametrize("short_by", [1, 10 << 20])
def test_a_save_that_clearly_does_not_fit_is_refused_before_anything_is_written(tmp_path, monkeypatch, short_by):
    """A real checkpoint folder; only the free space is made up (disk_usage), as on a nearly full disk."""
    import nemo_grpo.checkpoint.manager as manager_module

    m = CheckpointManager(tmp_path)
    ckpt.save_checkpoint(saving_run(m, 1, monkeypatch), {"train/loss": 1.0})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    needed = estimate_checkpoint_bytes(4 * 4 * 3, folder_size(tmp_path / "step_1"))
    free = needed - short_by
    monkeypatch.setattr(manager_module.shutil, "disk_usage", lambda path: SimpleNamespace(total=2 * needed, used=0, free=free))
    written = []
    with pytest.raises(CheckpointSaveError) as err:
        ckpt.save_checkpoint(saving_run(m, 2, monkeypatch, policy_save=lambda path, step, background: written.append(path)), {})
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg
    assert msg.startswith(f"refusing to save the checkpoint of step 2 in {tmp_path / 'step_2'}: it needs about "
                          f"{needed} bytes (") and f"only {free} bytes (" in msg and "are free on that filesystem" in msg
    assert "nothing was written" in msg and f"{tmp_path / 'step_1'} is intact" in msg and "rerun the same command" in msg
    assert written == [] and sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert verify_checkpoint(tmp_path / "step_1") is None
    # with exactly the bytes needed free, the save goes ahead
    monkeypatch.setattr(manager_module.shutil, "disk_usage", lambda path: SimpleNamespace(total=2 * needed, used=0, free=needed))
    ckpt.save_checkpoint(saving_run(m, 2, monkeypatch), {"train/loss": 2.0})
    assert verify_checkpoint(tmp_path / "step_2") is None


def test_the_first_save_is_estimated_from_the_model_and_optimizer_state(tmp_path, monkeypatch):
    import nemo_grpo.checkpoint.manager as manager_module

    m = CheckpointManager(tmp_path / "ckpt")
    monkeypatch.setattr(manager_module.shutil, "disk_usage", lambda path: SimpleNamespace(total=1 << 40, used=0, free=50 << 20))
    run = saving_run(m, 1, monkeypatch)
    run.policy.state_bytes = lambda: 3 * (20 << 20)  # 20 MiB of parameters: with the moments and extras > 50 MiB
    with pytest.raises(CheckpointSaveError, match=rf"step 1 in {tmp_path / 'ckpt' / 'step_1'}: it needs about "
                                                  rf"{estimate_checkpoint_bytes(3 * (20 << 20), None)} bytes \(83\.6 MiB\) "
                                                  r"and only 52428800 bytes \(50 MiB\) are free.*there is no earlier checkpoint"):
        ckpt.save_checkpoint(run, {})
    assert not (tmp_path / "ckpt").exists() or list((tmp_path / "ckpt").iterdir()) == []
