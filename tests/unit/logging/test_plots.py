"""Curves from metrics.jsonl: a run's own PNGs, and several runs side by side."""

from __future__ import annotations

import json
import logging

import pytest

from nemo_grpo.logging.plots import RunPlotter, main, plot_runs, smooth, write_run_plots

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(folder, rewards, validation=False):
    folder.mkdir(parents=True)
    lines = [{"step": 0, "val/math500/accuracy": 0.1}] if validation else []
    for i, r in enumerate(rewards):
        lines.append({"step": i + 1, "train/reward_mean": r, "train/correct_rate": r / 2, "train/entropy": 1.0 - r / 2,
                      "train/response_length_mean": 40 - 10 * r, "train/clipfrac": 0.01, "generation/backend": "hf"})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder / "metrics.jsonl"


def is_png(path, min_bytes=5000):
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > min_bytes


def test_run_plots_one_png_per_panel_and_an_overview(tmp_path):
    write_run(tmp_path / "a", [0.0, 0.1, 0.3], validation=True)
    names = sorted(p.name for p in write_run_plots(tmp_path / "a"))
    assert names == ["clip_fraction.png", "entropy.png", "kl.png", "overview.png", "response_length.png", "reward.png",
                     "validation.png"]
    assert all(is_png(tmp_path / "a" / "plots" / n) for n in names)


def test_run_plotter_draws_every_period_and_at_the_end_and_never_raises(tmp_path, caplog):
    log_dir = tmp_path / "run"
    metrics = write_run(log_dir, [0.0, 0.1, 0.3])
    plotter = RunPlotter(log_dir, period=2)
    plotter.log({"step": 1})
    assert not (log_dir / "plots").exists()
    plotter.log({"step": 2})
    assert is_png(log_dir / "plots" / "overview.png")
    assert not (log_dir / "plots" / "validation.png").exists()  # no validation rows in this run
    plotter.log({"step": 3})  # not a multiple of the period: drawn when the run ends
    metrics.write_text("{not json\n")  # a broken file: a warning, not the end of the run
    with caplog.at_level(logging.WARNING):
        plotter.close()
    assert "plots in" in caplog.text and "not drawn" in caplog.text


def test_two_runs_in_one_png_from_files_or_folders(tmp_path):
    a = write_run(tmp_path / "base", [0.0, 0.1, 0.3])
    b = write_run(tmp_path / "archer", [0.0, 0.2, 0.4], validation=True)
    out = plot_runs([a, b.parent], tmp_path / "cmp.png", window=2, title="base vs archer")
    assert is_png(out)


def test_cli(tmp_path, capsys):
    a = write_run(tmp_path / "run", [0.0, 1.0, 0.5])
    assert main([str(a.parent), "--out", str(tmp_path / "x.png"), "--metrics", "train/reward_mean"]) == 0
    assert is_png(tmp_path / "x.png", 1000)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing"), "--out", str(tmp_path / "y.png")])
    assert "no such metrics.jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(a), "--out", str(tmp_path / "y.png"), "--labels", "a", "b"])
    assert smooth([0.0, 1.0, 0.5], 2) == [0.0, 0.5, 0.75]
