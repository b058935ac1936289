"""Helpers for integration tests: a tiny model folder that emits digits, and tiny GRPO configs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nemo_grpo.config import load_config
from nemo_grpo.trainer.config import TrainConfig
from nemo_grpo.models.build import build_random_model, tiny_config


def answer_token_ids(tokenizer) -> list[int]:
    """The tokens the tiny model emits, in pairs: ("1", "2"), (space, EOS), ("3", "4")."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ("1", "2", "Ġ")] + [tokenizer.eos_token_id]
    return ids + [tokenizer.convert_tokens_to_ids(t) for t in ("3", "4")]


def focus_output_head(model: torch.nn.Module, token_ids: list[int], *, scale: float = 2.0, seed: int = 0):
    """Make a random model emit (almost) only `token_ids`, depending on the context.

    Every other output row is zeroed (logit 0). The tokens come in pairs with opposite rows (+r, -r),
    so at every position one token of each pair has a large positive logit (|h.r| ~ 10 x scale,
    above the log of the vocabulary size) and sampling chooses among the pair winners.
    """
    head = model.get_output_embeddings().weight
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.zero_()
        pairs = [torch.randn(head.shape[1], generator=gen) * scale for _ in range(len(token_ids) // 2)]
        rows = torch.stack([sign * r for r in pairs for sign in (1, -1)])
        head[torch.tensor(token_ids)] = rows.to(head.dtype)
    return model


def write_problems(path: Path, count: int = 64) -> Path:
    """Problems whose answers are 1 or 2, so the tiny model is right about half the time."""
    rows = [{"problem": f"Problem {i}: answer {1 + i % 2}.", "answer": str(1 + i % 2)} for i in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_tiny_model_dir(out: Path, tokenizer, *, tied: bool = False, seed: int = 0, arch: str = "qwen2") -> Path:
    """A random tiny model whose samples are "1", "2" and EOS, saved with its
    tokenizer and `problems.jsonl`: graded with `reward.no_answer=last_number`, about half the
    responses are right, so rewards vary within groups and training really moves the weights."""
    cfg = tiny_config(arch, tokenizer, tie_word_embeddings=tied)
    model = focus_output_head(build_random_model(cfg, seed=seed), answer_token_ids(tokenizer), seed=seed)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_problems(out / "problems.jsonl")
    return out


TINY_YAML = Path(__file__).with_name("tiny.yaml")


def tiny_train_config(model_dir: Path, run_dir: Path, *overrides: str) -> TrainConfig:
    """tests/integration/tiny.yaml with this model and run folder."""
    base = [f"policy.model_name={model_dir}", f"data.train.path={model_dir / 'problems.jsonl'}", f"checkpointing.checkpoint_dir={run_dir / 'ckpt'}",
            f"logger.log_dir={run_dir / 'logs'}", "logger.console=false"]
    return load_config(TINY_YAML, base + list(overrides), TrainConfig)
