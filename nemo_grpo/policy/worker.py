"""One policy rank: an FSDP2-sharded HF model (a plain one on a single CPU rank), its optimizer, and
the train / log-prob / save calls.

The driver creates one `PolicyWorker` per rank (Ray actors, or one object in the driver's process
with `cluster.launcher: local`; see `nemo_grpo.distributed`) and calls every method on all ranks
at once. Each rank also owns a generation engine (`engine`): it samples the rank's share of the
prompts, and `refit` gathers the rank's shards straight into it, on the rank's device.

Each rank receives its own shard of the batch; the loss of each micro-batch is normalised by
counts of the WHOLE optimisation batch (over micro-batches and ranks, computed by the driver), so
the gradients add up to exactly the full-batch gradient.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh

from nemo_grpo.algorithms.aggregation import Normalizer
from nemo_grpo.algorithms.policy_loss import SHARE_METRICS, LossBatch, policy_loss
from nemo_grpo.algorithms.numerics import gen_train_kl, token_mult_prob_error
from nemo_grpo.algorithms.batch import TrainBatch
from nemo_grpo.algorithms.packing import pack, pack_layout, plan_batch, unpack
from nemo_grpo.algorithms.shared_prompts import prompt_lengths, shared_layout
from nemo_grpo.checkpoint.background import BackgroundWriter
from nemo_grpo.generation.engine import EngineSpec, engine_dtype, start_engine
from nemo_grpo.generation.interface import Rollout, SamplingParams
from nemo_grpo.policy.fused_head import causal_logprobs_and_entropy, gathered_logprobs_and_entropy
from nemo_grpo.policy.model import load_hf_model, lr_lambda, make_optimizer, model_fingerprint, reshard, shard_model
from nemo_grpo.policy.packed_attention import PACKED_ATTENTION
from nemo_grpo.policy.refit import weight_chunks
from nemo_grpo.utils.faults import maybe_crash, maybe_no_space
from nemo_grpo.utils.memory import bound_heap_growth, release_free_heap


class PolicyWorker:
    def __init__(self, rank: int, world_size: int, master_addr: str, master_port: int, policy_cfg, loss_cfg,
                 *, device: str, temperature: float, total_optimizer_steps: int, seed: int, need_reference: bool,
                 num_threads: int | None = None, engine: EngineSpec | None = None):
        self.rank, self.world_size = rank, world_size
        self.policy_cfg, self.loss_cfg, self.temperature = policy_cfg, loss_cfg, temperature
        on_gpu = device == "cuda"
        if on_gpu:  # Ray makes the rank's own GPU the only visible one
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        self.device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
        if num_threads:
            torch.set_num_threads(num_threads)
        if not on_gpu:
            bound_heap_growth()  # before the model and its optimizer state are allocated
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port))
        dist.init_process_group("nccl" if on_gpu else "gloo", rank=rank, world_size=world_size)
        self.mesh = init_device_mesh(self.device.type, (world_size,))
        torch.manual_seed(seed)

        self.model = self._load(policy_cfg.model_name)
        self.optimizer = make_optimizer(self.model, policy_cfg.optimizer)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(policy_cfg.scheduler, total_optimizer_steps))
        self.reference = None
        if need_reference:
            self.reference = self._load(policy_cfg.model_name)
            self.reference.requires_grad_(False)
        # After the process group: an in-process vLLM joins this world (each rank its own engine).
        self.engine = start_engine(engine, device=device) if engine is not None else None
        self.engine_spec = engine
        self.background: BackgroundWriter | None = None  # created by the first background save

    def _load(self, model_name: str) -> torch.nn.Module:
        model = load_hf_model(model_name, device=self.device)
        self.fingerprint = model_fingerprint(model)
        cfg = self.policy_cfg
        if cfg.max_tokens_per_micro_batch is not None:  # every forward of this worker is packed
            model.set_attn_implementation(PACKED_ATTENTION)
        return shard_model(model, self.mesh, precision=cfg.precision, cpu_offload=cfg.cpu_offload,
                           activation_checkpointing=cfg.activation_checkpointing)

    # ---- forward helpers -------------------------------------------------------------------
    def _forward(self, model, batch: TrainBatch, *, with_entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropy [B, T-1] of a micro-batch: padded rows, or (with
        policy.max_tokens_per_micro_batch) the rows packed into one sequence and the per-token
        results unpacked back to the same [B, T-1] layout (with policy.share_prompts, each distinct
        prompt once: `_forward_shared`). With policy.fused_lm_head the output
        layer runs chunk by chunk inside the log-prob computation (policy/fused_head.py), on the
        response positions only (`batch.mask`; every other position is 0, as callers mask them)."""
        fused = self.policy_cfg.fused_lm_head
        if self.policy_cfg.share_prompts:  # the config refuses it without max_tokens_per_micro_batch
            logp, entropy = self._forward_shared(model, batch, fused)
        elif self.policy_cfg.max_tokens_per_micro_batch is not None:
            layout = pack_layout(batch.attention_mask)
            ids = pack(batch.input_ids, layout).to(self.device)
            scored = pack(F.pad(batch.mask.bool(), (0, 1), value=False), layout)[:, :-1]
            cu = layout.cu_seqlens.to(self.device)
            logp, entropy = causal_logprobs_and_entropy(
                model, ids, temperature=self.temperature, fused=fused,
                chunk_size=self.policy_cfg.logprob_chunk_tokens, scored=scored,
                position_ids=layout.position_ids.to(self.device),
                cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=layout.max_len, max_length_k=layout.max_len)
            logp, entropy = unpack(logp[0], layout), unpack(entropy[0], layout)
        else:
            logp, entropy = causal_logprobs_and_entropy(
                model, batch.input_ids.to(self.device), temperature=self.temperature, fused=fused,
                chunk_size=self.policy_cfg.logprob_chunk_tokens, scored=batch.mask.bool(),
                attention_mask=batch.attention_mask.to(self.device))
        if not with_entropy_grad:
            entropy = entropy.detach()
        return logp.float(), entropy.float()

    def _forward_shared(self, model, batch: TrainBatch, fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The packed forward with each distinct prompt once (algorithms/shared_prompts.py): the
        response positions' log-probs and entropy, scattered into [B, T-1] (0 elsewhere)."""
        layout = shared_layout(batch.input_ids, batch.attention_mask, prompt_lengths(batch))
        rows, cols, source, targets = layout.predictions(batch.mask.bool(), batch.input_ids)
        cu = layout.cu_pieces.to(self.device)
        logp, entropy = gathered_logprobs_and_entropy(
            model, batch.input_ids.reshape(-1)[layout.gather][None].to(self.device), source.to(self.device),
            targets.to(self.device), temperature=self.temperature, fused=fused,
            chunk_size=self.policy_cfg.logprob_chunk_tokens, position_ids=layout.position_ids.to(self.device),
            cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=layout.max_len, max_length_k=layout.max_len,
            prefix_piece=layout.prefix_piece.to(self.device))
        at = (rows.to(self.device), cols.to(self.device))
        zeros = torch.zeros(batch.mask.shape, dtype=logp.dtype, device=self.device)
        return zeros.index_put(at, logp), zeros.index_put(at, entropy)

    def _micro_batches(self, batch: TrainBatch | None, size: int,
                       sizes: list[int] | None = None) -> list[tuple[torch.Tensor, TrainBatch]]:
        """(rows of `batch`, micro-batch) pairs: `size` rows each, or, packed, the driver's plan
        (`sizes`: consecutive rows per micro-batch) or on one rank this worker's own plan."""
        if batch is None:
            return []
        budget = self.policy_cfg.max_tokens_per_micro_batch
        if budget is None:
            groups = [list(range(i, min(i + size, len(batch)))) for i in range(0, len(batch), size)]
        elif sizes is not None:
            if sum(sizes) != len(batch):
                raise ValueError(f"micro-batch sizes {sizes} do not cover the {len(batch)} rows")
            bounds = [0] + torch.tensor(sizes).cumsum(0).tolist()
            groups = [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
        elif self.world_size == 1:
            groups = plan_batch(batch, 1, budget, self.policy_cfg.share_prompts)[0]
        else:  # ranks planning alone could run different numbers of micro-batches and hang FSDP
            raise ValueError("packed micro-batches on several ranks need the driver's plan (micro_sizes)")
        return [(torch.tensor(g, dtype=torch.long), batch.select(g)) for g in groups]

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch, micro_sizes: list[int] | None = None, *,
                 reference: bool = False) -> torch.Tensor:
        """Log-probs [B, T-1] of this rank's batch under the current (or reference) policy."""
        model = self.reference if reference else self.model
        if model is None:
            raise RuntimeError("reference log-probs asked for, but no reference model was loaded")
        size = self.policy_cfg.logprob_micro_batch_size or self.policy_cfg.train_micro_batch_size
        out = torch.zeros(batch.mask.shape)
        for rows, part in self._micro_batches(batch, size, micro_sizes):
            logp, _ = self._forward(model, part, with_entropy_grad=False)
            out[rows, : logp.shape[1]] = logp.cpu() * part.mask
        reshard(model)  # FSDP2 keeps the root unsharded after a forward without backward
        return out

    @torch.no_grad()
    def forward_stats(self, batch: TrainBatch | None, micro_sizes: list[int] | None = None) -> dict[str, float]:
        """Sums over the response tokens of rows that skip training (a forward, no backward), so
        the step's entropy and numerics-guard metrics still cover every response: full-vocabulary
        entropy, exp(|logp_train - logp_gen|) and the k3 estimate of KL(gen || train)."""
        sums = {"entropy": 0.0, "token_mult_prob_error": 0.0, "gen_kl_error": 0.0, "tokens": 0.0}
        size = self.policy_cfg.logprob_micro_batch_size or self.policy_cfg.train_micro_batch_size
        for _, part in self._micro_batches(batch, size, micro_sizes):
            logp, entropy = self._forward(self.model, part, with_entropy_grad=False)
            mask = part.mask.to(entropy.device)
            count = float(mask.sum())
            if not count:
                continue
            sums["entropy"] += float((entropy * mask).sum())
            gen = part.gen_logprobs.to(logp.device)
            sums["token_mult_prob_error"] += token_mult_prob_error(logp, gen, mask) * count
            sums["gen_kl_error"] += gen_train_kl(logp, gen, mask) * count
            sums["tokens"] += count
        reshard(self.model)  # FSDP2 keeps the root unsharded after a forward without backward
        return sums

    # ---- training --------------------------------------------------------------------------
    def train(self, minibatches: list[TrainBatch | None], normalizers: list[Normalizer],
              micro_sizes: list[list[int] | None] | None = None) -> dict[str, float]:
        """One optimizer step per minibatch (this rank's share, None when it has no rows);
        `micro_sizes`: per minibatch, the rows of each packed micro-batch (the driver's plan).

        Returns: `loss` (mean over optimizer steps of this rank's share of each step's loss),
        `grad_norm` (mean over steps), `lr` (of the last step), `tokens` (trained tokens), the
        loss's terms (`SHARE_METRICS`) like `loss`, and the other loss metrics as token-weighted
        means over every trained token of the call.
        """
        start = time.perf_counter()
        self.model.train()
        sums: dict[str, float] = {}
        tokens = losses = norms = 0.0
        lr = self.scheduler.get_last_lr()[0]
        plans = micro_sizes if micro_sizes is not None else [None] * len(minibatches)
        for minibatch, normalizer, plan in zip(minibatches, normalizers, plans, strict=True):
            self.optimizer.zero_grad(set_to_none=True)  # the last step's gradients free before this backward
            for _, micro in self._micro_batches(minibatch, self.policy_cfg.train_micro_batch_size, plan):
                self._release_heap()  # the last micro-batch's activations: its peak does not stack on them
                loss, metrics = self._micro_step(micro, normalizer)
                losses += float(loss)
                count = float(micro.mask.sum())
                tokens += count
                for key, value in metrics.items() if count else ():  # padding rows carry no metrics
                    _accumulate(sums, key, float(value), 1.0 if key in SHARE_METRICS else count)
            self._release_heap()
            norms += self._clip_and_step()
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)  # the gradients, before the engine samples again
        self.model.eval()
        self._release_heap()  # the step's activations, before the engine samples again
        steps = max(len(minibatches), 1)
        result = {k: v if k.endswith(EXTREMES) else v / (steps if k in SHARE_METRICS else tokens)
                  for k, v in sums.items()} if tokens else {}
        result.update(loss=losses / steps, grad_norm=norms / steps, lr=lr, tokens=tokens,
                      train_time_s=time.perf_counter() - start)
        return result

    def _micro_step(self, micro: TrainBatch, normalizer: Normalizer):
        cfg = self.loss_cfg
        logp, entropy = self._forward(self.model, micro, with_entropy_grad=cfg.entropy_coef != 0.0)
        loss_batch = LossBatch(
            logprobs=logp, mask=micro.mask.to(self.device), advantages=micro.advantages.to(self.device),
            old_logprobs=None if micro.old_logprobs is None else micro.old_logprobs.to(self.device),
            ref_logprobs=None if micro.ref_logprobs is None else micro.ref_logprobs.to(self.device),
            gen_logprobs=micro.gen_logprobs.to(self.device), entropy=entropy,
            rewards=micro.rewards.to(self.device),
        )
        loss, metrics = policy_loss(loss_batch, cfg, normalizer)
        if micro.mask.sum():  # the numerics guard: engine vs trainer before this step's update
            metrics["gen_kl_error"] = torch.tensor(gen_train_kl(
                loss_batch.old_logprobs if loss_batch.old_logprobs is not None else logp.detach(),
                loss_batch.gen_logprobs, loss_batch.mask))
        # FSDP averages gradients over ranks; the normaliser already divides by the global
        # count, so scale up by world_size to make the ranks' gradients add up instead.
        (loss * self.world_size).backward()
        return loss.detach(), {k: v for k, v in metrics.items() if torch.is_tensor(v) and v.numel() == 1}

    def _release_heap(self) -> None:
        """CPU: the C heap's free pages back to the system between phases (GPU memory has its own allocator)."""
        if self.device.type == "cpu":
            release_free_heap()

    def _clip_and_step(self) -> float:
        for param in self.model.parameters():  # a step without any backward still decays and moves moments
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        max_norm = self.policy_cfg.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm if max_norm else float("inf"))
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        self.optimizer.step()
        return float(norm)

    # ---- generation: this rank's engine ------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Rollout]:
        """Sample this rank's share of a request (`params.prompt_offset`: where it starts)."""
        rollouts = self._engine().generate(prompts, params)
        self._release_heap()  # the engine's batch buffers, before the policy trains
        return rollouts

    def refit(self, version: int) -> dict[str, float]:
        """Load the current weights into this rank's engine, gathered from the shards chunk by chunk
        on this rank's device (a collective: call on every rank). Skipped when the engine already
        has `version`. Returns the seconds and the bytes gathered."""
        engine = self._engine()
        if engine.version == version:
            return {"seconds": 0.0, "bytes": 0.0}
        start = time.perf_counter()
        spec = self.engine_spec
        dtype = engine_dtype(spec.precision, self.device.type, spec.config.precision)
        counter: dict[str, int] = {}
        chunks = weight_chunks(self.model, dtype=dtype, device=self.device, counter=counter,
                               chunk_bytes=int(spec.config.vllm.refit_chunk_mb) * 2**20)
        engine.load_weight_chunks(chunks, version=version)
        return {"seconds": time.perf_counter() - start, "bytes": float(counter.get("bytes", 0))}

    def sleep_engine(self) -> None:
        """The engine releases its memory while the policy trains (GPU: it wakes to generate; CPU:
        its KV cache and weights, back at the next refit)."""
        self._engine().sleep()
        self._release_heap()  # the engine's packed weights are small blocks of the heap

    def engine_name(self) -> str:
        return self._engine().name

    def _engine(self):
        if self.engine is None:
            raise RuntimeError("this policy rank was started without a generation engine")
        return self.engine

    # ---- weights out: refit and checkpoints ------------------------------------------------
    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Unsharded weights on CPU, on rank 0 only (a collective: call on every rank)."""
        sd = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return sd if self.rank == 0 else None

    def save_checkpoint(self, step_dir: str, step: int | None = None, background: str = "none") -> None:
        """DCP: `policy/weights` (model) and `policy/optimizer`, plus per-rank scheduler and RNG.
        `background` "process" or "thread": return once the state is staged, the DCP folders are
        written in the background (`checkpoint/background.py`; `save_done` / `wait_save` report it).
        `step` only serves the injected faults of tests (a full disk while the shards are written,
        a crash between the two folders of a background write)."""
        root = Path(step_dir) / "policy"
        self.wait_save()  # at most one save in flight
        root.mkdir(parents=True, exist_ok=True)
        if background != "none":
            self._writer(background).start(
                [(get_model_state_dict(self.model), str(root / "weights")),
                 (get_optimizer_state_dict(self.model, self.optimizer), str(root / "optimizer"))],
                before_each=lambda index, folder: self._save_faults(step, index, folder))
        else:
            dcp.save(get_model_state_dict(self.model), checkpoint_id=str(root / "weights"))
            self._save_faults(step, 1, str(root / "optimizer"))
            dcp.save(get_optimizer_state_dict(self.model, self.optimizer), checkpoint_id=str(root / "optimizer"))
        torch.save({"scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                    "fingerprint": self.fingerprint}, root / f"extra_state_rank{self.rank}.pt")
        if background == "none":
            dist.barrier()

    def _save_faults(self, step: int | None, index: int, folder: str) -> None:
        """Tests: before the optimizer folder (index 1) of step `step`, a full disk or a crash."""
        if step is not None and index == 1:
            maybe_no_space(step, Path(folder) / f"__{self.rank}_0.distcp")
            maybe_crash("background_write", step)

    def _writer(self, mode: str) -> BackgroundWriter:
        if self.background is None or self.background.mode != mode:
            self.background = BackgroundWriter(mode, pinned=self.device.type == "cuda")
        return self.background

    def save_done(self) -> bool:
        """Whether this rank has no checkpoint write running; raises the error of one that failed."""
        return self.background is None or self.background.done()

    def wait_save(self) -> None:
        """Block until this rank's background checkpoint write is on disk; raises its error."""
        if self.background is not None:
            self.background.wait()

    def load_checkpoint(self, step_dir: str) -> tuple[float, float] | None:
        """Restore weights, optimizer, scheduler and RNG. A `policy.optimizer.lr` that differs from
        the checkpoint's is applied to the restored optimizer and schedule: returns (old, new)."""
        root = Path(step_dir) / "policy"
        model_sd = get_model_state_dict(self.model)
        dcp.load(model_sd, checkpoint_id=str(root / "weights"))
        set_model_state_dict(self.model, model_sd)
        optim_sd = get_optimizer_state_dict(self.model, self.optimizer)
        dcp.load(optim_sd, checkpoint_id=str(root / "optimizer"))
        set_optimizer_state_dict(self.model, self.optimizer, optim_sd)
        extra = torch.load(root / f"extra_state_rank{self.rank}.pt", weights_only=False)
        self.scheduler.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["torch_rng"])
        return apply_peak_lr(self.optimizer, self.scheduler, self.policy_cfg.optimizer.lr)

    def state_bytes(self) -> int:
        """The bytes of the model and optimizer state a checkpoint writes, over all ranks (an FSDP2
        parameter is a DTensor whose numel is the whole tensor's): parameters x dtype bytes, plus the
        optimizer's state tensors, counted as AdamW's two parameter-sized moments before the first step."""
        total = 0
        for param in self.model.parameters():
            size = param.numel() * param.element_size()
            state = [v for v in self.optimizer.state.get(param, {}).values() if torch.is_tensor(v)]
            total += size + (sum(v.numel() * v.element_size() for v in state) if state else 2 * size)
        return total

    def get_fingerprint(self) -> dict[str, Any]:
        return self.fingerprint

    def shutdown(self) -> None:
        if self.background is not None:  # a write in flight ends first (its error was reported or is moot)
            try:
                self.background.close()
            except Exception:
                pass
            self.background = None
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
        if dist.is_initialized():
            dist.destroy_process_group()


def apply_peak_lr(optimizer: torch.optim.Optimizer, scheduler, lr: float) -> tuple[float, float] | None:
    """Make `lr` the peak learning rate of a restored optimizer and its LambdaLR schedule: each
    param group's `initial_lr` and the scheduler's `base_lrs` (what the schedule multiplies), and
    the current `lr` at the schedule's position. Returns (old, new), or None when nothing changed."""
    old = scheduler.base_lrs[0]
    if all(base == lr for base in scheduler.base_lrs):
        return None
    scheduler.base_lrs = [lr] * len(optimizer.param_groups)
    for group, lam in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = lr
        group["lr"] = lr * lam(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return old, lr


EXTREMES = ("_min", "_max")


def _accumulate(sums: dict[str, float], key: str, value: float, weight: float) -> None:
    """Token-weighted sums, except minima and maxima, which stay extremes."""
    if key.endswith("_min"):
        sums[key] = min(sums.get(key, value), value)
    elif key.endswith("_max"):
        sums[key] = max(sums.get(key, value), value)
    else:
        sums[key] = sums.get(key, 0.0) + value * weight
