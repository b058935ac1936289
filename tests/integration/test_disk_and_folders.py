"""A full disk during a save, a stale lock and two runs on one folder, with real processes (issue 16):
what the user sees (exit status, the one line printed last), what is on disk afterwards, and the same
command then finishing with the metrics of the uninterrupted run (tests/fixtures/tiny_run_metrics.jsonl).
The full disk is injected on purpose (NEMO_GRPO_INJECT_FAULT=no_space:<step>: the policy rank's shard
write raises OSError ENOSPC, which reaches the driver through Ray). One scenario shares its runs, as
each run costs about a minute here."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest

from nemo_grpo.checkpoint.manager import folder_size, verify_checkpoint
from tests.integration.test_grpo_run import read_metrics, run_script, straight_overrides, tiny_model  # noqa: F401
from tests.integration.test_preemption import assert_equals_the_uninterrupted_run, last_line, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
FAULT = "NEMO_GRPO_INJECT_FAULT"


def test_a_full_disk_stops_the_run_in_one_line_a_second_run_is_refused_and_the_same_command_finishes(tiny_model,
                                                                                                      tmp_path):
    ckpt, logs, host = tmp_path / "ckpt", tmp_path / "logs", socket.gethostname()
    overrides = straight_overrides(tiny_model)
    # a lock left by a run that was killed: its process no longer exists
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    ckpt.mkdir()
    (ckpt / ".lock").write_text(json.dumps({"host": host, "pid": dead}))

    # 1. the disk fills up while the policy rank writes the shards of step 2
    rc, out = run_script(tiny_model, tmp_path, *overrides, env={FAULT: "no_space:2"})
    assert rc == 2, out  # a CheckpointSaveError is a UserError: `error: ...`, exit status 2
    assert out.count("taking over the stale lock") == 1
    assert f"taking over the stale lock {ckpt / '.lock'} of process {dead} on {host}, which no longer runs" in out
    line = last_line(out)
    assert line.startswith(f"error: cannot save the checkpoint of step 2 in {ckpt / 'tmp_step_2'}: no space left on "
                           f"device ({ckpt / 'tmp_step_2' / 'policy' / 'optimizer'}/__0_0.distcp); it needs about "), line
    assert re.search(r"it needs about \d+ bytes \([\d.]+ MiB\) and \d+ bytes \([\d.]+ \w+\) are free on that "
                     rf"filesystem; the partial folder was removed and the previous checkpoint {ckpt / 'step_1'} is "
                     r"intact, \d+ bytes", line), line
    needed = int(re.search(r"it needs about (\d+) bytes", line).group(1))
    assert needed >= folder_size(ckpt / "step_1")  # at least what the previous checkpoint took
    assert "rerun the same command" in line and out.count("cannot save the checkpoint") == 1
    assert "Traceback" not in out
    assert sorted(p.name for p in ckpt.iterdir()) == ["step_1"]  # no tmp_step_2, no step_2, no lock left
    assert verify_checkpoint(ckpt / "step_1") is None
    # step 2's shards were written in the background (checkpointing.async_save): its row was logged and
    # the error came at the next wait point, step 3's save; the resumed run drops that row, redoes step 2
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1, 2]

    # 2. the same command resumes; while its step 3 runs (held until `release` exists, injected), the same
    #    command started a second time is refused at once, naming the live run
    release = tmp_path / "release"
    resumed = run_script(tiny_model, tmp_path, *overrides, wait=False, env={FAULT: f"stall:3:{release}"})
    try:
        wait_for(ckpt / "step_2" / "meta.json", resumed)  # step 2 done again and saved: step 3 is held
        rc, out = run_script(tiny_model, tmp_path, *overrides)
        assert rc == 2, out
        line = last_line(out)
        assert line.startswith(f"error: logger.log_dir {logs} is in use by another run (host {host}, pid "
                               f"{resumed.pid}, see {logs / '.lock'}); wait for it to end"), line
        assert "Traceback" not in out and "starting a new run" not in out and "resumed from" not in out
        assert resumed.poll() is None  # the live run is untouched
    finally:
        release.touch()
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert f"resumed from {ckpt / 'step_1'} (step 1)" in out and "stale lock" not in out
    assert_equals_the_uninterrupted_run(tmp_path)
    assert not (ckpt / ".lock").exists() and not (logs / ".lock").exists()


def test_a_save_estimated_not_to_fit_is_refused_before_writing_and_a_full_disk_in_the_driver_keeps_the_previous(
        tiny_model, tmp_path):
    ckpt = tmp_path / "ckpt"
    overrides = straight_overrides(tiny_model)
    # 1. the filesystem reports 4096 free bytes when step 2's save is estimated (a disk nearly full,
    #    simulated: a test cannot fill a real disk without root): refused before anything is written
    rc, out = run_script(tiny_model, tmp_path, *overrides, env={FAULT: "free_space:2:4096"})
    assert rc == 2, out
    line = last_line(out)
    assert line.startswith(f"error: refusing to save the checkpoint of step 2 in {ckpt / 'step_2'}: it needs about "), line
    assert re.search(r"it needs about \d+ bytes \([\d.]+ MiB\) and only 4096 bytes \([\d.]+ \w+\) are free on that "
                     rf"filesystem; nothing was written and the previous checkpoint {ckpt / 'step_1'} is intact", line), line
    assert "rerun the same command" in line and "Traceback" not in out
    assert sorted(p.name for p in ckpt.iterdir()) == ["step_1"]  # no tmp_step_2, no lock left
    assert verify_checkpoint(ckpt / "step_1") is None
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1]  # step 2 is not logged: the resumed run redoes it

    # 2. the same command resumes from step_1; the disk fills up while the driver writes its own state of
    #    step 3, while the policy rank writes its shards in the background
    rc, out = run_script(tiny_model, tmp_path, *overrides, env={FAULT: "no_space_driver:3"})
    assert rc == 2, out
    assert f"resumed from {ckpt / 'step_1'} (step 1)" in out
    line = last_line(out)
    assert line.startswith(f"error: cannot save the checkpoint of step 3 in {ckpt / 'tmp_step_3'}: no space left on "
                           f"device ({ckpt / 'tmp_step_3' / 'driver_state.pt'}); it needs about "), line
    assert f"the partial folder was removed and the previous checkpoint {ckpt / 'step_2'} is intact" in line, line
    assert "Traceback" not in out
    assert not (ckpt / "tmp_step_3").exists() and not (ckpt / "step_3").exists()
    assert verify_checkpoint(ckpt / "step_2") is None

    # 3. the same command finishes: the metrics of the uninterrupted run
    rc, out = run_script(tiny_model, tmp_path, *overrides)
    assert rc == 0, out
    assert f"resumed from {ckpt / 'step_2'} (step 2)" in out
    assert_equals_the_uninterrupted_run(tmp_path)
