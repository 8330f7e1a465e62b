"""Where the double's fakegpu comes from: copied into the wheel, else the lab's own module."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

DEFAULT_VERSION = "0.11.0"


def _first(*names: str) -> ModuleType:
    """Import the first module that exists (relative names resolve against this package)."""
    error: ImportError | None = None
    for name in names:
        try:
            return importlib.import_module(name, __package__)
        except ImportError as e:  # a source checkout has no ._fakegpu
            error = e
    raise ImportError(f"none of {names} can be imported") from error


def fakegpu() -> ModuleType:
    return _first("._fakegpu", "gpufleet_lab.fakegpu")


def emulated_version() -> str:
    """The vLLM release the double claims to be (baked in at wheel build; env overrides)."""
    if os.environ.get("VLLM_TEST_DOUBLE_VLLM_VERSION"):
        return os.environ["VLLM_TEST_DOUBLE_VLLM_VERSION"]
    try:
        return str(_first("._build_info").EMULATED_VERSION)
    except ImportError:
        return DEFAULT_VERSION
