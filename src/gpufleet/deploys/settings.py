"""The deploy settings: defaults from group_data/all.py, values from pyinfra host data."""

from __future__ import annotations

import runpy
from functools import cache
from pathlib import Path
from typing import Any

from pyinfra import host

PREFIX = "gpufleet_"
_CANDIDATES = (
    Path(__file__).resolve().parents[3] / "group_data" / "all.py",  # a checkout
    Path(__file__).resolve().parents[1] / "_group_data" / "all.py",  # the installed wheel
)


@cache
def defaults() -> dict[str, Any]:
    """Every `gpufleet_*` knob of group_data/all.py: the single source of the defaults."""
    for path in _CANDIDATES:
        if path.is_file():
            values = runpy.run_path(str(path))
            return {k: v for k, v in values.items() if k.startswith(PREFIX)}
    raise FileNotFoundError(f"group_data/all.py not found (looked in {_CANDIDATES})")


def setting(name: str) -> Any:
    """The current host's value of a knob; an unknown name is a programming error."""
    if name not in defaults():
        raise KeyError(f"{name} is not a gpufleet setting (see group_data/all.py)")
    return host.data.get(name, defaults()[name])
