"""A trained checkpoint as a Hugging Face folder that transformers and vLLM load directly.

    export_checkpoint("<checkpoint_dir>")                    # the latest complete step, into hf_step_<N>/
    export_to_hf("<step>/policy/weights", "<out>", config_source="<model the run started from>",
                 tokenizer_dir="<step>/tokenizer", dtype="bfloat16")

The weights come from the DCP shards (fp32 master weights, HF parameter names), cast to `dtype`
and written as sharded safetensors with an index. `config.json` and `generation_config.json`
come from the model the run started from (its dtype set to the export's; a generation config is
built from the tokenizer's special tokens when the model has none), the tokenizer from the
checkpoint. With tied embeddings the head is dropped after checking that it equals the embedding.

Everything is written into a hidden sibling folder and renamed into place only after it loaded
back correctly, so a crash never leaves a half export that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from nemo_grpo.checkpoint.dcp_read import dcp_tensor_specs, load_dcp_state_dict
from nemo_grpo.checkpoint.hf_files import (
    ExportError,
    HfTensorPlan,
    plan_tensors,
    read_model_config,
    write_generation_config,
    write_shards,
    write_tokenizer,
)
from nemo_grpo.checkpoint.manager import CheckpointManager, verify_checkpoint
from nemo_grpo.models.precision import DTYPES
from nemo_grpo.models.source import resolve_model_path

EXPORT_DTYPES = DTYPES

__all__ = ["ExportError", "ExportSummary", "describe_export", "default_export_dir", "export_checkpoint",
           "export_to_hf", "find_step_dir", "load_dcp_state_dict", "sources_from_run_config", "verify_export"]


def export_to_hf(
    weights_dir: str | Path,
    out_dir: str | Path,
    *,
    config_source: str | Path,
    tokenizer_dir: str | Path | None = None,
    dtype: str = "bfloat16",
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
    """Write the DCP weights in `weights_dir` as an HF folder `out_dir`; returns its path.

    `config_source` is the model the run started from (HF folder, hub id or .gguf file);
    `tokenizer_dir` defaults to it. With `verify`, the folder is loaded back with transformers
    and every tensor must equal the DCP tensor cast to `dtype` before it becomes visible.
    """
    weights_dir, out_dir = Path(weights_dir), Path(out_dir).expanduser().absolute()
    if dtype not in EXPORT_DTYPES:
        raise ExportError(f"dtype '{dtype}' is not one of {', '.join(EXPORT_DTYPES)}")
    specs = dcp_tensor_specs(weights_dir)
    source = resolve_model_path(str(config_source))
    _check_out_dir(out_dir, overwrite, inputs=[weights_dir, Path(source), Path(tokenizer_dir or source)])
    config = read_model_config(source)
    plan = plan_tensors(config, {k: shape for k, (shape, _) in specs.items()}, where=weights_dir)
    _check_tied_copies(weights_dir, plan)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_shards(tmp, weights_dir, plan.names, EXPORT_DTYPES[dtype], max_shard_size)
        config.dtype = dtype
        config.architectures = config.architectures or [plan.architecture]
        config.save_pretrained(tmp)
        write_tokenizer(tmp, str(tokenizer_dir or source))
        write_generation_config(tmp, source, config)
        if verify:
            verify_export(tmp, weights_dir)
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def export_checkpoint(
    step_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    dtype: str = "bfloat16",
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
    """Export one checkpoint: a `step_<N>` folder, or a run's checkpoint_dir (its latest complete
    step). `out_dir` defaults to `default_export_dir(step)`; the model config and tokenizer come
    from the checkpoint's `config.yaml` and `tokenizer/`."""
    step = find_step_dir(step_dir)
    model_name, tokenizer_dir = sources_from_run_config(step / "config.yaml")
    return export_to_hf(
        step / "policy" / "weights", out_dir if out_dir is not None else default_export_dir(step),
        config_source=model_name, tokenizer_dir=tokenizer_dir, dtype=dtype, max_shard_size=max_shard_size,
        overwrite=overwrite, verify=verify,
    )


def find_step_dir(path: str | Path) -> Path:
    """A complete `step_<N>` checkpoint folder itself, or the latest one in a checkpoint_dir."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint folder")
    if (path / "policy" / "weights").is_dir():
        if not (path / "meta.json").is_file():
            raise ExportError(f"{path} is an incomplete checkpoint (no meta.json: its save never finished); "
                              "export a complete step_<N> folder")
        _refuse_damaged(path, CheckpointManager(path.parent))
        return path
    manager = CheckpointManager(path)
    latest = manager.latest()
    if latest is None:
        raise ExportError(f"{path} is neither a checkpoint (step_<N>/ with policy/weights and meta.json) "
                          "nor a checkpoint_dir that holds a complete one")
    _refuse_damaged(latest, manager)
    return latest


def _refuse_damaged(step_dir: Path, manager: CheckpointManager) -> None:
    """An export never reads a damaged checkpoint: refuse, naming the damaged file and the newest
    checkpoint beside it that verifies (to export instead)."""
    problem = verify_checkpoint(step_dir)
    if problem is None:
        return
    older = next((p for s, p in reversed(manager.complete()) if p != step_dir and verify_checkpoint(p) is None), None)
    instead = f"export {older} instead" if older else "no other checkpoint beside it verifies"
    raise ExportError(f"refusing to export {step_dir}: the checkpoint is damaged ({problem}); {instead}")


def default_export_dir(step_dir: str | Path) -> Path:
    """`<checkpoint_dir>/hf_step_<N>`: beside the checkpoint, not inside it, so that pruning
    checkpoints (keep_top_k) never deletes an export a later stage may be training from."""
    step_dir = Path(step_dir)
    return step_dir.parent / f"hf_{step_dir.name}"


def sources_from_run_config(config_path: str | Path) -> tuple[str, str]:
    """(model the run started from, tokenizer to ship) of a run's saved config.yaml: the
    tokenizer is the checkpoint's `tokenizer/` copy beside it when present."""
    import yaml

    config_path = Path(config_path)
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no such run config (pass <checkpoint>/config.yaml)")
    policy = (yaml.safe_load(config_path.read_text()) or {}).get("policy") or {}
    model_name = policy.get("model_name")
    if not model_name or model_name == "???":
        raise ExportError(f"{config_path} has no policy.model_name: pass the config.yaml saved in the checkpoint")
    copy = config_path.parent / "tokenizer"
    tokenizer = str(copy) if copy.is_dir() else (policy.get("tokenizer_name") or model_name)
    return str(model_name), tokenizer


@torch.no_grad()
def verify_export(hf_dir: str | Path, weights_dir: str | Path) -> None:
    """Load `hf_dir` with transformers; every tensor must equal the DCP tensor cast to the
    export's dtype, tied heads must be tied, and the tokenizer must load. Raises ExportError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir = Path(hf_dir)
    dtype = EXPORT_DTYPES[json.loads((hf_dir / "config.json").read_text())["dtype"]]
    with _no_progress_bar():
        model, info = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype, output_loading_info=True)
    problems = [f"{kind}: {', '.join(sorted(names)[:5])}" for kind, names in info.items() if names]
    if model.config.tie_word_embeddings and model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        problems.append("the head is not tied to the embedding")
    loaded = model.state_dict()
    for group in _shard_groups(hf_dir):
        for name, tensor in load_dcp_state_dict(weights_dir, group).items():
            if not torch.equal(loaded[name], tensor.to(dtype)):
                problems.append(f"{name} differs from the checkpoint")
    try:
        AutoTokenizer.from_pretrained(hf_dir)
    except Exception as exc:  # any failure here is a broken export
        problems.append(f"the tokenizer does not load ({exc})")
    if problems:
        raise ExportError(f"the export in {hf_dir} does not load back as written: " + "; ".join(problems[:10]))


@dataclass
class ExportSummary:
    parameters: int
    dtype: str
    shards: int
    bytes: int


def describe_export(hf_dir: str | Path) -> ExportSummary:
    """Parameter count, dtype, shard count and size of an export, from file headers only."""
    from safetensors import safe_open

    hf_dir = Path(hf_dir)
    files = sorted(hf_dir.glob("*.safetensors"))
    parameters = 0
    for path in files:
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                parameters += math.prod(f.get_slice(name).get_shape())
    dtype = json.loads((hf_dir / "config.json").read_text()).get("dtype", "?")
    return ExportSummary(parameters, dtype, len(files), sum(p.stat().st_size for p in files))


@contextlib.contextmanager
def _no_progress_bar():
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _shard_groups(hf_dir: Path) -> list[list[str]]:
    """The tensor names of each shard (one group per file keeps memory to one shard)."""
    from safetensors import safe_open

    groups = []
    for path in sorted(hf_dir.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            groups.append(list(f.keys()))
    return groups


def _check_tied_copies(weights_dir: Path, plan: HfTensorPlan) -> None:
    """A tied head that the checkpoint also stores must equal the embedding it is dropped for."""
    for head, embedding in plan.dropped_tied.items():
        pair = load_dcp_state_dict(weights_dir, [head, embedding])
        if not torch.equal(pair[head], pair[embedding]):
            raise ExportError(
                f"{weights_dir}: {head} differs from {embedding}, but the model config ties them "
                "(tie_word_embeddings): is --config the config of the run that wrote these weights?"
            )


def _check_out_dir(out_dir: Path, overwrite: bool, *, inputs: list[Path]) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a folder: choose another output path")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportError(f"{out_dir} is not empty: choose another output folder, or pass --overwrite "
                              "(overwrite=True) to replace it")
        for path in inputs:
            resolved = path.expanduser().absolute()
            if resolved == out_dir or out_dir in resolved.parents:
                raise ExportError(f"refusing to overwrite {out_dir}: it holds the export's own input {path}")


def _publish(tmp: Path, out_dir: Path) -> None:
    """Make the finished export visible under its name (replacing what was there)."""
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)
