"""The service account every gpufleet unit runs as."""

from __future__ import annotations

from pyinfra import host
from pyinfra.operations import server

from gpufleet.deploys.settings import setting


def service_user() -> None:
    """Ensure the system user exists in the GPU groups (rocm and runtime both call this)."""
    user, groups = setting("gpufleet_service_user"), setting("gpufleet_gpu_groups")
    for group in host.loop(groups):
        server.group(name=f"Ensure the {group} group exists.", group=group, system=True)
    server.user(name=f"Ensure the {user} service user is in the GPU groups.", user=user,
                system=True, groups=groups, append=True, home=setting("gpufleet_service_home"),
                shell="/usr/sbin/nologin", create_home=False)
