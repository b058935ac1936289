"""Loggers: JSONL, TensorBoard and W&B (offline) hold what was logged, and a resumed run leaves no
duplicate points for the steps it runs again."""

from __future__ import annotations

import glob
import json
import struct
import time

import pytest

from nemo_grpo.logging.config import LoggerConfig
from nemo_grpo.logging.loggers import make_loggers


def rows(steps, scale=1.0):
    return [{"step": s, "train/reward_mean": scale * s / 10, "train/entropy": 2.0 - s / 10,
             "generation/backend": "hf", "train/skipped": None} for s in steps]


def run_attempt(cfg, start_step, steps, scale=1.0):
    loggers = make_loggers(cfg, start_step=start_step, total_steps=10, config={"grpo": {"seed": 1}})
    for row in rows(steps, scale):
        loggers.log(row)
    loggers.close()
    return loggers


def tb_scalars(log_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)], acc.Tags()["scalars"]


def test_jsonl_and_tensorboard_resume_without_duplicates(tmp_path):
    cfg = LoggerConfig(log_dir=str(tmp_path), console=False, tensorboard=True, plot_period=0)
    run_attempt(cfg, 0, [1, 2, 3, 4])  # a run that saved step 2, logged 3 and 4, then died
    loggers = run_attempt(cfg, 2, [3, 4, 5], scale=2.0)  # resumed from step 2: 3, 4 again
    assert [r["step"] for r in loggers.history] == [1, 2]  # what the resumed run kept
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5]
    assert lines[3]["train/reward_mean"] == pytest.approx(0.8) and lines[3]["train/skipped"] is None
    points, tags = tb_scalars(tmp_path, "train/reward_mean")
    assert points == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)), (3, pytest.approx(0.6)),
                      (4, pytest.approx(0.8)), (5, pytest.approx(1.0))]
    assert "generation/backend" not in tags and "train/skipped" not in tags  # not numbers


def test_fresh_start_forgets_an_earlier_run_in_the_same_folder(tmp_path):
    cfg = LoggerConfig(log_dir=str(tmp_path), console=False, tensorboard=True, plot_period=0)
    run_attempt(cfg, 0, [1, 2, 3])
    run_attempt(cfg, 0, [1], scale=3.0)
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]
    assert tb_scalars(tmp_path, "train/reward_mean")[0] == [(1, pytest.approx(0.3))]


def test_validation_rows_go_to_every_backend(tmp_path, capsys):
    cfg = LoggerConfig(log_dir=str(tmp_path), console=True, tensorboard=True, plot_period=0)
    loggers = make_loggers(cfg, start_step=0, total_steps=2)
    loggers.log({"step": 0, "val/math500/accuracy": 0.25})
    loggers.log(rows([1])[0])
    loggers.close()
    assert tb_scalars(tmp_path, "val/math500/accuracy")[0] == [(0, 0.25)]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0]) == {
        "step": 0, "val/math500/accuracy": 0.25}
    out = capsys.readouterr().out
    assert "val     0 | math500/accuracy 0.25" in out and "step    1 | reward 0.100" in out
    with pytest.raises(ValueError, match="'step'"):
        make_loggers(LoggerConfig(log_dir=str(tmp_path / "x"), console=False), start_step=0, total_steps=1).log({})


def wandb_history(path):
    """History rows of an offline W&B run file (LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, chunk, out = open(path, "rb").read(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunk, pos = chunk + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                out.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return out


def settled_history(path, rows: int, wait_s: float = 20.0):
    """The run file's history once it holds `rows` rows: W&B's writer is a separate service process,
    and on a loaded machine its last records can reach the file a moment after `finish()` returns."""
    deadline = time.time() + wait_s
    while len(history := wandb_history(path)) < rows and time.time() < deadline:
        time.sleep(0.2)
    return history


def test_wandb_offline_writes_its_run_and_resumes_the_same_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # any network use would fail
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline comes from logger.wandb_mode
    cfg = LoggerConfig(log_dir=str(tmp_path), console=False, jsonl=False, wandb=True, wandb_mode="offline",
                       wandb_name="tiny", plot_period=0)
    run_attempt(cfg, 0, [1, 2, 3])
    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    time.sleep(1.1)  # W&B names offline folders by the second; a real resume is never that quick
    run_attempt(cfg, 2, [3, 4], scale=2.0)
    assert (tmp_path / "wandb_run_id").read_text().strip() == run_id
    files = sorted(glob.glob(str(tmp_path / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb")))
    assert len(files) == 2, files
    first, second = settled_history(files[0], 3), settled_history(files[1], 2)
    assert [(r["_step"], r["train/reward_mean"]) for r in first] == [(1, 0.1), (2, 0.2), (3, pytest.approx(0.3))]
    assert [(r["_step"], r["train/reward_mean"]) for r in second] == [(3, pytest.approx(0.6)), (4, 0.8)]
    assert second[0]["generation/backend"] == "hf" and "train/skipped" not in second[0]


def test_a_torn_last_line_is_dropped_with_one_warning_and_the_file_cut_before_appending(tmp_path, caplog):
    cfg = LoggerConfig(log_dir=str(tmp_path), console=False, tensorboard=False, plot_period=0)
    run_attempt(cfg, 0, [1, 2, 3])
    path = tmp_path / "metrics.jsonl"
    with path.open("a") as f:
        f.write('{"step": 4, "train/rew')  # a kill in the middle of writing step 4
    with caplog.at_level("WARNING"):
        loggers = run_attempt(cfg, 3, [4, 5])
    assert [r["step"] for r in loggers.history] == [1, 2, 3]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"{path}:4: dropped a partial last line" in warnings[0]
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_a_garbage_line_elsewhere_is_a_user_error_naming_file_and_line(tmp_path):
    from nemo_grpo.logging.loggers import MetricsFileError
    from nemo_grpo.utils.errors import UserError

    cfg = LoggerConfig(log_dir=str(tmp_path), console=False, tensorboard=False, plot_period=0)
    run_attempt(cfg, 0, [1, 2, 3])
    path = tmp_path / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "oops not json\n" + "".join(lines[1:]))
    with pytest.raises(MetricsFileError, match=rf"^{path}:2: not a JSON metrics row \('oops not json'\); fix or delete") as err:
        make_loggers(cfg, start_step=3, total_steps=10)
    assert isinstance(err.value, UserError)
    assert path.read_text().splitlines()[1] == "oops not json"  # the file is left as it was
    path.write_bytes(b'{"step": 1}\n\xff\xfe\n')
    with pytest.raises(MetricsFileError, match=rf"{path}:2: not UTF-8 text"):
        make_loggers(cfg, start_step=3, total_steps=10)
    loggers = make_loggers(cfg, start_step=0, total_steps=10)  # a fresh start forgets the file unread
    assert loggers.history == [] and path.read_text() == ""
