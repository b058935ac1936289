"""The command-line front shared by the example scripts: `--config FILE [a.b=c ...] [--print-config]`.

User errors (a bad key, a missing file, a dataset that cannot load) end the program with one
line on stderr and exit status 2, never a traceback. A run that a collapse guard stops ends with
one line on stderr naming the rule and the values, and exit status 3. SIGTERM / SIGINT end a
training run with one line and exit status 128 + signal (143 / 130); a worker that died, with one
line naming it and exit status 1 (see docs/reliability.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from nemo_grpo.config import load_config, to_yaml
from nemo_grpo.logging.guards import GuardStop
from nemo_grpo.utils.errors import RunEnded, UserError

REPO_ROOT = Path(__file__).resolve().parents[1]

OVERRIDE_HELP = """\
overrides:
  a.b=c       change a key that exists (values are YAML: 3, 1e-6, true, null, [1, 2])
  ++a.b=c     add a key that exists nowhere yet
  ${a.b} and ${mul:${a},${b}} interpolations are resolved after merging
"""


def set_runtime_defaults() -> None:
    """Environment settings every entry point needs (see ENVIRONMENT.md): Ray must not rebuild a
    uv environment per worker, and tokenizers must not fork-warn in Ray workers."""
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_parser(description: str, default_config: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, epilog=OVERRIDE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_note = f" (default: {default_config})" if default_config else ""
    parser.add_argument("--config", default=default_config, help=f"recipe YAML file{default_note}")
    parser.add_argument("--print-config", action="store_true", help="print the fully resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="config overrides, a.b=c or ++a.b=c")
    return parser


def run_cli(
    argv: list[str] | None,
    *,
    description: str,
    schema: type,
    main: Callable[[Any, argparse.Namespace], int | None],
    default_config: str | None = None,
    extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    set_runtime_defaults()
    parser = make_parser(description, default_config)
    if extra_args:
        extra_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def configured_main() -> int | None:
        cfg = load_config(args.config, args.overrides, schema)
        if args.print_config:
            sys.stdout.write(to_yaml(cfg))
            return 0
        return main(cfg, args)

    return run_reporting_user_errors(configured_main)


def run_reporting_user_errors(main: Callable[[], int | None]) -> int:
    """Run `main`; a user error ends it with one `error: ...` line on stderr and status 2, a
    collapse guard's stop with its one-line message and status 3, a preemption signal (`Preempted`)
    with 128 + the signal (143: SIGTERM, 130: SIGINT), a dead worker (`WorkerDied`) with 1."""
    try:
        return int(main() or 0)
    except (GuardStop, RunEnded) as exc:  # a guard, a signal or a dead worker ended the run
        print(str(exc), file=sys.stderr, flush=True)
        return exc.exit_status
    except (UserError, FileNotFoundError) as exc:  # FileNotFoundError: a path the user gave
        print(f"error: {exc}", file=sys.stderr)
        return 2
