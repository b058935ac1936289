"""Convert a training checkpoint (torch DCP) into a Hugging Face folder for transformers and vLLM.

    uv run examples/convert_dcp_to_hf.py <checkpoint_dir or step_N> [--hf-ckpt-path OUT]
    uv run examples/convert_dcp_to_hf.py --config=<ckpt>/config.yaml --dcp-ckpt-path=<ckpt>/policy/weights \\
        --hf-ckpt-path=<out>

The short form exports the given step_N folder, or the latest complete one in a checkpoint_dir,
into <checkpoint_dir>/hf_step_N unless --hf-ckpt-path says otherwise. The export is loaded back
and compared tensor by tensor before it appears (see docs/checkpoints.md).
"""

from __future__ import annotations

import argparse
import sys
import time

from nemo_grpo.checkpoint.export import EXPORT_DTYPES, describe_export, export_checkpoint, export_to_hf, sources_from_run_config
from nemo_grpo.cli import run_reporting_user_errors, set_runtime_defaults


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", help="short form: a step_N checkpoint, or a checkpoint_dir (its latest)")
    parser.add_argument("--config", help="long form: the checkpoint's config.yaml (names the model the run started from)")
    parser.add_argument("--dcp-ckpt-path", help="long form: the checkpoint's policy/weights folder")
    parser.add_argument("--hf-ckpt-path", help="output folder (short form default: <checkpoint_dir>/hf_step_N)")
    parser.add_argument("--dtype", choices=list(EXPORT_DTYPES), default="bfloat16", help="weight dtype (default: bfloat16)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest safetensors file, e.g. 5GB, 500MB (default: 5GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip loading the export back to check it")
    args = parser.parse_args(argv)
    if args.checkpoint and (args.config or args.dcp_ckpt_path):
        parser.error("give either a checkpoint folder or --config with --dcp-ckpt-path, not both")
    if not args.checkpoint and not (args.config and args.dcp_ckpt_path and args.hf_ckpt_path):
        parser.error("give a checkpoint folder, or all of --config, --dcp-ckpt-path and --hf-ckpt-path")
    return args


def main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    options = dict(dtype=args.dtype, max_shard_size=args.max_shard_size, overwrite=args.overwrite, verify=args.verify)
    if args.checkpoint:
        out = export_checkpoint(args.checkpoint, args.hf_ckpt_path, **options)
    else:
        model_name, tokenizer = sources_from_run_config(args.config)
        out = export_to_hf(args.dcp_ckpt_path, args.hf_ckpt_path, config_source=model_name, tokenizer_dir=tokenizer, **options)
    s = describe_export(out)
    print(f"wrote {out}")
    print(f"{s.parameters:,} parameters, {s.dtype}, {s.shards} shard(s), {s.bytes / 1e9:.2f} GB, "
          f"{'verified' if args.verify else 'not verified'}, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    set_runtime_defaults()
    args = parse_args(sys.argv[1:])
    sys.exit(run_reporting_user_errors(lambda: main(args)))
