"""A trained checkpoint exported to Hugging Face gives the trainer's logits in transformers, and
vLLM generates from it what transformers generates: tied and untied, fp32 and bf16.

Tolerances (max |logit difference| over every position and vocabulary entry, the trainer's fp32
logits as reference; the logits span about +-1.5 and the training step moves them by 0.2-0.3):
  * fp32 export: 1e-5. The weights are the trainer's bit for bit (the difference measured here
    is 0); the margin is for other kernels ordering floating-point sums differently.
  * bf16 export, loaded in bf16 as a user would: 3e-2. Rounding the weights to bf16 (8
    significant bits) and computing in bf16 gives about 9e-3 here.
"""

from __future__ import annotations

import runpy
import sys
from unittest import mock

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from nemo_grpo.checkpoint.export import export_checkpoint
from nemo_grpo.models.build import save_random_model, tiny_config
from tests.conftest import REPO_ROOT
from tests.integration.trained_checkpoint import train_and_checkpoint
from tests.integration.vllm_helpers import needs_vllm

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FP32_TOLERANCE = 1e-5
BF16_TOLERANCE = 3e-2


@pytest.fixture(scope="module")
def trained(tmp_path_factory, qwen_math_tokenizer):
    """trained(tied) -> a checkpoint after one optimizer step from a random tiny model (made once)."""
    made = {}

    def get(tied: bool):
        if tied not in made:
            root = tmp_path_factory.mktemp("tied" if tied else "untied")
            config = tiny_config("qwen2", qwen_math_tokenizer, tie_word_embeddings=tied)
            model_dir = save_random_model(root / "model", config, qwen_math_tokenizer, seed=3)
            made[tied] = train_and_checkpoint(model_dir, root, qwen_math_tokenizer)
        return made[tied]

    return get


@torch.no_grad()
def logits_of(model, input_ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids).logits.float()


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_export_gives_the_trainers_logits(trained, tied, tmp_path):
    ckpt = trained(tied)
    initial = logits_of(AutoModelForCausalLM.from_pretrained(ckpt.model_dir), ckpt.input_ids)
    moved = (initial - ckpt.logits).abs().max()
    assert moved > 3 * BF16_TOLERANCE, "the training step must move the logits far beyond every tolerance"

    fp32_dir = export_checkpoint(ckpt.step_dir, tmp_path / "fp32", dtype="float32", verify=False)
    fp32 = AutoModelForCausalLM.from_pretrained(fp32_dir)
    assert fp32.dtype == torch.float32
    assert (logits_of(fp32, ckpt.input_ids) - ckpt.logits).abs().max() <= FP32_TOLERANCE

    bf16 = AutoModelForCausalLM.from_pretrained(export_checkpoint(ckpt.step_dir, tmp_path / "bf16"))  # the defaults
    assert bf16.dtype == torch.bfloat16
    assert (logits_of(bf16, ckpt.input_ids) - ckpt.logits).abs().max() <= BF16_TOLERANCE
    assert (bf16.lm_head.weight is bf16.model.embed_tokens.weight) == tied


def run_program(argv: list[str], capsys) -> tuple[int, str, str]:
    """examples/convert_dcp_to_hf.py run as the main program, in this process: a subprocess
    would spend 10-20 s importing torch again for the same code path."""
    script = REPO_ROOT / "examples" / "convert_dcp_to_hf.py"
    capsys.readouterr()  # drop what came before
    with mock.patch.object(sys, "argv", [str(script), *argv]), pytest.raises(SystemExit) as exc:
        runpy.run_path(str(script), run_name="__main__")
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_command_line_short_form(trained, capsys):
    """The latest checkpoint of a checkpoint_dir into <checkpoint_dir>/hf_step_1; a second run
    refuses the now non-empty folder with one line and status 2."""
    ckpt_dir = trained(True).step_dir.parent
    out = ckpt_dir / "hf_step_1"
    code, stdout, stderr = run_program([str(ckpt_dir)], capsys)
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[-2] == f"wrote {out}"
    assert " parameters, bfloat16, 1 shard(s), " in lines[-1] and ", verified, " in lines[-1]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys() and "model.embed_tokens.weight" in f.keys()
    code, stdout, stderr = run_program([str(ckpt_dir)], capsys)
    assert (code, stdout) == (2, "")
    assert stderr == f"error: {out} is not empty: choose another output folder, or pass --overwrite (overwrite=True) to replace it\n"


@pytest.mark.vllm
@needs_vllm
def test_vllm_generates_what_transformers_generates(trained, tmp_path, qwen_math_tokenizer):
    """vLLM loads the bf16 export of a tied model as it is (no refit) and decodes greedily the same
    tokens as transformers; both compute in fp32 here, so near-ties cannot split them."""
    from nemo_grpo.generation.config import GenerationConfig
    from nemo_grpo.generation.interface import SamplingParams
    from nemo_grpo.generation.vllm_backend import VllmGenerationBackend

    out = export_checkpoint(trained(True).step_dir, tmp_path / "hf", verify=False)  # verified in the tests above
    prompts = [qwen_math_tokenizer(t)["input_ids"] for t in ["1 + 1 =", "Name a prime:"]]
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    expected = [model.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False)[0, len(p):].tolist()
                for p in prompts]
    assert all(len(tokens) == 8 for tokens in expected), "no early EOS: all 8 greedy steps are compared"
    cfg = GenerationConfig(backend="vllm")
    cfg.vllm.enforce_eager = True
    cfg.vllm.kv_cache_memory_bytes = 256 * 2**20
    engine = VllmGenerationBackend(out, qwen_math_tokenizer, cfg, dtype="float32", max_model_len=128, load_format="auto")
    try:
        rollouts = engine.generate(prompts, SamplingParams(n=1, max_new_tokens=8, temperature=0.0, seed=0))
    finally:
        engine.shutdown()
    assert [r.response_ids for r in rollouts] == expected
