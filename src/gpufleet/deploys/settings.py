"""The deploy settings: defaults from group_data/all.py, values from pyinfra host data."""

from __future__ import annotations

from typing import Any

from pyinfra import host

from gpufleet.settings import PREFIX, defaults

__all__ = ["PREFIX", "defaults", "setting", "settings_now"]


def setting(name: str) -> Any:
    """The current host's value of a knob; an unknown name is a programming error."""
    if name not in defaults():
        raise KeyError(f"{name} is not a gpufleet setting (see group_data/all.py)")
    return host.data.get(name, defaults()[name])


def settings_now() -> dict[str, Any]:
    """Every knob's value for the current host (what the pure wanted-state builders take)."""
    return {name: host.data.get(name, value) for name, value in defaults().items()}
