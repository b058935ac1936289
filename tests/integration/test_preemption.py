"""Preemption and dead workers, with real processes and real signals (issue 16): what the user sees
(exit status, the one line), what is on disk, no process of the run left, and the same command
resuming to the metrics of the uninterrupted run (tests/fixtures/tiny_run_metrics.jsonl)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from nemo_grpo.checkpoint.manager import verify_checkpoint

from tests.integration.test_grpo_run import FIXTURE, comparable, read_metrics, run_script, tiny_model  # noqa: F401
from tests.integration.test_grpo_run import straight_overrides as local_overrides

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def straight_overrides(model: Path) -> list[str]:
    """The 4-step run of test_grpo_run.py under Ray (every rank an actor, Ray's daemons): the metrics
    must still equal the fixture, recorded with the local launcher."""
    return [*local_overrides(model), "cluster.launcher=ray"]


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every process below `pid` (Ray's daemons and workers, the graders)."""
    parents, cmds = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                cmds[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, p in parents.items():
            if p == parent and child not in found:
                found[child] = cmds[child]
                todo.append(child)
    return found


def alive(pids) -> list[int]:
    left = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.append(pid)
    return left


def wait_for(path: Path, proc, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists(), proc.stdout.read() if proc.poll() is not None else "timed out"


def read_until(proc, text: str, timeout: float = 600) -> str:
    """The run's output up to and including the first line containing `text` (the run goes on)."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if text in line or not line:
            break
    assert text in lines[-1], "".join(lines)
    return "".join(lines)


def last_line(out: str) -> str:
    return out.strip().splitlines()[-1]


def assert_equals_the_uninterrupted_run(run_dir: Path, *, besides: tuple[str, ...] = (), fixture: Path = FIXTURE) -> None:
    """The run's metrics are the fixture's (floats to 1e-6 relative), but for wall-clock figures and the
    keys `besides` (figures of the fault itself, checked by the caller)."""
    expected = [json.loads(line) for line in fixture.read_text().splitlines()]
    rows = [{k: v for k, v in comparable(r).items() if k not in besides} for r in read_metrics(run_dir)]
    assert [r["step"] for r in rows] == [r["step"] for r in expected]
    for got, want in zip(rows, expected):
        assert sorted(got) == sorted(want), want["step"]
        for key, value in want.items():
            assert got[key] == (pytest.approx(value, rel=1e-6, abs=1e-9) if isinstance(value, float) else value), \
                (want["step"], key)


def held_in_step_2(tiny_model: Path, tmp_path: Path):
    """A Ray-launcher run held in step 2 until the returned `release` file exists (injected: a tiny
    step could otherwise end before a signal arrives, and step 1's checkpoint, written in the
    background, is complete only while step 2 runs); with its processes, Ray's daemons among them."""
    release = tmp_path / "release"
    proc = run_script(tiny_model, tmp_path, *straight_overrides(tiny_model), wait=False,
                      env={"NEMO_GRPO_INJECT_FAULT": f"stall:2:{release}"})
    wait_for(tmp_path / "ckpt" / "step_1" / "meta.json", proc)  # step 2 runs now
    started = descendants(proc.pid)
    assert any("raylet" in c for c in started.values()) and any("gcs_server" in c for c in started.values())
    return proc, release, started


def test_sigterm_to_the_process_group_or_the_driver_saves_the_step_exits_143_and_the_same_command_resumes(
        tiny_model, tmp_path):
    # 1. SIGTERM to the whole process group, as a scheduler sends it, during step 2 (held until `release`
    #    exists, injected: a tiny step could otherwise end before the signal arrives, and step 1's
    #    checkpoint, written in the background, is complete only while step 2 runs). Ray's daemons run in
    #    a process group of their own, so the step finishes on them and is saved, and the run ends in
    #    seconds, not after Ray's minute of waiting for a GCS that the signal had stopped.
    proc, release, started = held_in_step_2(tiny_model, tmp_path)
    signalled = time.time()
    os.killpg(proc.pid, signal.SIGTERM)  # the driver leads the group (run_script starts a session)
    time.sleep(1)
    release.touch()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, out
    # in seconds: the step (held 1 s after the signal), its save, and stopping Ray
    step_2 = read_metrics(tmp_path)[-1]
    assert time.time() - signalled < step_2["timing/step_s"] + step_2["timing/checkpoint_s"] + 20, out
    line = last_line(out)
    assert line.startswith("stopped by SIGTERM: step 2 finished and was checkpointed in ") and "run the same command" in line
    assert "Traceback" not in out and out.count("stopped by SIGTERM") == 1 and "GCS" not in out
    assert (tmp_path / "ckpt" / "step_2" / "meta.json").is_file() and not (tmp_path / "ckpt" / "step_3").exists()
    time.sleep(3)
    assert alive(started) == [], {p: started[p] for p in alive(started)}  # Ray, its workers, the graders: gone
    # 2. the same command; SIGTERM to the driver alone during step 3 (its first step, slowed by 10 s)
    proc = run_script(tiny_model, tmp_path, *straight_overrides(tiny_model), wait=False,
                      env={"NEMO_GRPO_INJECT_FAULT": "stall:3:10"})
    head = read_until(proc, "resumed from")  # step 3 starts right after (no validation before it)
    time.sleep(3)
    started = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    out = head + out
    assert proc.returncode == 143, out
    line = last_line(out)
    assert line.startswith("stopped by SIGTERM: step 3 finished and was checkpointed in ") and "run the same command" in line
    assert "Traceback" not in out and out.count("stopped by SIGTERM") == 1
    assert (tmp_path / "ckpt" / "step_3" / "meta.json").is_file() and not (tmp_path / "ckpt" / "step_4").exists()
    time.sleep(3)
    assert alive(started) == [], {p: started[p] for p in alive(started)}
    # 3. the same command finishes the run: the metrics of the uninterrupted one
    rc, out = run_script(tiny_model, tmp_path, *straight_overrides(tiny_model))
    assert rc == 0, out
    assert "resumed from" in out and "step_3" in out
    assert_equals_the_uninterrupted_run(tmp_path)


def test_sigterm_to_every_process_one_by_one_abandons_the_step_at_once_and_the_same_command_resumes(
        tiny_model, tmp_path):
    # A scheduler that signals each process of the job it finds (not the process group): the Ray the
    # run started dies with the signal (GCS, raylet, the policy rank), so step 2 cannot finish. The
    # driver watches Ray's daemons once signalled and abandons the step as soon as one has exited,
    # saying why, with 143 (without the watch it found out only at its next call to the dead policy
    # rank). Step 2 is held until `release` exists, injected.
    proc, release, started = held_in_step_2(tiny_model, tmp_path)
    signalled = time.time()
    for pid in sorted([proc.pid, *started]):  # as `pkill -TERM -s <session>` does: by pid, the driver first
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    time.sleep(1)
    release.touch()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, out
    assert time.time() - signalled < 30, out
    line = last_line(out)
    assert line.startswith("stopped by SIGTERM: step 2 abandoned (Ray's ") and "ended with the signal too" in line, line
    assert f"the last checkpoint, {tmp_path / 'ckpt' / 'step_1'}, is the resume point" in line, line
    assert "Traceback" not in out and out.count("stopped by SIGTERM") == 1 and "GCS" not in out
    assert verify_checkpoint(tmp_path / "ckpt" / "step_1") is None and not (tmp_path / "ckpt" / "step_2").exists()
    time.sleep(3)
    assert alive(started) == [], {p: started[p] for p in alive(started)}  # Ray, its workers, the graders: gone
    rc, out = run_script(tiny_model, tmp_path, *straight_overrides(tiny_model))
    assert rc == 0, out
    assert "resumed from" in out and "step_1" in out
    assert_equals_the_uninterrupted_run(tmp_path)


def test_ctrl_c_twice_abandons_a_dead_policy_rank_is_one_line_and_a_new_lr_takes_effect(tiny_model, tmp_path):
    # Ctrl-C twice, to the whole process group as a terminal sends it: the step is abandoned at once
    # (step 2 hangs, injected: a tiny step can otherwise finish between the two signals)
    proc = run_script(tiny_model, tmp_path, *straight_overrides(tiny_model), wait=False,
                      env={"NEMO_GRPO_INJECT_FAULT": "stall:2"})
    wait_for(tmp_path / "ckpt" / "step_1" / "meta.json", proc)
    started = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    line = last_line(out)
    assert line.startswith("stopped by SIGINT: ") and "the last checkpoint" in line and "step_1" in line, line
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    time.sleep(3)
    assert alive(started) == [], {p: started[p] for p in alive(started)}
    # kill -9 of the policy rank mid-step in the resumed run: one line naming it and the step (step 3 is
    # held until `release` exists, injected: step 2's checkpoint, written in the background, is complete
    # only while step 3 runs)
    release = tmp_path / "release"
    proc = run_script(tiny_model, tmp_path, *straight_overrides(tiny_model), wait=False,
                      env={"NEMO_GRPO_INJECT_FAULT": f"stall:3:{release}"})
    wait_for(tmp_path / "ckpt" / "step_2" / "meta.json", proc)  # step 3 runs now
    ranks = [p for p, c in descendants(proc.pid).items() if c.startswith("ray::PolicyWorker")]
    assert ranks, descendants(proc.pid)
    killed_at = time.time()
    os.kill(ranks[0], signal.SIGKILL)
    release.touch()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert time.time() - killed_at < 60
    line = last_line(out)
    assert line.startswith("the policy rank 0 died during step 3; the last checkpoint, ") and "step_2" in line, line
    assert "Traceback" not in out
    # the same command, with a new learning rate: applied from step 3 on, said once, recorded in the config
    rc, out = run_script(tiny_model, tmp_path, *straight_overrides(tiny_model), "policy.optimizer.lr=2e-3")
    assert rc == 0, out
    assert "policy.optimizer.lr changed since the checkpoint: 0.001 -> 0.002" in out
    rows = {r["step"]: r for r in read_metrics(tmp_path)}
    assert [rows[s]["train/lr"] for s in (1, 2, 3, 4)] == [1e-3, 1e-3, 2e-3, 2e-3]
    assert "lr: 0.002" in (tmp_path / "logs" / "config.yaml").read_text()


def grader_workers(driver: int) -> list[int]:
    """The run's grader processes: the children of the grader pool's forkserver (a child of the driver)."""
    forked = [p for p, c in descendants(driver).items() if "multiprocessing.forkserver" in c]
    workers = {w for p in forked for w in descendants(p)}
    return sorted(workers)


def engine_graded_overrides(tiny_model: Path, tmp_path: Path) -> list[str]:
    """Most of the tiny run's answers ("1", "12", ...) are decided without the grading engine. The same
    problems with golds only the engine decides (|{-1}| is 1, |{-2}| is 2; every answer the tiny model
    can give is graded alike) send every answer to the grader processes and leave the run's metrics
    those of the fixture."""
    problems = tmp_path / "problems.jsonl"
    rows = [json.loads(line) for line in (tiny_model / "problems.jsonl").read_text().splitlines()]
    problems.write_text("".join(json.dumps({**r, "answer": f"|{{-{r['answer']}}}|"}) + "\n" for r in rows))
    overrides = [o.replace(str(tiny_model / "problems.jsonl"), str(problems)) for o in straight_overrides(tiny_model)]
    return [*overrides, f"data.train.path={problems}", "reward.timeout_s=60"]


def test_a_grader_worker_killed_while_idle_is_replaced_counted_and_the_run_ends_as_the_uninterrupted_one(
        tiny_model, tmp_path):
    release = tmp_path / "release"  # step 2 is held at its start until this file exists (injected)
    proc = run_script(tiny_model, tmp_path, *engine_graded_overrides(tiny_model, tmp_path),
                      wait=False, env={"NEMO_GRPO_INJECT_FAULT": f"stall:2:{release}"})
    try:
        wait_for(tmp_path / "ckpt" / "step_1" / "meta.json", proc)  # graded steps 0 and 1; idle until step 2 grades
        graders = grader_workers(proc.pid)
        assert len(graders) == 1, descendants(proc.pid)  # reward.num_workers: 1 in tiny.yaml
        os.kill(graders[0], signal.SIGKILL)
        deadline = time.time() + 30
        while alive(graders) and time.time() < deadline:
            time.sleep(0.05)
        assert alive(graders) == []
    finally:
        release.touch()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    rows = read_metrics(tmp_path)
    # replaced when step 2 graded (the pool found the dead pipe and gave the task to the new worker),
    # counted in that step's row; no answer failed
    assert [r.get("reward/grader_restarts") for r in rows] == [None, None, 1.0, None, None]
    assert all(r.get("reward/grader_failures", 0.0) == 0.0 for r in rows)
    assert_equals_the_uninterrupted_run(tmp_path, besides=("reward/grader_restarts",))


def test_a_grader_worker_killed_while_busy_is_replaced_its_answer_graded_again_and_the_run_ends_as_the_uninterrupted_one(
        tiny_model, tmp_path):
    # Step 3 (the one step of the tiny run that trains) grades its answers with the first task held
    # in the grader process for 40 s (injected: slow_grade), which announces it by creating `busy`.
    busy = tmp_path / "busy"
    proc = run_script(tiny_model, tmp_path, *engine_graded_overrides(tiny_model, tmp_path), wait=False,
                      env={"NEMO_GRPO_INJECT_FAULT": f"slow_grade:3:40:{busy}"})
    wait_for(busy, proc)
    graders = grader_workers(proc.pid)
    assert len(graders) == 1, descendants(proc.pid)  # reward.num_workers: 1 in tiny.yaml
    os.kill(graders[0], signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert out.count(f"a grader process (pid {graders[0]}) died while grading (exit status -9); replaced it and "
                     "gave its answer to the new process") == 1
    assert (tmp_path / "ckpt" / "step_4" / "meta.json").is_file()
    rows = read_metrics(tmp_path)
    # the replacement counted in step 3's row; its answer graded by the new process like any other, so
    # no grader failure and every other metric the uninterrupted run's (step 3 trains on those rewards)
    assert [r.get("reward/grader_restarts") for r in rows] == [None, None, None, 1.0, None]
    assert rows[3]["timing/reward_s"] < 40  # the replacement graded it at once, nobody waited for the slow task
    assert all(r.get("reward/grader_failures", 0.0) == 0.0 for r in rows)
    assert_equals_the_uninterrupted_run(tmp_path, besides=("reward/grader_restarts",))
