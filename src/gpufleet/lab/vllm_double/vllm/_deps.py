"""Where the double's planner and fakegpu come from: vendored in the wheel, else gpufleet."""

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
        except ImportError as e:  # a source checkout has no ._planner / ._fakegpu
            error = e
    raise ImportError(f"none of {names} can be imported") from error


def memory() -> ModuleType:
    return _first("._planner.memory", "gpufleet.memory")


def models() -> ModuleType:
    return _first("._planner.models", "gpufleet.models")


def errors() -> ModuleType:
    return _first("._planner.errors", "gpufleet.errors")


def fakegpu() -> ModuleType:
    return _first("._fakegpu", "gpufleet.lab.fakegpu")


def emulated_version() -> str:
    """The vLLM release the double claims to be (baked in at wheel build; env overrides)."""
    if os.environ.get("VLLM_TEST_DOUBLE_VLLM_VERSION"):
        return os.environ["VLLM_TEST_DOUBLE_VLLM_VERSION"]
    try:
        return str(_first("._build_info").EMULATED_VERSION)
    except ImportError:
        return DEFAULT_VERSION
