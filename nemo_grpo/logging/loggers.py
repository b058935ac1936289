"""Where metrics rows go: console, `metrics.jsonl`, TensorBoard, Weights & Biases and PNG plots.

A row is a dict with an integer `step` and any other keys: a training step's metrics, or a
validation row (`val/<set>/...`, possibly at step 0). `make_loggers` builds the backends the
`logger:` config enables; every backend takes any row and skips values it cannot store.

Resume: a run resumed from the checkpoint of step S runs steps S+1.. again, so each backend first
forgets what an earlier attempt logged for steps > S (JSONL rewrites its file, TensorBoard uses
`purge_step`, W&B resumes the same run id). A fresh start (S = 0) forgets everything.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nemo_grpo.config import ConfigError
from nemo_grpo.utils.errors import UserError

log = logging.getLogger(__name__)

CONSOLE_KEYS = [
    ("train/reward_mean", "reward", "{:.3f}"),
    ("train/correct_rate", "correct", "{:.2f}"),
    ("train/format_rate", "format", "{:.2f}"),
    ("train/response_length_mean", "len", "{:.0f}"),
    ("train/entropy", "entropy", "{:.3f}"),
    ("train/loss", "loss", "{:+.4f}"),
    ("timing/step_s", "step_s", "{:.1f}"),
]


_WHAT_TO_DO = ("fix or delete that line (or move the file away to start its history afresh) and run the same "
               "command again")


class MetricsFileError(UserError, ValueError):
    """A metrics.jsonl that cannot be read back on resume; the message names the file and the line."""


def _number(value: Any) -> float | None:
    """A value as a float if it is a number (bools count as 0/1), else None."""
    if isinstance(value, (int, float)):
        return float(value)
    return None


class JsonlLogger:
    """`metrics.jsonl`: one JSON object per row (non-finite numbers become null)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, metrics: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean, sort_keys=True) + "\n")

    def truncate_after(self, step: int) -> list[dict[str, Any]]:
        """Drop the rows of steps after `step` (they will be run again) and return the rows kept.
        A step < 0 (a fresh start) forgets the whole file without reading it."""
        if not self.path.exists():
            return []
        kept = [row for row in self.read_rows() if row.get("step", 0) <= step] if step >= 0 else []
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in kept))
        tmp.replace(self.path)
        return kept

    def read_rows(self) -> list[dict[str, Any]]:
        """The rows of the file. A last line without its newline that is not JSON (a kill in the
        middle of a write) is dropped with one warning; any other line that is not a JSON object
        raises a UserError naming the file and the line."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            line = self.path.read_bytes()[: exc.start].count(b"\n") + 1
            raise MetricsFileError(f"{self.path}:{line}: not UTF-8 text; {_WHAT_TO_DO}") from None
        lines = text.split("\n")
        torn = lines[-1]  # "" when the file ends with a newline
        rows = []
        for number, line in enumerate(lines[:-1], 1):
            if line.strip():
                rows.append(self._parse(line, number))
        if torn.strip():
            try:
                rows.append(self._parse(torn, len(lines)))
            except MetricsFileError:
                log.warning("%s:%d: dropped a partial last line (a run killed while writing it): %.60r", self.path,
                            len(lines), torn)
        return rows

    def _parse(self, line: str, number: int) -> dict[str, Any]:
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            raise MetricsFileError(f"{self.path}:{number}: not a JSON metrics row ({line[:60]!r}); {_WHAT_TO_DO}")
        return row

    def close(self) -> None:
        pass


class ConsoleLogger:
    """A line per training step under a progress bar; validation rows get a line of their own."""

    def __init__(self, total_steps: int, start_step: int):
        self.bar = tqdm(total=total_steps, initial=start_step, desc="GRPO", unit="step", dynamic_ncols=True)

    def log(self, metrics: dict[str, Any]) -> None:
        val = {k: v for k, v in metrics.items() if k.startswith("val/") and _number(v) is not None}
        if val:
            self.bar.write(f"val  {metrics['step']:>4} | " + " | ".join(f"{k[4:]} {v:.4g}" for k, v in sorted(val.items())))
        parts = [f"step {metrics['step']:>4}"]
        for key, label, fmt in CONSOLE_KEYS:
            if _number(metrics.get(key)) is not None:
                parts.append(f"{label} {fmt.format(metrics[key])}")
        if len(parts) > 1:
            self.bar.write(" | ".join(parts))
            self.bar.update(max(0, metrics["step"] - self.bar.n))

    def close(self) -> None:
        self.bar.close()


class TensorBoardLogger:
    """Event files in `<log_dir>/tensorboard`: every number as a scalar at its row's step."""

    def __init__(self, log_dir: str | Path, *, purge_step: int, config_text: str | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # Events of steps >= purge_step that an earlier attempt wrote are hidden by readers.
        self.writer = SummaryWriter(log_dir=str(Path(log_dir) / "tensorboard"), purge_step=purge_step)
        if config_text and purge_step == 0:
            self.writer.add_text("config", f"```\n{config_text}\n```", 0)

    def log(self, metrics: dict[str, Any]) -> None:
        step = int(metrics["step"])
        for key, value in metrics.items():
            number = _number(value)
            if key != "step" and number is not None:
                self.writer.add_scalar(key, number, step)
        self.writer.flush()  # a run that dies keeps every step it logged

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run in `<log_dir>/wandb`; offline mode needs no network (`wandb sync`
    uploads it later). The run id is kept in `<log_dir>/wandb_run_id` and a resumed run continues
    the same W&B run. Online, W&B refuses a step it already has, so steps re-run after a crash keep
    their first values there; offline, each start writes its own `offline-run-*-<id>` folder."""

    def __init__(self, log_dir: str | Path, *, project: str, name: str | None, mode: str, resumed: bool,
                 config: dict[str, Any] | None = None):
        import wandb

        log_dir = Path(log_dir)
        id_file = log_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if resumed and id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
        try:
            self.run = wandb.init(project=project, name=name, id=run_id, resume="allow", mode=mode,
                                  dir=str(log_dir), config=config)
        except Exception as exc:  # no login, no network in online mode, ...
            raise ConfigError(f"logger.wandb: W&B did not start ({type(exc).__name__}: {exc}); set "
                              "logger.wandb_mode=offline (no network needed) or run `wandb login`") from None

    def log(self, metrics: dict[str, Any]) -> None:
        row = {k: v for k, v in metrics.items()
               if k != "step" and (_number(v) is not None or isinstance(v, str))}
        self.run.log(row, step=int(metrics["step"]))

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """Every enabled backend; `log(row)` sends a row to all of them in order."""

    def __init__(self, backends: list[Any], history: list[dict[str, Any]] | None = None):
        self.backends = backends
        self.history = history or []  # rows of earlier steps kept from metrics.jsonl on resume

    def log(self, metrics: dict[str, Any]) -> None:
        if "step" not in metrics:
            raise ValueError("a metrics row needs a 'step' key")
        for backend in self.backends:
            backend.log(metrics)

    def restore(self, row: dict[str, Any]) -> None:
        """A row of an earlier step recovered on resume: into the files of record and the history
        (not the console, whose progress bar counts steps run now)."""
        for backend in self.backends:
            if isinstance(backend, (JsonlLogger, TensorBoardLogger)):
                backend.log(row)
        self.history.append(row)

    def close(self) -> None:
        for backend in self.backends:
            try:
                backend.close()
            except Exception as exc:  # closing one must not keep the others open
                log.warning("closing %s failed: %s", type(backend).__name__, exc)


def make_loggers(cfg, *, start_step: int, total_steps: int, config: dict[str, Any] | None = None,
                 config_text: str | None = None) -> Loggers:
    """The backends `cfg` (a LoggerConfig) enables, for a run that starts after step `start_step`
    (0: a fresh run). `config` (the resolved run config as a dict) goes to W&B, `config_text` to
    TensorBoard."""
    from nemo_grpo.logging.plots import RunPlotter

    log_dir = Path(cfg.log_dir)
    backends: list[Any] = []
    history: list[dict[str, Any]] = []
    if cfg.jsonl:
        jsonl = JsonlLogger(log_dir / "metrics.jsonl")
        history = jsonl.truncate_after(start_step) if start_step else jsonl.truncate_after(-1)
        backends.append(jsonl)
    if cfg.tensorboard:
        backends.append(TensorBoardLogger(log_dir, purge_step=start_step + 1 if start_step else 0,
                                          config_text=config_text))
    if cfg.wandb and cfg.wandb_mode != "disabled":
        backends.append(WandbLogger(log_dir, project=cfg.wandb_project, name=cfg.wandb_name, mode=cfg.wandb_mode,
                                    resumed=start_step > 0, config=config))
    if cfg.plot_period:
        if cfg.jsonl:
            backends.append(RunPlotter(log_dir, cfg.plot_period))  # after JSONL: it draws from that file
        else:
            log.info("no plots: logger.plot_period draws from metrics.jsonl, and logger.jsonl is false")
    if cfg.console:
        backends.append(ConsoleLogger(total_steps, start_step))
    return Loggers(backends, history)
