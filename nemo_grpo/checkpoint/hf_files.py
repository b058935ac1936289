"""The pieces of a Hugging Face model folder: which tensors it holds, safetensors shards, configs."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nemo_grpo.checkpoint.dcp_read import dcp_tensor_specs, load_dcp_state_dict
from nemo_grpo.models.source import ModelLoadError, first_line, load_tokenizer
from nemo_grpo.utils.errors import UserError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class ExportError(UserError, ValueError):
    """An export that cannot be made as asked; the message says what to change."""


@dataclass
class HfTensorPlan:
    names: list[str]  # the tensors to write, in the model's own order
    dropped_tied: dict[str, str]  # tied tensor -> the one it equals: in the checkpoint, not written
    architecture: str  # the model class, for config.architectures


def read_model_config(source: str):
    """The transformers config of an HF folder or hub id, or a ModelLoadError saying what to do."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read the model config of '{source}' (the model the run started from): {first_line(exc)}. "
            "The export takes config.json from it; make it reachable (a local HF folder, or the hub cache)"
        ) from None


def plan_tensors(config: Any, shapes: dict[str, torch.Size], *, where: Path) -> HfTensorPlan:
    """Match the checkpoint's tensors to the model `config` describes (built on the meta device,
    no memory): every tensor present with its shape, nothing extra; tied copies are dropped."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    if getattr(config, "tie_word_embeddings", False) and not tied:  # transformers without the tied-key map
        tied = {"lm_head.weight": "model.embed_tokens.weight"}
    names = [name for name in expected if name not in tied]
    missing = [name for name in names if name not in shapes]
    extra = [name for name in shapes if name not in expected]
    wrong = [f"{name} {tuple(shapes[name])} vs {tuple(expected[name])}"
             for name in names if name in shapes and shapes[name] != expected[name]]
    if missing or extra or wrong:
        found = "; ".join(f"{label}: {', '.join(items[:4])}" for label, items in
                          (("missing", missing), ("unexpected", extra), ("shape (checkpoint vs config)", wrong)) if items)
        raise ExportError(
            f"the weights in {where} do not fit the {config.model_type} model config ({found}): "
            "pass the config.yaml of the run that wrote them"
        )
    dropped = {name: source for name, source in tied.items() if name in shapes}
    return HfTensorPlan(names, dropped, type(model).__name__)


def parse_size(size: int | str) -> int:
    """Bytes in `size`: an int, or text such as "5GB", "500MB", "2GiB"."""
    if isinstance(size, int):
        return size
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(size))
    if not match or match.group(2).upper() not in units or float(match.group(1)) <= 0:
        raise ExportError(f"max shard size '{size}' is not a size such as 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * units[match.group(2).upper()])


def split_shards(sizes: dict[str, int], max_bytes: int) -> list[list[str]]:
    """Consecutive groups of names whose sizes add up to at most `max_bytes` (a larger tensor
    gets a shard of its own)."""
    shards: list[list[str]] = []
    used = max_bytes
    for name, size in sizes.items():
        if used + size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


def write_shards(out: Path, weights_dir: Path, names: list[str], dtype: torch.dtype, max_shard_size: int | str) -> list[str]:
    """Write `names` from the DCP folder as safetensors in `dtype`, one shard in memory at a
    time: `model.safetensors`, or numbered shards plus `model.safetensors.index.json`."""
    from safetensors.torch import save_file

    specs = dcp_tensor_specs(weights_dir)
    itemsize = torch.empty((), dtype=dtype).element_size()
    sizes = {name: specs[name][0].numel() * itemsize for name in names}
    shards = split_shards(sizes, parse_size(max_shard_size))
    files = [SINGLE_FILE] if len(shards) == 1 else [
        f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    weight_map = {}
    for file, group in zip(files, shards):
        tensors = {name: t.to(dtype).contiguous() for name, t in load_dcp_state_dict(weights_dir, group).items()}
        save_file(tensors, str(out / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, file))
    if len(files) > 1:
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
        (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return files


def write_tokenizer(out: Path, source: str) -> None:
    """A checkpoint's `tokenizer/` folder (tokenizer files only) is copied byte for byte, so the
    export ships exactly what the run used; a model folder or hub id is loaded and saved."""
    path = Path(source)
    if path.is_dir() and (path / "tokenizer_config.json").is_file() and not (path / "config.json").exists():
        for file in path.iterdir():
            if file.is_file():
                shutil.copy2(file, out / file.name)
    else:
        load_tokenizer(source).save_pretrained(out)


def write_generation_config(out: Path, source: str, config: Any) -> None:
    """The source model's generation_config.json when it has one; else one with the BOS, EOS and
    pad ids of the tokenizer already in `out` (or the config's), so `generate` stops where
    training did."""
    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(source)
    except (OSError, ValueError):
        tokenizer = load_tokenizer(str(out))

        def pick(name: str):
            value = getattr(tokenizer, name, None)
            return value if value is not None else getattr(config, name, None)

        generation = GenerationConfig(bos_token_id=pick("bos_token_id"), eos_token_id=pick("eos_token_id"),
                                      pad_token_id=pick("pad_token_id"))
    generation.save_pretrained(out)
