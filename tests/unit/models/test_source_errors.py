"""Where a model comes from, when it cannot be used: one line naming the file or folder."""

from __future__ import annotations

import pytest

from nemo_grpo.models.source import ModelLoadError, resolve_model_path
from nemo_grpo.utils.errors import UserError


@pytest.mark.parametrize("name", ["./models/x", "../x", "/abs/no/such/model", "a/b/c", "~/no-such-model-dir/x"])
def test_a_local_path_that_does_not_exist_is_a_missing_folder_not_a_hub_id(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as err:
        resolve_model_path(name, "policy.model_name")
    msg = str(err.value)
    assert msg.startswith("policy.model_name: no such model folder ") and "not looked up on the Hugging Face Hub" in msg
    assert "cannot load model" not in msg and isinstance(err.value, UserError)


def test_a_hub_id_is_still_a_hub_id(tmp_path):
    with pytest.raises(ModelLoadError, match=r"cannot load model 'no-such-org/no-such-model'"):
        resolve_model_path("no-such-org/no-such-model")  # tests run offline


@pytest.mark.parametrize("keep", [3000, 40_000_000])
def test_a_truncated_gguf_is_named_a_damaged_gguf_file(keep, shared_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_GRPO_CACHE", str(tmp_path / "cache"))
    src = shared_dir / "models" / "smollm2-135m-instruct-gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not src.is_file():
        pytest.skip(f"{src} is not here")
    cut = tmp_path / "model.gguf"
    with open(src, "rb") as f:
        cut.write_bytes(f.read(keep))
    with pytest.raises(ModelLoadError) as err:
        resolve_model_path(str(cut))
    msg = str(err.value)
    assert msg.startswith(f"policy.model_name: {cut} is a damaged GGUF file (") and "\n" not in msg
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())


def test_a_file_that_is_not_gguf_at_all(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_GRPO_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "notes.gguf"
    fake.write_text("hello")
    with pytest.raises(ModelLoadError, match=rf"{fake} is a damaged GGUF file"):
        resolve_model_path(str(fake))
