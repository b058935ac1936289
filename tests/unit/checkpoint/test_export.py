"""DCP -> Hugging Face export: folder contents, tied heads, sharding, refusals, the short form, the CLI.

The checkpoints here are written with `dcp.save` in one process (no process group) in the
trainer's layout; the trained case (a real PolicyWorker) is tests/integration/test_export_hf.py, and
a 2-rank FSDP2 one tests/integration/test_data_parallel_policy.py.
"""

from __future__ import annotations

import json
import runpy
import shutil
import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.distributed.checkpoint as dcp
import yaml
from safetensors import safe_open
from transformers import AutoModelForCausalLM, GenerationConfig

from nemo_grpo.checkpoint import export as export_module
from nemo_grpo.checkpoint.dcp_read import NotADcpCheckpoint, load_dcp_state_dict
from nemo_grpo.checkpoint.export import ExportError, describe_export, export_checkpoint, export_to_hf, verify_export
from nemo_grpo.checkpoint.hf_files import parse_size, split_shards
from nemo_grpo.checkpoint.manager import CheckpointManager
from nemo_grpo.models.build import build_random_model, tiny_config
from tests.conftest import REPO_ROOT


def save_dcp(state_dict: dict[str, torch.Tensor], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process": it is
        dcp.save(state_dict, checkpoint_id=str(path), no_dist=True)
    return path


def tiny(tied: bool, **overrides):
    """A tiny qwen2 config with a small vocabulary: these tests never run the model on text."""
    return tiny_config("qwen2", None, tie_word_embeddings=tied, vocab_size=1024, **overrides)


def make_checkpoint(root: Path, tokenizer, *, tied: bool, seed: int = 0, step: int = 1, model_dir: Path | None = None):
    """A source model folder and a complete `step_<N>` checkpoint of other weights in the trainer's layout."""
    if model_dir is None:
        model_dir = root / "model"
        build_random_model(tiny(tied), seed=100).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    manager = CheckpointManager(root / "ckpt")
    tmp = manager.begin(step)
    weights = build_random_model(tiny(tied), seed=seed).state_dict()
    save_dcp(weights, tmp / "policy" / "weights")
    (tmp / "config.yaml").write_text(yaml.safe_dump({"policy": {"model_name": str(model_dir), "tokenizer_name": None}}))
    tokenizer.save_pretrained(tmp / "tokenizer")
    return model_dir, manager.finish(tmp, step, {"step": step}), weights


@pytest.fixture(scope="module")
def untied(tmp_path_factory, qwen_math_tokenizer):
    return make_checkpoint(tmp_path_factory.mktemp("untied"), qwen_math_tokenizer, tied=False)


@pytest.fixture(scope="module")
def tied(tmp_path_factory, qwen_math_tokenizer):
    return make_checkpoint(tmp_path_factory.mktemp("tied"), qwen_math_tokenizer, tied=True)


def weights_of(step_dir: Path) -> Path:
    return step_dir / "policy" / "weights"


def tensor_names(out: Path) -> dict[str, str]:
    names = {}
    for path in out.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            names.update(dict.fromkeys(f.keys(), path.name))
    return names


def test_load_dcp_state_dict_gives_the_saved_tensors(untied):
    _, step_dir, weights = untied
    loaded = load_dcp_state_dict(weights_of(step_dir))
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    part = load_dcp_state_dict(weights_of(step_dir), ["lm_head.weight"])
    assert list(part) == ["lm_head.weight"] and torch.equal(part["lm_head.weight"], weights["lm_head.weight"])
    with pytest.raises(KeyError, match="no tensor named nope"):
        load_dcp_state_dict(weights_of(step_dir), ["nope"])


def test_sharded_fp32_export_holds_every_tensor_exactly(untied, tmp_path):
    model_dir, step_dir, weights = untied
    out = export_to_hf(weights_of(step_dir), tmp_path / "hf", config_source=model_dir, tokenizer_dir=step_dir / "tokenizer",
                       dtype="float32", max_shard_size="600KB")  # verified: loads back tensor for tensor
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        shards + ["chat_template.jinja", "config.json", "generation_config.json", "model.safetensors.index.json",
                  "tokenizer.json", "tokenizer_config.json"])
    assert index["weight_map"] == tensor_names(out) and set(index["weight_map"]) == set(weights)
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in weights.values())
    assert all(p.stat().st_size <= 600_000 for p in out.glob("*.safetensors"))
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "float32" and config["architectures"] == ["Qwen2ForCausalLM"]
    loaded = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):  # the run's tokenizer, unchanged
        assert (out / name).read_bytes() == (step_dir / "tokenizer" / name).read_bytes()
    summary = describe_export(out)
    assert (summary.parameters, summary.dtype, summary.shards) == (sum(t.numel() for t in weights.values()), "float32",
                                                                    len(shards))
    assert [p.name for p in out.parent.iterdir()] == ["hf"], "no temporary folder may be left behind"


def test_tied_bf16_export_drops_the_head_and_loads_tied(tied, tmp_path):
    model_dir, step_dir, weights = tied
    out = export_checkpoint(step_dir, tmp_path / "hf")  # the defaults: bfloat16, one shard, verified
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.index.json").exists()
    names = tensor_names(out)
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert torch.equal(model.lm_head.weight, weights["model.embed_tokens.weight"].to(torch.bfloat16))


def test_generation_config_comes_from_the_source_model_or_the_tokenizer(tmp_path, qwen_math_tokenizer, untied):
    model_dir, step_dir, _ = untied
    source = tmp_path / "source"  # the model the run started from: only its config files are read
    source.mkdir()
    shutil.copy(model_dir / "config.json", source)
    GenerationConfig(eos_token_id=7, temperature=0.6, do_sample=True, max_new_tokens=123).save_pretrained(source)
    options = dict(config_source=source, tokenizer_dir=step_dir / "tokenizer", verify=False)
    copied = GenerationConfig.from_pretrained(export_to_hf(weights_of(step_dir), tmp_path / "a", **options))
    assert (copied.eos_token_id, copied.temperature, copied.do_sample, copied.max_new_tokens) == (7, 0.6, True, 123)
    (source / "generation_config.json").unlink()
    made = GenerationConfig.from_pretrained(export_to_hf(weights_of(step_dir), tmp_path / "b", **options))
    tok = qwen_math_tokenizer
    assert (made.bos_token_id, made.eos_token_id, made.pad_token_id) == (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert made.eos_token_id is not None


def test_a_tied_head_that_differs_from_the_embedding_is_refused(tmp_path, qwen_math_tokenizer, tied):
    model_dir, _, weights = tied
    bad = dict(weights, **{"lm_head.weight": weights["lm_head.weight"] + 1.0})
    with pytest.raises(ExportError, match="lm_head.weight differs from model.embed_tokens.weight"):
        export_to_hf(save_dcp(bad, tmp_path / "weights"), tmp_path / "hf", config_source=model_dir)
    assert not (tmp_path / "hf").exists()


def test_weights_of_another_shape_are_refused(tmp_path, qwen_math_tokenizer, untied):
    _, step_dir, _ = untied
    other = tmp_path / "other"
    tiny(False, hidden_size=256).save_pretrained(other)
    with pytest.raises(ExportError, match=r"do not fit the qwen2 model config \(shape .*model.embed_tokens.weight"):
        export_to_hf(weights_of(step_dir), tmp_path / "hf", config_source=other, tokenizer_dir=step_dir / "tokenizer")


def test_a_folder_that_is_not_dcp_is_refused(tmp_path, untied):
    model_dir, step_dir, _ = untied
    with pytest.raises(NotADcpCheckpoint, match="not a DCP checkpoint .*pass the policy/weights folder"):
        export_to_hf(step_dir, tmp_path / "hf", config_source=model_dir)


def test_non_empty_output_is_refused_unless_overwrite(tmp_path, untied):
    model_dir, step_dir, _ = untied
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="is not empty: .*--overwrite"):
        export_checkpoint(step_dir, out, verify=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    export_checkpoint(step_dir, out, overwrite=True, verify=False)
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
    with pytest.raises(ExportError, match="refusing to overwrite .*holds the export's own input"):
        export_to_hf(weights_of(step_dir), step_dir, config_source=model_dir, overwrite=True)
    assert (step_dir / "meta.json").is_file()


def test_a_failed_export_leaves_nothing_that_looks_complete(tmp_path, untied, monkeypatch):
    _, step_dir, _ = untied

    def crash(*args, **kwargs):  # a deliberately injected fault after every file is written
        raise RuntimeError("killed")

    monkeypatch.setattr(export_module, "verify_export", crash)
    with pytest.raises(RuntimeError, match="killed"):
        export_checkpoint(step_dir, tmp_path / "hf")
    assert list(tmp_path.iterdir()) == []


def test_verification_catches_weights_that_differ(tmp_path, untied):
    model_dir, step_dir, weights = untied
    out = export_checkpoint(step_dir, tmp_path / "hf", dtype="float32", verify=False)
    changed = dict(weights, **{"model.norm.weight": weights["model.norm.weight"] + 1e-3})
    with pytest.raises(ExportError, match="does not load back as written: model.norm.weight differs from the checkpoint"):
        verify_export(out, save_dcp(changed, tmp_path / "changed"))


def test_short_form_takes_the_latest_complete_step(tmp_path, qwen_math_tokenizer, untied):
    model_dir, _, _ = untied
    _, first, _ = make_checkpoint(tmp_path, qwen_math_tokenizer, tied=False, seed=1, step=1, model_dir=model_dir)
    _, second, weights = make_checkpoint(tmp_path, qwen_math_tokenizer, tied=False, seed=2, step=2, model_dir=model_dir)
    ckpt = first.parent
    unfinished = CheckpointManager(ckpt).begin(3)  # a save that never finished: never exported
    (unfinished / "policy" / "weights").mkdir(parents=True)
    out = export_checkpoint(ckpt, dtype="float32", verify=False)
    assert out == ckpt / "hf_step_2"  # beside the checkpoints, where pruning does not reach
    loaded = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    assert export_checkpoint(first, verify=False) == ckpt / "hf_step_1"
    with pytest.raises(ExportError, match="is an incomplete checkpoint"):
        export_checkpoint(unfinished, tmp_path / "x")
    with pytest.raises(ExportError, match="neither a checkpoint"):
        export_checkpoint(model_dir, tmp_path / "x")


def test_sizes_and_shards():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("500MB") == 5 * 10**8 and parse_size("2GiB") == 2 * 2**30
    assert parse_size(1234) == 1234 and parse_size("1.5 kb") == 1500
    for bad in ("five", "0MB", "3XB"):
        with pytest.raises(ExportError, match="not a size such as 5GB"):
            parse_size(bad)
    sizes = {"a": 4, "b": 4, "c": 10, "d": 1, "e": 1}
    assert split_shards(sizes, 8) == [["a", "b"], ["c"], ["d", "e"]]
    assert split_shards(sizes, 100) == [["a", "b", "c", "d", "e"]]


# ---- the command line -----------------------------------------------------------------------

SCRIPT = REPO_ROOT / "examples" / "convert_dcp_to_hf.py"


def run_program(argv: list[str], capsys) -> tuple[int, str, str]:
    """The script run as the main program in this process (a subprocess would import torch again)."""
    capsys.readouterr()
    with mock.patch.object(sys, "argv", [str(SCRIPT), *argv]), pytest.raises(SystemExit) as exc:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_cli_user_errors_are_one_line_and_exit_2(tmp_path, untied, capsys):
    model_dir, step_dir, _ = untied
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    cases = {
        "no such checkpoint folder": [str(tmp_path / "missing")],
        "is not a DCP checkpoint": ["--config", str(step_dir / "config.yaml"), "--dcp-ckpt-path", str(step_dir),
                                    "--hf-ckpt-path", str(tmp_path / "o")],
        "is not empty: choose another output folder, or pass --overwrite": [str(step_dir), "--hf-ckpt-path", str(busy)],
        "no such run config": ["--config", str(tmp_path / "c.yaml"), "--dcp-ckpt-path", str(weights_of(step_dir)),
                               "--hf-ckpt-path", str(tmp_path / "o")],
    }
    for expected, argv in cases.items():
        code, out, err = run_program(argv, capsys)
        assert (code, out) == (2, ""), argv
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err  # one line, no traceback
    code, _, err = run_program(["--config", "c.yaml"], capsys)  # argparse: usage, then the error
    assert code == 2 and "all of --config, --dcp-ckpt-path and --hf-ckpt-path" in err.splitlines()[-1]


def test_cli_long_form_writes_the_export_and_a_summary(tmp_path, untied, capsys):
    _, step_dir, weights = untied
    out = tmp_path / "hf"
    argv = ["--config", str(step_dir / "config.yaml"), "--dcp-ckpt-path", str(weights_of(step_dir)),
            "--hf-ckpt-path", str(out), "--dtype", "float16", "--no-verify"]
    code, stdout, err = run_program(argv, capsys)
    assert code == 0, err
    lines = stdout.splitlines()
    params = sum(t.numel() for t in weights.values())
    assert lines[0] == f"wrote {out}"
    assert lines[1].startswith(f"{params:,} parameters, float16, 1 shard(s), ") and "not verified" in lines[1]
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.float16
