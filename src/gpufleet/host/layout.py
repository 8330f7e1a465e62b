"""Every name and path gpufleet uses on a host, in one place.

A unit is `gpufleet-<service>.service`, its environment `/etc/gpufleet/<service>.env`, its
container `gpufleet-<service>`; the host's services are grouped by `gpufleet.target`; the last
known-good set of files lives under /var/lib/gpufleet; a run holds its lock in /run/gpufleet.
render writes these names, the deploys and the rollout change them, validate, status and drift
read them back: all of them ask this module, so the convention can change in one line.
"""

from __future__ import annotations

UNIT_DIR = "/etc/systemd/system"
CONFIG_DIR = "/etc/gpufleet"
PLAN_FILE = f"{CONFIG_DIR}/plan.json"
TARGET = "gpufleet.target"
CACHE_DIR = "/var/cache/gpufleet"  # HOME of the venv services: torch, triton and vLLM caches
STATE_DIR = "/var/lib/gpufleet"
KNOWN_GOOD = f"{STATE_DIR}/known-good"
LOCK_DIR = "/run/gpufleet"
HOST_LOCK = f"{LOCK_DIR}/deploy.lock"

PREFIX = "gpufleet-"
SUFFIX = ".service"
UNIT_GLOB = f"{PREFIX}*{SUFFIX}"  # for systemctl and sh: every gpufleet service unit
# The files gpufleet manages on a host, as sh globs (drift, known-good copies).
MANAGED_GLOBS = (f"{UNIT_DIR}/{UNIT_GLOB}", f"{UNIT_DIR}/{TARGET}", f"{CONFIG_DIR}/*")


def unit_id(service: str) -> str:
    """`chat` -> `gpufleet-chat`: the unit without its suffix (cgroups, smi process maps)."""
    return f"{PREFIX}{service}"


def unit_name(service: str) -> str:
    """`chat` -> `gpufleet-chat.service`."""
    return f"{PREFIX}{service}{SUFFIX}"


def unit_path(service: str) -> str:
    return f"{UNIT_DIR}/{unit_name(service)}"


def env_file_path(service: str) -> str:
    return f"{CONFIG_DIR}/{service}.env"


def container_name(service: str) -> str:
    """The container of a service under the container runtime."""
    return f"{PREFIX}{service}"


def service_of(unit: str) -> str | None:
    """The service of a gpufleet unit, with or without its suffix or folder; None for any
    other unit (`gpufleet.target`, `sshd.service`)."""
    base = unit.rsplit("/", 1)[-1].removesuffix(SUFFIX)
    if base.startswith(PREFIX) and len(base) > len(PREFIX):
        return base[len(PREFIX):]
    return None


def owner_of(path: str, services: list[str]) -> str | None:
    """The service a managed file belongs to (its unit or its env file), if any."""
    for name in services:
        if path in (unit_path(name), env_file_path(name)):
            return name
    return None
