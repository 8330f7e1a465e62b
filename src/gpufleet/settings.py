"""Deploy settings: the `gpufleet_*` knobs of group_data/all.py and the inventory's overrides.

Pure (no pyinfra): render reads the knobs that shape unit files (service user, venv paths) from
here, the deploys read the same values through pyinfra host data.
"""

from __future__ import annotations

import runpy
from functools import cache
from pathlib import Path
from typing import Any

from gpufleet.inventory import Inventory

PREFIX = "gpufleet_"
_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "group_data" / "all.py",  # a checkout
    Path(__file__).resolve().parent / "_group_data" / "all.py",  # the installed wheel
)


@cache
def defaults() -> dict[str, Any]:
    """Every `gpufleet_*` knob of group_data/all.py: the single source of the defaults."""
    for path in _CANDIDATES:
        if path.is_file():
            values = runpy.run_path(str(path))
            return {k: v for k, v in values.items() if k.startswith(PREFIX)}
    raise FileNotFoundError(f"group_data/all.py not found (looked in {_CANDIDATES})")


def host_setting(inv: Inventory, host: str, name: str) -> Any:
    """A knob for one host: host settings, else fleet settings, else group_data's default."""
    if name not in defaults():
        raise KeyError(f"{name} is not a gpufleet setting (see group_data/all.py)")
    return inv.hosts[host].settings.get(name, inv.fleet.settings.get(name, defaults()[name]))
