"""Weight refit into a running vLLM engine: the worker extension and the trainer-side senders.

`RefitWorkerExtension` methods run inside vLLM's worker through `LLM.collective_rpc`. A refit is a
session: `nemo_refit_begin`, then `nemo_refit_chunk` once per chunk of (name, tensor) pairs, then
`nemo_refit_finish`. It uses vLLM's layerwise in-place reload (the machinery behind the built-in
`reload_weights`), so each chunk is loaded and processed as it arrives.

The engine runs in the caller's process (every training run: in the policy rank's process) and
receives the tensors themselves, on the rank's device (CPU, or its GPU): no copy, no serialization.

`nemo_refit_finish` re-ties `lm_head` to the embedding for tied models: vLLM-CPU repacks `lm_head`
at start, and the in-place reload leaves it holding stale (dummy) weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from nemo_grpo.generation.interface import chunk_pairs

EXTENSION_CLS = "nemo_grpo.generation.vllm_refit.RefitWorkerExtension"


def unique_items(state_dict: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs, skipping tensors that alias an earlier one (a tied `lm_head`)."""
    seen: set[tuple[int, int]] = set()
    for name, tensor in state_dict.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key not in seen:
            seen.add(key)
            yield name, tensor


def chunk_state_dict(state_dict: dict[str, torch.Tensor], chunk_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Consecutive groups of unique (name, tensor) pairs of at most `chunk_bytes` each (a bigger
    tensor goes alone)."""
    return chunk_pairs(unique_items(state_dict), chunk_bytes)


def _is_input_embedding(module: torch.nn.Module) -> bool:
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

    return isinstance(module, VocabParallelEmbedding) and not isinstance(module, ParallelLMHead)


def _has_own_tensors(module: torch.nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def parts_to_reprocess(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The submodules that together hold every weight but the input embedding's, for vLLM's
    layerwise reload (which re-runs each layer's weight processing: on CPU, packing a linear
    layer's weight for oneDNN). The input embedding is a lookup that keeps its plain weight, so
    it is loaded in place by its own loader: processing it again would pack a copy of the whole
    vocabulary that nothing multiplies with (on CPU, about a third of a small model's refit: 0.52 -> 0.36 s).
    `[model]` when the embedding cannot be set apart."""
    def split(module: torch.nn.Module) -> list[torch.nn.Module] | None:
        parts: list[torch.nn.Module] = []
        for child in module.children():
            if _is_input_embedding(child):
                continue
            if not any(_is_input_embedding(m) for m in child.modules()):
                parts.append(child)
            elif _has_own_tensors(child):
                return None
            else:
                sub = split(child)
                if sub is None:
                    return None
                parts.extend(sub)
        return parts

    parts = None if _has_own_tensors(model) else split(model)
    return [model] if parts is None else parts


class RefitWorkerExtension:
    """Mixed into vLLM's worker class (`worker_extension_cls`); methods are called by name
    through `LLM.collective_rpc`. `self` is the vLLM worker."""

    def nemo_refit_begin(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        self._nemo_loaded = set()
        with self._nemo_config():
            for part in parts_to_reprocess(self.model_runner.get_model()):
                initialize_layerwise_reload(part)

    def nemo_refit_chunk(self, payload: Any) -> int:
        """Load one chunk of (name, tensor) pairs (the engine runs in the caller's process)."""
        weights = list(payload)
        model = self.model_runner.get_model()
        with self._nemo_config():
            loaded = model.load_weights(iter(weights))
        self._nemo_loaded.update(loaded or ())
        return len(weights)

    def nemo_refit_finish(self) -> list[str]:
        """Process the loaded weights into kernel format; return the parameters never loaded."""
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        model = self.model_runner.get_model()
        with self._nemo_config():
            finalize_layerwise_reload(model, self.model_config)
            self._nemo_retie_lm_head(model)
        self.model_runner.reset_lora_state()
        expected = {name for name, _ in model.named_parameters()}
        return sorted(expected - self._nemo_loaded)

    def nemo_kv_release(self) -> int:
        """CPU: give the KV cache's memory back (its storages shrink to 0 bytes; the tensors and
        the attention layers' views stay). Returns the bytes freed."""
        self._nemo_kv_released = _shrink_storages(self.model_runner.kv_caches)
        return sum(size for _, size in self._nemo_kv_released)

    def nemo_kv_restore(self) -> None:
        """CPU: the released KV cache's memory back, contents undefined (the caller resets the
        prefix cache, so no cached block is read before it is written)."""
        _regrow_storages(getattr(self, "_nemo_kv_released", []))
        self._nemo_kv_released = []

    def nemo_weights_release(self) -> int:
        """CPU: give the weights' memory back while the policy trains: every parameter's storage
        shrinks to 0 bytes and every linear layer drops its packed (oneDNN) copy. The next refit
        must follow `nemo_weights_restore`; it repacks every layer. Returns the parameter bytes freed."""
        model = self.model_runner.get_model()
        self._nemo_weights_released = _shrink_storages(model.parameters())
        for module in model.modules():
            if getattr(module, "cpu_linear", None) is not None:
                module.cpu_linear = _released_linear
        return sum(size for _, size in self._nemo_weights_released)

    def nemo_weights_restore(self) -> None:
        """CPU: the released parameters' memory back, contents undefined: only for a refit, which
        writes every parameter and repacks every linear layer."""
        _regrow_storages(getattr(self, "_nemo_weights_released", []))
        self._nemo_weights_released = []

    # -- helpers ---------------------------------------------------------------------------
    def _nemo_config(self):
        from vllm.config import set_current_vllm_config

        return set_current_vllm_config(self.vllm_config)

    def _nemo_retie_lm_head(self, model: torch.nn.Module) -> None:
        """vLLM-CPU bug workaround: after an in-place reload of a tied model, `lm_head` keeps
        the weights packed at start. Point it at the embedding again and repack."""
        if not getattr(self.model_config.hf_config, "tie_word_embeddings", False):
            return
        if self.device.type != "cpu":
            return  # GPU lm_head *is* the embedding module; nothing was repacked
        lm_head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        if lm_head is None or embed is None:
            raise RuntimeError(
                f"{type(model).__name__}: tied model without lm_head / model.embed_tokens; cannot re-tie after refit"
            )
        lm_head.weight = embed.weight
        quant_method = getattr(lm_head, "quant_method", None)
        if quant_method is not None:
            quant_method.process_weights_after_loading(lm_head)


def _shrink_storages(tensors) -> list[tuple[Any, int]]:
    """Shrink the distinct storages under `tensors` to 0 bytes; (storage, former size) of each."""
    storages = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        if storage.nbytes():
            storages.setdefault(storage.data_ptr(), (storage, storage.nbytes()))
    for storage, _ in storages.values():
        storage.resize_(0)
    return list(storages.values())


def _regrow_storages(released: list[tuple[Any, int]]) -> None:
    for storage, size in released:
        storage.resize_(size)


def _released_linear(x, weight, bias):
    raise RuntimeError("vLLM-CPU engine: its weights were released while the policy trained; "
                       "refit (update_weights) before generating")
