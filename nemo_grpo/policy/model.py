"""Loading the policy model, sharding it with FSDP2 (not on a single CPU rank), and its optimizer and schedule."""

from __future__ import annotations

import math

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from transformers import AutoModelForCausalLM

from nemo_grpo.models.precision import DTYPES
from nemo_grpo.models.source import resolve_model_path

def load_hf_model(model_name: str, *, device: torch.device) -> torch.nn.Module:
    """Load fp32 master weights (a hub id, an HF folder, or a .gguf file converted once)."""
    path = resolve_model_path(model_name)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.config.use_cache = False
    return model.to(device)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: cannot find decoder layers at model.model.layers to shard")
    return list(layers)


def shard_model(
    model: torch.nn.Module, mesh: DeviceMesh, *, precision: str, cpu_offload: bool, activation_checkpointing: bool
) -> torch.nn.Module:
    """FSDP2: each decoder layer is one unit, the rest (embeddings, norm, head) the root unit.

    On GPU, parameters are gathered in `precision` and gradients reduced in fp32 while the master
    weights stay fp32; on CPU everything is fp32. On a single CPU rank there is nothing to shard,
    cast or offload, so the model stays a plain module: FSDP2 there would only add a gathered copy
    of each unit and a copy of each gradient (on the demo's training step: 0.12 GiB more memory
    and about 10% more time, bench/results/demo_train_profile_cpu.txt). A checkpoint of either kind
    loads into the other (DCP matches tensors by name and global shape).
    """
    on_gpu = mesh.device_type == "cuda"
    if activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not on_gpu and mesh.size() == 1:
        return model
    mp = MixedPrecisionPolicy(param_dtype=DTYPES[precision], reduce_dtype=torch.float32) if on_gpu else MixedPrecisionPolicy()
    offload = CPUOffloadPolicy() if (cpu_offload and on_gpu) else None
    kwargs = dict(mesh=mesh, mp_policy=mp, **({"offload_policy": offload} if offload else {}))
    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def reshard(model: torch.nn.Module) -> None:
    """Free the parameters FSDP2 keeps gathered after a forward without backward (the root unit);
    nothing to do for a model that is not sharded."""
    if isinstance(model, FSDPModule):
        model.reshard()


def make_optimizer(model: torch.nn.Module, opt_cfg) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        model.parameters(), lr=opt_cfg.lr, betas=tuple(opt_cfg.betas), eps=opt_cfg.eps,
        weight_decay=opt_cfg.weight_decay,
    )


def lr_lambda(sched_cfg, total_steps: int):
    """Multiplier of the peak lr at optimizer step `s`: linear warm-up, then constant/linear/cosine."""
    warmup = sched_cfg.warmup_steps
    floor = sched_cfg.min_lr_ratio

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if sched_cfg.name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if sched_cfg.name == "linear":
            return floor + (1 - floor) * (1 - progress)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def model_fingerprint(model_or_config) -> dict:
    """The architecture facts a checkpoint must match to be resumed into this model."""
    cfg = getattr(model_or_config, "config", model_or_config)
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size", "tie_word_embeddings")
    return {k: getattr(cfg, k, None) for k in keys}

