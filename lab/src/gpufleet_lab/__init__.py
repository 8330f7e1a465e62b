"""The lab: real test hosts (systemd-nspawn + netns + overlayfs + sshd) on one machine.

Used by the e2e tests and by `gpufleet lab up|down|status`. See shared/facts/testhosts.md.
"""

from gpufleet_lab.config import Lab, LabConfig, LabHost
from gpufleet_lab.hosts import (
    HostStatus,
    cut_link,
    destroy_host,
    down,
    exec_in,
    load,
    recreate_host,
    restore_link,
    status,
    up,
)
from gpufleet_lab.sh import LabError, preflight_problem

__all__ = [
    "HostStatus",
    "Lab",
    "LabConfig",
    "LabError",
    "LabHost",
    "cut_link",
    "destroy_host",
    "down",
    "exec_in",
    "load",
    "preflight_problem",
    "recreate_host",
    "restore_link",
    "status",
    "up",
]
