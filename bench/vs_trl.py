"""Ours vs TRL's GRPOTrainer at the same settings, one after the other on this machine.

    .venv/bin/python bench/vs_trl.py [--steps 5] [--out bench/results/vs_trl_cpu.txt]

Both sides train SmolLM2-135M-Instruct (the local GGUF, converted once to a Hugging Face folder
that both read) on the `arithmetic` `easy-train` prompts of the default recipe
(configs/grpo-smollm2-135m-arithmetic.yaml: chat template, cot prompt, the same prompts in the same
order), 4 prompts x 8 samples per step, at most 48 new tokens, temperature 1, fp32, one optimizer
step per GRPO step (micro-batch 8, 4 accumulation steps), lr 2e-5 (constant), no KL, no
validation, no checkpoints. The reward is ours (correctness + format term) on both sides.

- Ours: examples/run_grpo_math.py with the default recipe and those overrides, in a subprocess;
  per-step times from its metrics.jsonl (`timing/*`).
- TRL: bench/trl_grpo.py in a throwaway uv environment (TRL_SPEC, with this environment's torch and
  transformers versions; created once under NEMO_GRPO_CACHE/bench/, or --trl-python), generating
  with HF generate: TRL's vLLM modes do not run on vLLM-CPU (colocate loads weights with
  `model.load_weights`, which vLLM-CPU rejects after its start-up repacking; server mode syncs
  weights over NCCL, CUDA only).

Prints (and writes to --out) the median step time of each, their ratio ours/TRL, the median phases
(generation, reward, training; refit for ours), each step, each side's total wall time including
start-up, and the load average around each side. Medians are over every step, the first included.
TRL's step is on_step_begin to on_step_end (its own `step_time`, timing a little less, read 137 s
where this read 146 s in a smoke run); its training phase is the step less
`_generate_and_score_completions`. One difference is the recipe's, and stays:
ours skips the groups whose rewards are all equal (no gradient), TRL trains on them.

Run it on a quiet machine only: both sides use 2 torch threads, and other jobs slow that far more
than their share (one step's HF generate took 33 s with 1 thread, 338 s with 2, at load 6).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRL_SPEC = "trl==1.16.*"
GGUF = "smollm2-135m-instruct-gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
RECIPE = REPO / "configs" / "grpo-smollm2-135m-arithmetic.yaml"
PHASES = ("generation", "reward", "train", "refit")  # ours: timing/<phase>_s; TRL: <phase>_s (no refit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--out", default=None, help="also write the report to this file")
    parser.add_argument("--work", default=None, help="folder for both runs' logs (default: a new temp folder)")
    parser.add_argument("--trl-python", default=None, help="python of an environment with TRL (default: create one)")
    args = parser.parse_args()
    for name, value in {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
                        "VLLM_CPU_KVCACHE_SPACE": "1"}.items():
        os.environ.setdefault(name, value)
    work = Path(args.work or tempfile.mkdtemp(prefix="vs-trl-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"logs in {work}", flush=True)

    trl_python = args.trl_python or trl_environment()
    overrides, settings = prepare(work, args.steps, args.lr)
    ours = run_ours(work, overrides)
    trl = run_trl(work, trl_python, settings)
    header = (f"# .venv/bin/python bench/vs_trl.py --steps {args.steps}   ({datetime.date.today()}, "
              f"{os.cpu_count()} CPUs, {trl_version(trl_python)})")
    report = render(header, ours, trl)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")


@dataclass
class Side:
    rows: list[dict]  # one per step: step_s and <phase>_s
    generation: str  # its generation backend
    wall: float = 0.0  # the whole run in seconds, start-up included
    load: str = "?"  # the machine's 1-minute load average at its start -> end


def trl_environment() -> str:
    """The python of a throwaway uv environment with TRL and this environment's torch and
    transformers; created on first use (about a minute, mostly downloads)."""
    import torch
    import transformers

    from nemo_grpo.models.source import cache_dir

    torch_version = torch.__version__.split("+")[0]
    venv = cache_dir() / "bench" / f"trl-{TRL_SPEC.split('==')[1].strip('.*')}-torch{torch_version}"
    python = venv / "bin" / "python"
    if not python.is_file():
        if shutil.which("uv") is None:
            raise SystemExit("uv not found: install uv (https://docs.astral.sh/uv/) or pass --trl-python")
        print(f"creating the TRL environment {venv}", flush=True)
        subprocess.run(["uv", "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        subprocess.run(["uv", "pip", "install", "-q", "--python", str(python), TRL_SPEC, f"torch=={torch_version}",
                        f"transformers=={transformers.__version__}"], check=True)
    return str(python)


def trl_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import trl; print(trl.__version__)"], capture_output=True, text=True)
    return f"TRL {out.stdout.strip() or '?'}"


def prepare(work: Path, steps: int, lr: float) -> tuple[list[str], Path]:
    """Our overrides and TRL's settings file (the model folder both read, the prompts in our loader's
    order, the reward config), all from the default recipe."""
    from nemo_grpo.data.loader import PromptLoader
    from nemo_grpo.models.source import load_tokenizer, resolve_model_path
    from nemo_grpo.trainer.config import load_train_config
    from nemo_grpo.trainer.setup import load_train_prompts

    warnings.filterwarnings("ignore", message="'set_vital' is deprecated")  # torchdata 0.11, at every loader start
    shared = Path(os.environ.get("NEMO_GRPO_SHARED", REPO.parent / "shared"))
    model = resolve_model_path(str(shared / "models" / GGUF))  # converted once, cached
    overrides = [f"policy.model_name={model}", f"policy.optimizer.lr={lr}", f"grpo.max_num_steps={steps}",
                 "grpo.val_period=0", "grpo.val_at_start=false", "grpo.val_at_end=false", "data.validation=[]",
                 "checkpointing.enabled=false", f"logger.log_dir={work / 'ours'}",
                 f"checkpointing.checkpoint_dir={work / 'ours-checkpoints'}"]
    cfg = load_train_config(RECIPE, overrides)
    micro, batch = cfg.policy.train_micro_batch_size, cfg.policy.train_global_batch_size
    if cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt != batch or cfg.grpo.ppo_epochs != 1:
        raise SystemExit("the recipe no longer takes one optimizer step per GRPO step: TRL's batch would differ")
    rows = load_train_prompts(cfg, load_tokenizer(model))
    loader = PromptLoader(rows, cfg.grpo.num_prompts_per_step, seed=cfg.grpo.seed, shuffle=cfg.data.shuffle)
    data = work / "trl-prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["prompt"], "answer": r["answer"]}) + "\n"
                            for _ in range(len(loader)) for r in loader.next_batch()))
    opt, loss = cfg.policy.optimizer, cfg.loss
    settings = {
        "model": model, "data": str(data), "out": str(work / "trl-steps.jsonl"), "output_dir": str(work / "trl"),
        "steps": steps, "seed": cfg.grpo.seed, "micro_batch": micro, "accumulation": batch // micro,
        "num_generations": cfg.grpo.num_generations_per_prompt, "max_new_tokens": cfg.max_response_length,
        "temperature": cfg.generation.temperature, "top_p": cfg.generation.top_p, "lr": opt.lr,
        "scheduler": cfg.policy.scheduler.name, "weight_decay": opt.weight_decay, "betas": list(opt.betas),
        "eps": opt.eps, "max_grad_norm": cfg.policy.max_grad_norm, "kl_coef": loss.kl_coef,
        "clip_low": loss.clip_low, "clip_high": loss.clip_high,
        "reward": {k: getattr(cfg.reward, k) for k in ("answer_format", "no_answer", "truncated", "format_weight")},
    }
    path = work / "trl-settings.json"
    path.write_text(json.dumps(settings, indent=1))
    return overrides, path


def run_ours(work: Path, overrides: list[str]) -> Side:
    command = [sys.executable, str(REPO / "examples" / "run_grpo_math.py"), *overrides]
    wall, load = run_logged("ours", command, work / "ours.log")
    return Side(**ours_steps(work / "ours" / "metrics.jsonl"), wall=wall, load=load)


def ours_steps(metrics: Path) -> dict:
    """Our per-step times (`timing/*` in metrics.jsonl) and generation backend."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    rows = [r for r in rows if "timing/step_s" in r]
    steps = [{"step_s": r["timing/step_s"], **{f"{p}_s": r.get(f"timing/{p}_s", 0.0) for p in PHASES}} for r in rows]
    return {"rows": steps, "generation": rows[0].get("generation/backend", "?") if rows else "?"}


def run_trl(work: Path, python: str, settings: Path) -> Side:
    wall, load = run_logged("TRL", [python, str(REPO / "bench" / "trl_grpo.py"), str(settings)], work / "trl.log")
    out = Path(json.loads(settings.read_text())["out"])
    return Side([json.loads(line) for line in out.read_text().splitlines()], "HF generate", wall, load)


def run_logged(name: str, command: list[str], log: Path) -> tuple[float, str]:
    """Run `command` to its end with its output in `log`; its wall time and the machine's load
    average at its start and end. A failure ends the bench with the log's tail."""
    print(f"{name}: running (log: {log})", flush=True)
    load_start, start = os.getloadavg()[0], time.perf_counter()
    with log.open("w") as f:
        code = subprocess.run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"{tail}\n{name} failed (exit status {code}) after {wall:.0f} s; whole log: {log}")
    print(f"{name}: done in {wall:.0f} s", flush=True)
    return wall, f"{load_start:.1f} -> {os.getloadavg()[0]:.1f}"


def medians(rows: list[dict]) -> dict[str, float]:
    """The median of each timing over the steps (keys present in every row)."""
    keys = [k for k in rows[0] if all(k in r for r in rows)] if rows else []
    return {k: statistics.median(r[k] for r in rows) for k in keys}


def render(header: str, ours: Side, trl: Side) -> str:
    """The report: median step and phases side by side, the ratio, each step, the total walls."""
    if not ours.rows or not trl.rows:
        raise SystemExit(f"no step times: ours logged {len(ours.rows)} steps, TRL {len(trl.rows)}")
    mo, mt = medians(ours.rows), medians(trl.rows)

    def cell(m: dict, key: str) -> str:
        return f"{m[key]:10.1f}" if key in m else f"{'-':>10}"

    lines = [header, f"generation: ours {ours.generation}, TRL {trl.generation}",
             f"{'median s':<22}{'ours':>10}{'TRL':>10}"]
    lines += [f"{label:<22}{cell(mo, key)}{cell(mt, key)}"
              for label, key in [("step", "step_s"), *((p, f"{p}_s") for p in PHASES)]]
    lines.append(f"{'total wall (start-up)':<22}{ours.wall:10.1f}{trl.wall:10.1f}")
    lines.append(f"ratio ours/TRL, median step: {mo['step_s'] / mt['step_s']:.2f}   "
                 f"total wall: {ours.wall / trl.wall:.2f}")
    lines.append("per step (s): ours " + " ".join(f"{r['step_s']:.1f}" for r in ours.rows)
                 + " | TRL " + " ".join(f"{r['step_s']:.1f}" for r in trl.rows))
    lines.append(f"load average (1 min) at start -> end: ours {ours.load}, TRL {trl.load} (each side's own 2 threads "
                 "add about 2; more means other jobs, which slow 2-thread torch far more than their share)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
