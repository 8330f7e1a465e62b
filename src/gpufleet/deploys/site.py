"""The whole host, step by step: rocm -> tuning -> runtime -> weights -> services."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyinfra.api import deploy

from gpufleet.deploys.rocm import rocm
from gpufleet.deploys.runtime import runtime
from gpufleet.deploys.services import services
from gpufleet.deploys.settings import defaults
from gpufleet.deploys.target import HostTarget
from gpufleet.deploys.tuning import tuning
from gpufleet.deploys.weights import weights

STEPS: dict[str, Callable[..., object]] = {
    "rocm": rocm,
    "tuning": tuning,
    "runtime": runtime,
    "weights": weights,
    "services": services,
}


def check_steps(steps: Sequence[str]) -> list[str]:
    """The chosen steps in deploy order; unknown names raise ValueError."""
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(unknown)}; steps: {', '.join(STEPS)}")
    return [s for s in STEPS if s in steps]


@deploy("gpufleet", data_defaults=defaults())
def site(target: HostTarget, steps: Sequence[str] = tuple(STEPS)) -> None:
    for step in check_steps(steps):
        STEPS[step](target)
