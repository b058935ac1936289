from __future__ import annotations

import threading
import time

from nemo_grpo.rewards.config import RewardConfig
from nemo_grpo.rewards.math_reward import grade_batch, summarize


def test_timeout_kills_and_replaces_the_worker(grader_pool):
    before = dict(grader_pool.stats)
    pids = {w.proc.pid for w in grader_pool._workers}
    t0 = time.perf_counter()
    out = grader_pool.run("debug_sleep", [(30,), (0,)], timeout_s=0.5)
    assert time.perf_counter() - t0 < 5
    assert [o.status for o in out] == ["timeout", "ok"]
    assert 0.5 <= out[0].elapsed_s < 2
    assert grader_pool.stats["timeouts"] == before["timeouts"] + 1
    assert grader_pool.stats["worker_restarts"] == before["worker_restarts"] + 1
    assert {w.proc.pid for w in grader_pool._workers} != pids
    # the replacement works
    assert [o.value for o in grader_pool.run("debug_sleep", [(0,)] * 4)] == ["slept"] * 4


def test_a_task_that_kills_its_worker_twice_is_an_error_not_a_hang(grader_pool):
    """An input that crashes the grader: given once more to the replacement, which dies too; then
    it is an error (counted), and the pool still works."""
    before = dict(grader_pool.stats)
    out = grader_pool.run("debug_crash", [(3,)])
    assert out[0].status == "error" and "worker died twice (exit 3)" in out[0].value
    assert grader_pool.stats["retries"] == before["retries"] + 1
    assert grader_pool.stats["errors"] == before["errors"] + 1
    assert grader_pool.stats["worker_restarts"] == before["worker_restarts"] + 2
    assert grader_pool.run("debug_sleep", [(0,)])[0].status == "ok"


def test_a_worker_killed_while_busy_is_replaced_and_its_task_graded_by_the_replacement(grader_pool, tmp_path,
                                                                                       monkeypatch, caplog):
    """A grader process killed mid-task (OOM killer, an operator's kill -9): its task is given to the
    replacement and gets its real result, not an error; the kill is counted and said in one warning.
    The first task is kept busy on purpose (NEMO_GRPO_INJECT_FAULT=slow_grade, utils/faults.py)."""
    import os
    import signal

    from nemo_grpo.utils.faults import grading_step

    marker = tmp_path / "busy"
    monkeypatch.setenv("NEMO_GRPO_INJECT_FAULT", f"slow_grade:7:30:{marker}")
    before = dict(grader_pool.stats)
    found: dict[str, list] = {}

    def grade() -> None:
        with grading_step(7):
            found["out"] = grader_pool.run("debug_sleep", [(0,), (0,)], timeout_s=60)

    worker = threading.Thread(target=grade)
    t0 = time.perf_counter()
    worker.start()
    while not marker.exists() and worker.is_alive():
        time.sleep(0.01)
    busy = [w for w in grader_pool._workers if w.task is not None and w.task[0] == 0]
    assert len(busy) == 1
    os.kill(busy[0].proc.pid, signal.SIGKILL)
    worker.join(timeout=30)
    assert time.perf_counter() - t0 < 20  # not the 30 s of the slowed task: the retry is not slowed
    assert [(o.status, o.value) for o in found["out"]] == [("ok", "slept"), ("ok", "slept")]
    assert grader_pool.stats["retries"] == before["retries"] + 1
    assert grader_pool.stats["errors"] == before["errors"]
    assert grader_pool.stats["worker_restarts"] == before["worker_restarts"] + 1
    assert "died while grading (exit status -9); replaced it and gave its answer to the new process" in caplog.text


def test_slow_grade_slows_only_the_first_task_of_its_step(grader_pool, monkeypatch):
    from nemo_grpo.utils.faults import grading_step

    monkeypatch.setenv("NEMO_GRPO_INJECT_FAULT", "slow_grade:2:0.6")
    t0 = time.perf_counter()
    grader_pool.run("debug_sleep", [(0,)] * 3)  # no step being graded: not slowed
    with grading_step(1):
        grader_pool.run("debug_sleep", [(0,)] * 3)  # another step
    assert time.perf_counter() - t0 < 0.5
    with grading_step(2):
        out = grader_pool.run("debug_sleep", [(0,)] * 3)
    assert [o.value for o in out] == ["slept"] * 3
    assert [o.elapsed_s >= 0.6 for o in out] == [True, False, False]


def test_grader_timeout_is_reported_not_silently_wrong(grader_pool, monkeypatch):
    # a comparison that outlives the limit: route the engine job to the sleep hook
    real_run = grader_pool.run
    monkeypatch.setattr(grader_pool, "run", lambda name, args, timeout_s=None: real_run("debug_sleep", [(5,)] * len(args), 0.3))
    res = grade_batch(["\\boxed{(0,9) \\cup (9,36)}"], ["(0,36) \\setminus \\{9\\}"], RewardConfig(failure_reward=0.0),
                      pool=grader_pool)
    assert res[0].status == "timeout" and res[0].correct is False
    assert summarize(res)["reward/status_timeout"] == 1.0


def test_grade_batch_from_threads(grader_pool):
    results: dict[int, list] = {}

    def work(k: int) -> None:
        results[k] = grade_batch(["\\boxed{x=3}", "\\boxed{\\frac{\\sqrt2}{2}}", "\\boxed{7}"],
                                 ["3", "\\frac{1}{\\sqrt2}", "8"], pool=grader_pool)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == [0, 1, 2]
    for res in results.values():
        assert [r.correct for r in res] == [True, True, False]
        assert all(r.status == "ok" for r in res)


def test_pathological_answers_fail_fast(grader_pool):
    t0 = time.perf_counter()
    res = grade_batch(["\\boxed{9^{9^{9^9}}}", "\\boxed{" + "9" * 20000 + "}"], ["1", "1"], pool=grader_pool)
    assert time.perf_counter() - t0 < 2
    assert [r.correct for r in res] == [False, False]
    assert res[0].reason == "pred_huge_power"


def test_a_worker_killed_while_idle_is_replaced_and_every_task_gets_its_result(grader_pool):
    """A grader process killed between batches (OOM killer, an operator's kill): the next batch must
    not crash on the dead pipe nor lose a result (rewards would shift against their responses)."""
    import os
    import signal

    grader_pool.run("debug_sleep", [(0,)] * len(grader_pool._workers))  # every worker started and idle
    before = grader_pool.stats["worker_restarts"]
    victim = grader_pool._workers[0]
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.join(timeout=5)
    out = grader_pool.run("debug_sleep", [(0,)] * 5)
    assert [o.status for o in out] == ["ok"] * 5 and [o.value for o in out] == ["slept"] * 5
    assert grader_pool.stats["worker_restarts"] == before + 1
    assert victim not in grader_pool._workers
