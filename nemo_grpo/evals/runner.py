"""The evaluation run behind `examples/run_eval.py`: sample, grade, score, write, resume.

For each set in `data.datasets`, under `<output_dir>/<set name>/`:

    settings.json   what produced the samples (model, backend, sampling, prompt, grader, data hash)
    samples.jsonl   one graded sample per line, appended a chunk of problems at a time
    summary.json    avg@n, pass@k for every k <= n, maj@n, rates, and the subject / level breakdown
    report.md       the same for people, with a few right and wrong samples

Problems are generated in chunks of `problems_per_chunk`; chunk c is sampled with a seed fixed by
(`seed`, set name, c), and each chunk is flushed to disk as soon as it is graded. A killed
evaluation, started again with the same command, keeps the complete chunks, skips their problems,
and samples exactly what the uninterrupted run would have. Started with other settings it refuses,
naming what differs, rather than mixing samples of two set-ups.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nemo_grpo.distributed.device import resolve_device
from nemo_grpo.evals.config import EvalConfig
from nemo_grpo.evals.metrics import all_ks, summarize
from nemo_grpo.evals.report import render_report
from nemo_grpo.evals.score import group_by_problem, sample_and_grade
from nemo_grpo.evals.sets import ScoredSet, eos_stop_ids, load_scored_set, sampling_for
from nemo_grpo.generation import available_backend, make_generation_backend
from nemo_grpo.models.source import load_tokenizer, resolve_model_path
from nemo_grpo.rewards.pool import shutdown_pool
from nemo_grpo.utils.errors import UserError
from nemo_grpo.utils.faults import maybe_crash

log = logging.getLogger(__name__)


class EvalResumeMismatch(UserError, ValueError):
    """An output folder written with other settings; the message lists what differs."""


def chunk_seed(seed: int, set_name: str, chunk: int) -> int:
    return zlib.crc32(f"{seed}:{set_name}:{chunk}".encode()) & 0x7FFFFFFF


def eval_settings(cfg: EvalConfig, scored: ScoredSet, backend: str) -> dict[str, Any]:
    """Everything that decides the samples of a set; a resumed evaluation must match it exactly."""
    reward = {k: v for k, v in dataclasses.asdict(cfg.reward).items() if k != "num_workers"}
    sampling = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(scored.params).items()}
    return {
        "model": cfg.generation.model_name, "backend": backend, "precision": cfg.precision, "seed": cfg.seed,
        "dataset": dataclasses.asdict(scored.spec), "problems": len(scored.rows), "problems_sha": scored.fingerprint(),
        "prompt": dataclasses.asdict(cfg.data.prompt), "sampling": sampling, "reward": reward,
        "problems_per_chunk": cfg.problems_per_chunk,
    }


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Write settings.json on a fresh start; on a resume, refuse settings that differ."""
    path, samples = out_dir / "settings.json", out_dir / "samples.jsonl"
    if not path.exists():
        if samples.exists() and samples.stat().st_size:
            raise EvalResumeMismatch(f"refusing to resume {out_dir}: samples.jsonl has no settings.json beside it; "
                                     "use another output_dir or delete the folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2, sort_keys=True))
        return
    saved, now = _flat(json.loads(path.read_text())), _flat(json.loads(json.dumps(settings)))
    diffs = [f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in sorted(saved.keys() | now.keys())
             if saved.get(k) != now.get(k)]
    if diffs:
        raise EvalResumeMismatch(f"refusing to resume {out_dir}: it holds samples from other settings ("
                                 + "; ".join(diffs) + "). Use another output_dir, or delete the folder to start over")


def read_complete_chunks(path: Path, chunk_records: list[int]) -> list[dict[str, Any]]:
    """Records of the leading chunks that are complete (chunk c has chunk_records[c] lines).
    A chunk cut short by a kill, and anything after it, is dropped from the file."""
    if not path.exists():
        return []
    records, clean = [], True
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a kill during a write
            clean = False
            break
    per_chunk = Counter(r["chunk"] for r in records)
    done = 0
    while done < len(chunk_records) and per_chunk.get(done, 0) == chunk_records[done]:
        done += 1
    kept = [r for r in records if r["chunk"] < done]
    if len(kept) != len(records) or not clean:
        log.warning("%s: dropping %d samples of an unfinished chunk", path, len(records) - len(kept))
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(path)
    return kept


def _append(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def evaluate_set(scored: ScoredSet, out_dir: Path, settings: dict[str, Any], cfg: EvalConfig, engine) -> dict[str, Any]:
    """Generate the chunks not on disk yet, then score everything and write summary.json and report.md."""
    check_settings(out_dir, settings)
    size, n = cfg.problems_per_chunk, scored.params.n
    chunks = [scored.rows[i:i + size] for i in range(0, len(scored.rows), size)]
    samples = out_dir / "samples.jsonl"
    records = read_complete_chunks(samples, [len(c) * n for c in chunks])
    done = len({r["chunk"] for r in records})
    skipped = sum(len(c) for c in chunks[:done])
    if done:
        log.info("%s: resuming after %d of %d problems", scored.name, skipped, len(scored.rows))
    start = time.perf_counter()
    with tqdm(total=len(scored.rows), initial=skipped, desc=scored.name, unit="problem", dynamic_ncols=True) as bar:
        for index in range(done, len(chunks)):
            params = dataclasses.replace(scored.params, seed=chunk_seed(cfg.seed, scored.name, index))
            graded = sample_and_grade(engine().generate, chunks[index], params, cfg.reward)
            new = [{"chunk": index, **r} for r in graded]
            _append(samples, new)
            records += new
            bar.update(len(chunks[index]))
            maybe_crash("eval_chunk", index + 1)  # tests: a kill after this many chunks are saved
    summary = {"set": scored.name, **summarize(group_by_problem(records), all_ks(n)), "settings": settings,
               "generation_s_this_run": time.perf_counter() - start}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "report.md").write_text(render_report(scored.name, summary, records), encoding="utf-8")
    return summary


def run_evaluation(cfg: EvalConfig) -> dict[str, dict[str, Any]]:
    """Evaluate `generation.model_name` on every set of `data.datasets`; returns each set's summary.
    The engine runs in this process, on the GPU when one is visible."""
    model_path = resolve_model_path(cfg.generation.model_name, "generation.model_name")
    tokenizer = load_tokenizer(model_path, key="generation.model_name")
    backend = available_backend(cfg.generation.backend)
    sets = []
    for i, spec in enumerate(cfg.data.datasets):
        params = sampling_for(spec, cfg.generation, default_n=cfg.num_samples, default_max_new_tokens=None,
                              stop_token_ids=eos_stop_ids(tokenizer), seed=cfg.seed)
        sets.append(load_scored_set(spec, prompt=cfg.data.prompt, data_dir=cfg.data.data_dir, tokenizer=tokenizer,
                                    params=params, where=f"data.datasets[{i}]"))
    max_len = max(s.max_prompt_tokens + s.params.max_new_tokens for s in sets)
    built: list[Any] = []

    def engine():  # started on first use: a finished evaluation only rewrites its summaries
        if not built:
            built.append(make_generation_backend(cfg.generation, model_path, tokenizer, precision=cfg.precision,
                                                 seed=cfg.seed, max_model_len=max_len, load_weights=True,
                                                 device=resolve_device(None)))
        return built[0]

    summaries = {}
    try:
        for scored in sets:
            out_dir = Path(cfg.output_dir) / scored.name
            summary = evaluate_set(scored, out_dir, eval_settings(cfg, scored, backend), cfg, engine)
            summaries[scored.name] = summary
            n = summary["num_samples"]
            print(f"{scored.name}: avg@{n} {summary[f'avg@{n}']:.4f} | pass@{n} {summary[f'pass@{n}']:.4f} | "
                  f"maj@{n} {summary[f'maj@{n}']:.4f} | {summary['num_problems']} problems -> {out_dir}", flush=True)
    finally:
        if built:
            built[0].shutdown()
        shutdown_pool()
    return summaries
