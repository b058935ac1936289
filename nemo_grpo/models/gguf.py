"""Use a GGUF file as a model: converted once into an ordinary safetensors folder, then cached.

`policy.model_name` may name a `.gguf` file (for example the SmolLM2-135M-Instruct copy for
machines without the hub). transformers de-quantises it, but a GGUF-loaded model is marked as
quantised and refuses `save_pretrained`, so the weights are moved into a fresh model built from
the same config and saved from there, with the tokenizer. vLLM and the trainer then load the
folder quickly. The cache lives in NEMO_GRPO_CACHE (default ~/.cache/nemo_grpo).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path


def check_gguf(src: Path) -> None:
    """Read the GGUF header and tensor table and check that every tensor's data lies inside the
    file; raises ValueError (or the reader's own error) for a truncated or non-GGUF file, in a
    fraction of a second rather than after a long conversion."""
    from gguf import GGUFReader

    size = Path(src).stat().st_size
    reader = GGUFReader(str(src))
    if not reader.tensors:
        raise ValueError("no tensors")
    end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    if end > size:
        raise ValueError(f"the tensors need {end} bytes, the file has {size}")


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
