"""Random-weight models for tests and benchmarks."""

from __future__ import annotations

import pytest
import torch

from nemo_grpo.models.build import build_random_model, config_from_dir, tiny_config


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("tied", [False, True])
def test_tiny_model_runs_with_real_tokenizer(qwen_math_tokenizer, arch, tied):
    cfg = tiny_config(arch, qwen_math_tokenizer, tie_word_embeddings=tied, num_hidden_layers=1)
    assert cfg.hidden_size // cfg.num_attention_heads >= 32  # vLLM CPU attention needs it
    model = build_random_model(cfg, seed=1)
    ids = torch.tensor([qwen_math_tokenizer("1 + 1 =")["input_ids"]])
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(qwen_math_tokenizer))
    assert (model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()) == tied
    again = build_random_model(cfg, seed=1)
    assert torch.equal(again(ids).logits, logits)  # the seed fixes the weights


def test_small_head_dim_is_refused():
    with pytest.raises(ValueError, match="head_dim 16"):
        tiny_config("qwen2", hidden_size=64, num_attention_heads=4)


def test_real_shapes_from_shared_configs(shared_dir):
    r1 = config_from_dir(shared_dir / "models" / "deepseek-r1-distill-qwen-1.5b")
    assert (r1.num_hidden_layers, r1.hidden_size, r1.vocab_size, r1.tie_word_embeddings) == (28, 1536, 151936, False)
    math = config_from_dir(shared_dir / "models" / "qwen2.5-math-1.5b")
    assert math.tie_word_embeddings is True


def test_missing_model_is_a_clear_error(tmp_path):
    from nemo_grpo.models.source import ModelLoadError, load_tokenizer, resolve_model_path

    with pytest.raises(ModelLoadError, match=r"cannot load model .*set policy.model_name to a local HF folder or a .gguf file"):
        load_tokenizer(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="GGUF model file not found"):
        resolve_model_path(str(tmp_path / "absent.gguf"))
    # A hub id is fetched as a local snapshot; without the hub (tests run offline) that is a clear error.
    with pytest.raises(ModelLoadError, match=r"cannot load model 'no-such-org/no-such-model'.*local HF folder"):
        resolve_model_path("no-such-org/no-such-model")
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)  # a local folder is used as it is
