"""vLLM-style log lines on stderr (journald keeps them): `INFO 11-26 10:57:01 [file.py:42] ...`."""

from __future__ import annotations

import sys
import time


def log(level: str, where: str, message: str) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"{level} {stamp} [{where}] {message}", file=sys.stderr, flush=True)


def info(where: str, message: str) -> None:
    log("INFO", where, message)


def warning(where: str, message: str) -> None:
    log("WARNING", where, message)


def error(where: str, message: str) -> None:
    log("ERROR", where, message)
