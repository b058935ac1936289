"""Training curves from `metrics.jsonl` files: the PNGs a run keeps in `<log_dir>/plots/`, and a
command that draws several runs side by side (one colour per run):

    uv run python -m nemo_grpo.logging.plots logs/baseline logs/archer --out compare.png \
        [--labels baseline archer] [--metrics train/reward_mean train/entropy ...] [--smooth 3]

Each argument is a run's `metrics.jsonl` or the log folder holding it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

VAL_ACCURACY = re.compile(r"^val/[^/]+/(accuracy|pass@1|avg@\d+|mean@\d+|maj@\d+)$")


@dataclass(frozen=True)
class Panel:
    """One set of axes: a title and the metrics drawn on it (a regular expression for the
    validation panel, whose keys depend on the validation sets)."""

    name: str  # file name in <log_dir>/plots/
    title: str
    metrics: tuple[str, ...] = ()
    pattern: re.Pattern | None = None
    empty_note: str = ""  # shown when no run has any of the metrics

    def keys(self, runs: list[list[dict]]) -> list[str]:
        present = {k for rows in runs for row in rows for k in row}
        if self.pattern is not None:
            return sorted(k for k in present if self.pattern.match(k))
        return [m for m in self.metrics if m in present]


RUN_PANELS = [
    Panel("reward", "reward and correctness", ("train/reward_mean", "train/correct_rate", "train/format_rate")),
    Panel("validation", "validation accuracy", pattern=VAL_ACCURACY),
    Panel("entropy", "policy entropy (nats / token)", ("train/entropy",)),
    Panel("response_length", "response length (tokens)", ("train/response_length_mean", "train/response_length_max")),
    Panel("kl", "KL to the reference", ("train/kl_ref", "train/kl_ref_low_entropy", "train/kl_ref_high_entropy"),
          empty_note="no reference model\n(loss.kl_coef = 0): no KL logged"),
    Panel("clip_fraction", "clip fraction", ("train/clipfrac", "train/clipfrac_low", "train/clipfrac_high")),
]

# The comparison command's default: one metric per panel, so that runs share a colour per panel.
COMPARE_METRICS = [
    "train/reward_mean", "train/correct_rate", "train/format_rate", "train/entropy",
    "train/response_length_mean", "train/truncated_rate", "train/kl_ref", "train/kl_ref_low_entropy",
    "train/kl_ref_high_entropy", "train/clipfrac", "train/grad_norm",
]


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a `metrics.jsonl` (or of the one in a log folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (window 1 = raw values)."""
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - window + 1) : i + 1] if v is not None]
        out.append(sum(part) / len(part) if part else math.nan)
    return out


def _short(metric: str) -> str:
    return metric.removeprefix("train/")


def _draw(ax, panel: Panel, runs: list[list[dict]], labels: list[str], window: int) -> None:
    """The panel's metrics for every run: a colour per run (or per metric for a single run), a line
    style per metric; the legend names what the colours alone do not."""
    from matplotlib.ticker import MaxNLocator

    keys = panel.keys(runs)
    styles = ["-", "--", ":", "-."]
    for r, (rows, label) in enumerate(zip(runs, labels)):
        for k, key in enumerate(keys):
            points = [(row["step"], row[key]) for row in rows if isinstance(row.get(key), (int, float))]
            if not points:
                continue
            steps, values = zip(*points)
            name = " / ".join(p for p in (label if len(runs) > 1 else "", _short(key) if len(keys) > 1 else "") if p)
            name = name or label
            color = f"C{r}" if len(runs) > 1 else f"C{k}"
            marker = "o" if len(points) < 12 else None
            if window > 1 and len(points) > 1:
                ax.plot(steps, values, color=color, linestyle=styles[k % 4], alpha=0.25, linewidth=1)
                values = smooth(list(values), window)
            ax.plot(steps, values, color=color, linestyle=styles[k % 4], marker=marker, markersize=3,
                    linewidth=1.6, label=name or None)
    ax.set_title(panel.title, fontsize=10)
    if not ax.lines:
        ax.text(0.5, 0.5, panel.empty_note or "not logged", ha="center", va="center", transform=ax.transAxes,
                color="0.4", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if len(keys) > 1:  # with one metric per panel, the figure's legend names the runs
        ax.legend(fontsize=7, loc="best")
    if all(y == 0 for line in ax.lines for y in line.get_ydata()):  # e.g. no clipping in on-policy updates
        ax.set_ylim(-0.05, 1.0)
        ax.text(0.5, 0.5, "all values are 0", ha="center", va="center", transform=ax.transAxes, color="0.4",
                fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


def draw_panels(runs: list[list[dict]], labels: list[str], panels: list[Panel], out: str | Path, *,
                window: int = 1, title: str | None = None) -> Path:
    """One PNG with a panel per entry of `panels` (three per row), every run in each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 3.3 * rows_n), squeeze=False, layout="constrained")
    for ax, panel in zip(axes.flat, panels):
        _draw(ax, panel, runs, labels, window)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if len(runs) > 1:  # one entry per run above the panels, under the title
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=f"C{r}", linewidth=2) for r in range(len(runs))]
        fig.legend(handles, labels, loc="outside upper center", ncol=len(runs), fontsize=9, frameon=False,
                   title=title, title_fontsize=11)
    elif title:
        fig.suptitle(title, fontsize=11)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)  # a reader never sees a half-written PNG
    plt.close(fig)
    return out


def plot_runs(paths: list[str | Path], out: str | Path, *, metrics: list[str] | None = None,
              labels: list[str] | None = None, window: int = 1, title: str | None = None) -> Path:
    """Several runs side by side, one metric per panel (default: those of COMPARE_METRICS that any
    run logged, plus validation accuracies)."""
    runs = [read_metrics(p) for p in paths]
    labels = labels or [_run_label(p) for p in paths]
    if metrics:
        panels = [Panel(_short(m), _short(m), (m,)) for m in metrics]
    else:
        present = {k for rows in runs for row in rows for k in row}
        wanted = [m for m in COMPARE_METRICS if m in present] + sorted(k for k in present if VAL_ACCURACY.match(k))
        panels = [Panel(_short(m), _short(m), (m,)) for m in wanted]
    if not panels:
        raise ValueError(f"none of the metrics to draw is in {', '.join(map(str, paths))}")
    return draw_panels(runs, labels, panels, out, window=window, title=title)


def _run_label(path: str | Path) -> str:
    path = Path(path)
    return (path if path.is_dir() else path.parent).name or str(path)


def write_run_plots(log_dir: str | Path) -> list[Path]:
    """`<log_dir>/plots/<panel>.png` for each panel (validation only when validated) and
    `overview.png` with all of them, from `<log_dir>/metrics.jsonl`."""
    log_dir = Path(log_dir)
    rows = read_metrics(log_dir / "metrics.jsonl")
    panels = [p for p in RUN_PANELS if p.pattern is None or p.keys([rows])]
    label = [log_dir.name]
    written = [draw_panels([rows], label, [p], log_dir / "plots" / f"{p.name}.png") for p in panels]
    last = max((r["step"] for r in rows if isinstance(r.get("step"), int)), default=0)
    written.append(draw_panels([rows], label, panels, log_dir / "plots" / "overview.png",
                               title=f"{log_dir.resolve()}: step {last}"))
    return written


class RunPlotter:
    """A logger backend: redraws the run's PNGs every `period` steps and when the run ends. A plot
    that fails is a warning, never the end of a run."""

    def __init__(self, log_dir: str | Path, period: int):
        self.log_dir, self.period = Path(log_dir), period
        self.drawn_step: int | None = None
        self.new_rows = False  # rows logged since the last drawing

    def log(self, metrics: dict) -> None:
        self.new_rows = True
        step = int(metrics["step"])
        if step % self.period == 0 and step != self.drawn_step:
            self._draw()
            self.drawn_step = step

    def close(self) -> None:
        if self.new_rows:
            self._draw()

    def _draw(self) -> None:
        self.new_rows = False
        try:
            write_run_plots(self.log_dir)
        except Exception as exc:
            log.warning("plots in %s not drawn (the run goes on): %s: %s", self.log_dir / "plots",
                        type(exc).__name__, exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="metrics.jsonl files or log folders (one per run)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--metrics", nargs="*", help=f"metric names (default: those of {' '.join(COMPARE_METRICS)} "
                                                      "that were logged, and validation accuracies)")
    parser.add_argument("--labels", nargs="*", help="one label per run (default: the run folder names)")
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window in steps")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.paths):
        parser.error(f"{len(args.labels)} labels for {len(args.paths)} runs")
    for path in args.paths:
        if not (Path(path).is_file() or (Path(path) / "metrics.jsonl").is_file()):
            parser.error(f"{path}: no such metrics.jsonl (give the file or the run's log folder)")
    try:
        print(plot_runs(args.paths, args.out, metrics=args.metrics, labels=args.labels, window=args.smooth,
                        title=args.title))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
