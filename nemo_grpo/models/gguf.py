"""Use a GGUF file as a model: converted once into an ordinary safetensors folder, then cached.

`policy.model_name` may name a `.gguf` file (for example the SmolLM2-135M-Instruct copy for
machines without the hub). transformers de-quantises it, but a GGUF-loaded model is marked as
quantised and refuses `save_pretrained`, so the weights are moved into a fresh model built from
the same config and saved from there, with the tokenizer. vLLM and the trainer then load the
folder quickly. The cache lives in NEMO_GRPO_CACHE (default ~/.cache/nemo_grpo).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


class ModelLoadError(ValueError):
    """A model or tokenizer that cannot be found or loaded; the message says what to use instead."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), for one-line errors."""
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200].rstrip(".")


def load_tokenizer(name: str, key: str = "policy.model_name"):
    """The tokenizer of a hub id, an HF folder or a converted .gguf file, or a clear ModelLoadError
    that names the config `key` to change."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load model '{name}': {first_line(exc)}. Without the Hugging Face Hub, set {key} "
            "to a local HF folder or a .gguf file"
        ) from None


def cache_dir() -> Path:
    return Path(os.environ.get("NEMO_GRPO_CACHE", Path.home() / ".cache" / "nemo_grpo")).expanduser()


def resolve_model_path(name: str, key: str = "policy.model_name") -> str:
    """A local folder: unchanged. A hub id: its downloaded (or cached) snapshot folder, so that every
    component (the trainer, vLLM, the exporter) reads the same local files. A `.gguf` file: the
    folder it is converted to once."""
    if not name.endswith(".gguf"):
        return name if Path(name).expanduser().exists() or not _looks_like_hub_id(name) else hub_snapshot(name, key)
    src = Path(name).expanduser().resolve()
    if not src.is_file():
        raise FileNotFoundError(f"GGUF model file not found: {src}")
    out = cache_dir() / "models" / f"{src.stem}-{src.stat().st_size}"
    if not (out / "config.json").is_file():
        convert_gguf(src, out)
    return str(out)


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def hub_snapshot(repo_id: str, key: str = "policy.model_name") -> str:
    """The local folder of a hub model (config, tokenizer and safetensors weights)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"])
    except Exception as exc:  # offline, no such repo, gated, no network
        raise ModelLoadError(
            f"cannot load model '{repo_id}': {first_line(exc)}. Without the Hugging Face Hub, set {key} "
            "to a local HF folder or a .gguf file"
        ) from None


def convert_gguf(src: Path, out: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(str(src.parent), gguf_file=src.name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        tied = getattr(config, "tie_word_embeddings", False)
        result = fresh.load_state_dict(loaded.state_dict(), strict=False)
        missing = [k for k in result.missing_keys if not (tied and k == "lm_head.weight")]
        if missing or result.unexpected_keys:
            raise ValueError(f"{src}: GGUF weights do not fit the model (missing {missing[:5]}, "
                             f"unexpected {result.unexpected_keys[:5]})")
        if tied:
            fresh.tie_weights()
        fresh.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name).save_pretrained(tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
