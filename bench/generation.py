"""Generation throughput: HF `generate` vs vLLM on the same tiny model and prompts, plus refit time.

    uv run --no-sync python bench/generation.py [--prompts 16 --n 4 --max-new-tokens 64 --repeats 2]

Both backends get the same random-weight tiny Qwen2 (tokenizer from shared/models), the same
prompts and sampling settings. Each backend runs one warm-up batch, then `--repeats` timed ones;
tokens/s = response tokens / wall seconds of the timed batches. HF runs first with torch's default
threads; vLLM-CPU then runs in-process with one thread (see docs/generation.md). Refit = one full
`update_weights` of the policy state dict into the running engine.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROBLEMS = [
    "What is 17 * 23?", "Solve 2x + 7 = 19 for x.", "How many primes are below 30?",
    "Simplify (x^2 - 9)/(x - 3).", "What is the sum of the first 50 positive integers?",
    "Find the area of a circle of radius 3.", "Compute 2^10 - 10^2.", "What is gcd(84, 126)?",
]


def timed(backend, prompts, params, repeats: int) -> tuple[float, int, float]:
    t0 = time.perf_counter()
    backend.generate(prompts, params)  # warm-up
    warm = time.perf_counter() - t0
    tokens, seconds = 0, 0.0
    for r in range(repeats):
        t0 = time.perf_counter()
        out = backend.generate(prompts, params.__class__(**{**params.__dict__, "seed": params.seed + r + 1}))
        seconds += time.perf_counter() - t0
        tokens += sum(len(o.response_ids) for o in out)
    return tokens / seconds, tokens, warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default=str(REPO.parent / "shared" / "models" / "qwen2.5-math-1.5b"))
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tied", action="store_true")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from nemo_grpo.generation.config import GenerationConfig
    from nemo_grpo.generation.hf_backend import HFGenerationBackend
    from nemo_grpo.generation.interface import SamplingParams
    from nemo_grpo.models.build import build_random_model, tiny_config

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    cfg = tiny_config("qwen2", tok, tie_word_embeddings=args.tied)
    model = build_random_model(cfg, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    prompts = [tok(PROBLEMS[i % len(PROBLEMS)] + f" (variant {i})")["input_ids"] for i in range(args.prompts)]
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"model: tiny qwen2 (hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, vocab {cfg.vocab_size}, "
          f"tied={args.tied}), {n_params / 1e6:.1f} M params, fp32")
    print(f"batch: {args.prompts} prompts x n={args.n}, max_new_tokens={args.max_new_tokens}, temperature 1.0, "
          f"{args.repeats} timed batches after 1 warm-up")

    hf = HFGenerationBackend("", tok, model=model)
    hf_tps, hf_tokens, hf_warm = timed(hf, prompts, params, args.repeats)
    print(f"HF generate: {hf_tps:8.1f} tokens/s ({hf_tokens} tokens; warm-up batch {hf_warm:.1f} s; "
          f"torch threads {torch.get_num_threads()})")

    from nemo_grpo.generation.vllm_backend import VllmGenerationBackend

    gcfg = GenerationConfig(backend="vllm")
    gcfg.vllm.enforce_eager = True
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        vllm = VllmGenerationBackend(tmp, tok, gcfg, dtype="float32", seed=0, max_model_len=512)
        refit_first = vllm.update_weights(model.state_dict(), version=0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1e-3 * torch.randn_like(p))
        refit = [vllm.update_weights(model.state_dict(), version=v) for v in (1, 2, 3)]
        v_tps, v_tokens, v_warm = timed(vllm, prompts, params, args.repeats)
        print(f"vLLM:        {v_tps:8.1f} tokens/s ({v_tokens} tokens; warm-up batch {v_warm:.1f} s; "
              f"in-process, torch threads {torch.get_num_threads()}, engine start {vllm.start_seconds:.1f} s)")
        state_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
        print(f"refit:       {min(refit):8.3f} s best of 3 (first refit {refit_first:.3f} s; path {vllm.refit_path}; "
              f"{state_mb:.0f} MiB state dict)")
        print(f"speed-up vLLM / HF: {v_tps / hf_tps:.2f}x")
        vllm.shutdown()


if __name__ == "__main__":
    main()
