"""The `gpufleet` command line: thin. Parses arguments, calls one stage, hands the result to a view.

Each subcommand lives in `gpufleet.commands.<name>` and exposes:
    add_parser(subparsers) -> argparse.ArgumentParser   (sets `func` via set_defaults)
    run(args, env) -> int                              (returns an ExitStatus)
`main()` owns error handling and exit codes (httpie style): a GpufleetError becomes a short message
and its exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gpufleet import __version__
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, GpufleetError

COMMANDS = [
    "plan", "estimate", "models", "render", "deploy", "validate", "status", "drift", "rebuild",
    "adopt",
    "smi", "lab",
]


class _Parser(argparse.ArgumentParser):
    """argparse that exits with BAD_INPUT (2) on usage errors, with the usage line as a hint."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(ExitStatus.BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gpufleet",
        description="Plan, provision and validate multi-model vLLM fleets on AMD MI300X hosts.",
    )
    parser.add_argument("--version", action="version", version=f"gpufleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"gpufleet.commands.{name}").add_parser(sub)
    return parser


def program(argv: Sequence[str], env: Environment) -> int:
    args = build_parser().parse_args(list(argv))
    return int(args.func(args, env))


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    try:
        return program(sys.argv[1:] if argv is None else argv, env)
    except GpufleetError as exc:
        env.error(str(exc))
        return int(exc.exit_status)
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else ExitStatus.BAD_INPUT
    except KeyboardInterrupt:
        env.error("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
