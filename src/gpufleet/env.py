"""The environment a command runs in: its consoles. Injectable so CLI tests run in-process."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import IO

from rich.console import Console
from rich.text import Text

PIPE_WIDTH = 120  # rich assumes 80 columns when not on a terminal: too narrow for the plan


def _console(stream: IO[str]) -> Console:
    width = None if stream.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
    return Console(file=stream, highlight=False, soft_wrap=False, width=width)


@dataclass
class Environment:
    """stdout/stderr for a command; tests pass StringIO streams and a fixed width."""

    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    width: int | None = None
    stdin: IO[str] = field(default_factory=lambda: sys.stdin)

    def __post_init__(self) -> None:
        self.out = _console(self.stdout)
        self.err = _console(self.stderr)
        if self.width:
            self.out.width = self.err.width = self.width

    def error(self, message: str) -> None:
        """Print an error; the message is plain text (never parsed as rich markup)."""
        self.err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)

    def warn(self, message: str) -> None:
        """Print a warning; the message is plain text (never parsed as rich markup)."""
        self.err.print(Text.assemble(("warning:", "bold yellow"), " ", message), highlight=False)

    @property
    def interactive(self) -> bool:
        """Someone at a terminal can answer: stdin and stderr are both a TTY."""
        return _isatty(self.stdin) and _isatty(self.stderr)

    def confirm(self, question: str) -> bool:
        """Ask `question [y/N]` on a terminal; without one, never ask (scripts and CI run
        unattended: the command line they wrote is their answer). End of input means no."""
        if not self.interactive:
            return True
        self.err.print(Text.assemble((question, "bold"), " [y/N] "), end="")
        self.stderr.flush()
        answer = self.stdin.readline()
        return answer.strip().lower() in ("y", "yes")

    def write_json(self, text: str) -> None:
        self.stdout.write(text + "\n")


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a file
        return False
