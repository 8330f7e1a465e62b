"""Errors meant for people, and the exit codes the CLI maps them to."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Named exit codes (httpie style): every command returns one of these."""

    OK = 0
    FINDINGS = 1  # the command ran and found errors (plan does not fit, validation failed, drift)
    BAD_INPUT = 2  # the input is invalid: nothing was done


class GpufleetError(Exception):
    """Base class for errors gpufleet reports without a traceback."""

    exit_status = ExitStatus.FINDINGS


class InputError(GpufleetError):
    """Bad input: says what is wrong, where it is, and what to do about it.

    `where` is a location an operator can jump to: `file:line:col`, or `host/gpu/service`.
    """

    exit_status = ExitStatus.BAD_INPUT

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(what)
        self.what = what
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        head = f"{self.where}: {self.what}" if self.where else self.what
        return f"{head}\n  hint: {self.hint}" if self.hint else head


class InputErrors(InputError):
    """Several input errors found in one pass, reported together (one screen)."""

    def __init__(self, errors: list[InputError]):
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
