"""Where a model comes from: a local folder, a hub id (its downloaded snapshot) or a `.gguf` file
(converted once, see `gguf.py`), resolved to one local folder that every component reads.
Errors name the config key to change (`ModelLoadError`, a user error: exit status 2)."""

from __future__ import annotations

import os
from pathlib import Path

from nemo_grpo.models.gguf import check_gguf, convert_gguf
from nemo_grpo.utils.errors import UserError


class ModelLoadError(UserError, ValueError):
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
        if Path(name).expanduser().exists():
            return name
        if _looks_like_local_path(name):
            raise ModelLoadError(
                f"{key}: no such model folder {Path(name).expanduser().absolute()} (a local path: it was not "
                "looked up on the Hugging Face Hub, whose ids have the form org/name); check the path")
        return hub_snapshot(name, key) if _looks_like_hub_id(name) else name
    src = Path(name).expanduser().resolve()
    if not src.is_file():
        raise FileNotFoundError(f"GGUF model file not found: {src}")
    out = cache_dir() / "models" / f"{src.stem}-{src.stat().st_size}"
    if not (out / "config.json").is_file():
        try:
            check_gguf(src)
        except ImportError:
            raise
        except Exception as exc:  # the reader fails in many ways on a cut file: ValueError, struct errors...
            raise ModelLoadError(
                f"{key}: {src} is a damaged GGUF file ({first_line(exc)}): it ends early or is not GGUF (an "
                "interrupted download?). Download it again, or set the key to another model") from None
        convert_gguf(src, out)
    return str(out)


def _looks_like_local_path(name: str) -> bool:
    """`./x`, `../x`, `/x`, `~/x` or `a/b/c`: a path on this machine, never a hub id (`org/name`)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


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
