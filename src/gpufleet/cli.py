"""The `gpufleet` command line: thin. Parses arguments, calls one stage, hands the result to a view.

Each subcommand lives in `gpufleet.commands.<name>` and exposes:
    add_parser(subparsers) -> argparse.ArgumentParser   (sets `func` via set_defaults)
    run(args, env) -> int                              (returns an ExitStatus)
Other distributions add commands the same way through the `gpufleet.commands` entry point
group (the lab, `pip install -e ./lab`, adds `gpufleet lab`).
`main()` owns error handling and exit codes (httpie style): a GpufleetError becomes a short message
and its exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from gpufleet import __version__
from gpufleet.commands import SUMMARIES, module_of
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, GpufleetError

ENTRY_POINTS = "gpufleet.commands"
# Commands of other distributions, and how to get each when it is missing.
OPTIONAL = {"lab": ("boot, inspect and remove lab test hosts (needs the gpufleet-lab "
                    "distribution)", "pip install -e ./lab (from a gpufleet checkout)")}


class _Parser(argparse.ArgumentParser):
    """argparse that exits with BAD_INPUT (2) on usage errors, with the usage line as a hint."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(ExitStatus.BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, that command's module alone is imported and the
    others are listed by their summaries (enough for argparse to route and to print usage)."""
    parser = _Parser(
        prog="gpufleet",
        description="Plan, provision and validate multi-model vLLM fleets on AMD MI300X hosts.",
    )
    parser.add_argument("--version", action="version", version=f"gpufleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, summary in SUMMARIES.items():
        if only is None or name == only:
            importlib.import_module(module_of(name)).add_parser(sub)
        else:
            sub.add_parser(name, help=summary, add_help=False)
    installed = plugins()
    for _, ep in sorted(installed.items()):
        ep.load().add_parser(sub)
    for name, (help_text, _) in OPTIONAL.items():
        if name not in installed:  # still listed, so --help says what it needs
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def plugins() -> dict[str, Any]:
    """Commands other installed distributions register, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}


def program(argv: Sequence[str], env: Environment) -> int:
    argv = list(argv)
    if argv and argv[0] in OPTIONAL and argv[0] not in plugins():
        env.error(f"`gpufleet {argv[0]}` is not installed: {OPTIONAL[argv[0]][1]}")
        return ExitStatus.BAD_INPUT
    command = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(command if command in SUMMARIES else None).parse_args(argv)
    if getattr(args, "needs_full_parser", False):  # `completion` lists every command's flags
        args.full_parser = build_parser()
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
