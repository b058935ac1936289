"""Generation with Hugging Face `generate`: the fallback backend, and the reference for vLLM.

Each prompt's `n` responses are sampled as one batch (in micro-batches of at most
`micro_batch_size` rows), seeded from (`params.seed`, the prompt's index in the whole request): a
given seed reproduces the same responses, however the prompts are split over engines. The
process's own random state is left as it was. The log-prob of each sampled token is taken from the
raw logits divided by the temperature (the same distribution the trainer scores), not from the
top-p / top-k filtered one.
"""

from __future__ import annotations

import time

import torch
from transformers import AutoModelForCausalLM

from nemo_grpo.generation.interface import GenerationStats, Rollout, SamplingParams, WeightChunks, request_seed


class HFGenerationBackend:
    name = "hf"

    def __init__(self, model_path: str, tokenizer, *, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", micro_batch_size: int = 64, model=None):
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.model = model if model is not None else AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        self.model.to(self.device).eval()
        self.micro_batch_size = micro_batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.last_stats = GenerationStats(backend=self.name)
        self.version: int | None = None

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Rollout]:
        start = time.perf_counter()
        stop_ids = self._stop_ids(params)
        rollouts: list[Rollout] = []
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for i, ids in enumerate(prompts):
                torch.manual_seed(request_seed(params.seed, params.prompt_offset + i, 0))
                requests = [(i, ids)] * params.n
                for lo in range(0, len(requests), self.micro_batch_size):
                    rollouts.extend(self._generate_batch(requests[lo : lo + self.micro_batch_size], params, stop_ids))
        self.last_stats = GenerationStats(
            backend=self.name, num_tokens=sum(len(r.response_ids) for r in rollouts),
            seconds=time.perf_counter() - start,
        )
        return rollouts

    def _stop_ids(self, params: SamplingParams) -> list[int]:
        ids = list(params.stop_token_ids)
        eos = self.tokenizer.eos_token_id
        if eos is not None and eos not in ids:
            ids.append(eos)
        return ids

    def _generate_batch(self, requests, params: SamplingParams, stop_ids: list[int]) -> list[Rollout]:
        width = max(len(ids) for _, ids in requests)
        input_ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, (_, ids) in enumerate(requests):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        greedy = params.temperature == 0
        out = self.model.generate(
            input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
            do_sample=not greedy, temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p, top_k=None if greedy else (params.top_k or 0),
            max_new_tokens=params.max_new_tokens, eos_token_id=stop_ids, pad_token_id=self.pad_id,
            output_logits=True, return_dict_in_generate=True,
            stop_strings=list(params.stop_strings) or None,
            tokenizer=self.tokenizer if params.stop_strings else None,
        )
        new_tokens = out.sequences[:, width:].cpu()
        temperature = params.temperature if params.temperature > 0 else 1.0
        logits = torch.stack(out.logits, dim=1).float().cpu() / temperature  # [B, steps, V]
        token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        del logits
        results = []
        for row, (prompt_index, ids) in enumerate(requests):
            tokens = new_tokens[row].tolist()
            length, reason = self._response_length(tokens, stop_ids, params)
            results.append(Rollout(
                prompt_index=prompt_index, prompt_ids=list(ids), response_ids=tokens[:length],
                logprobs=token_logprobs[row, :length].tolist(), finish_reason=reason,
                text=self.tokenizer.decode(tokens[:length], skip_special_tokens=True),
            ))
        return results

    def _response_length(self, tokens: list[int], stop_ids: list[int], params: SamplingParams) -> tuple[int, str]:
        """Tokens up to and including the first stop token, or up to the stop string (a row that
        stopped on one is padded by `generate` while the batch goes on: the pads are not part of it);
        "length" if neither was produced."""
        for pos, tok in enumerate(tokens):
            if tok in stop_ids:
                return pos + 1, "stop"
        if params.stop_strings:
            end = len(tokens)
            while end and tokens[end - 1] == self.pad_id:
                end -= 1
            text = self.tokenizer.decode(tokens[:end])
            if any(s in text for s in params.stop_strings):
                return end, "stop"
        return len(tokens), "length"

    def update_weights(self, state_dict: dict[str, torch.Tensor], *, version: int | None = None) -> float:
        if version is not None and version == self.version:
            return 0.0
        return self.load_weight_chunks([list(state_dict.items())], version=version)

    @torch.no_grad()
    def load_weight_chunks(self, chunks: WeightChunks, *, version: int | None = None) -> float:
        """Copy each chunk into the model's parameters as it arrives (in their dtype and device)."""
        start = time.perf_counter()
        params = dict(self.model.named_parameters(remove_duplicate=False))
        buffers = dict(self.model.named_buffers())
        tied = getattr(self.model.config, "tie_word_embeddings", False)
        expected = {k for k in params if not (tied and k == "lm_head.weight")}
        loaded, unexpected = set(), []
        for chunk in chunks:
            for name, tensor in chunk:
                target = params.get(name, buffers.get(name))
                if target is None or target.shape != tensor.shape:
                    unexpected.append(name)
                    continue
                target.copy_(tensor)
                loaded.add(name)
        missing = sorted(expected - loaded)
        if missing or unexpected:
            raise RuntimeError(f"weight refit mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.version = version
        return time.perf_counter() - start

    def sleep(self) -> None:
        """Nothing to release: the HF model is small next to the policy, and stays."""

    def wake_up(self) -> None:
        """Nothing was released."""

    def shutdown(self) -> None:
        self.model = None
