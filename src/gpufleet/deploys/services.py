"""The units: upload what render made, reload systemd once, restart only what changed.

Order on every host: retire services no longer planned, upload files, one daemon-reload if a
unit changed or went away, then per service in plan order a restart when its unit or env
changed (only if running, so a new unit is not started twice) and enable + start.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from gpufleet.deploys import operations as ops
from gpufleet.deploys import wanted
from gpufleet.deploys.settings import defaults
from gpufleet.deploys.target import HostTarget
from gpufleet.facts import GpufleetUnits
from gpufleet.host.layout import TARGET, UNIT_DIR, env_file_path, owner_of, unit_name
from gpufleet.render import RenderedFile


@deploy("Services", data_defaults=defaults())
def services(target: HostTarget) -> None:
    names = [planned.name for planned in target.services]
    installed: list[str] = host.get_fact(GpufleetUnits)
    retired = retire(sorted(set(installed) - set(names)))
    changed: dict[str, list[OperationMeta]] = {name: [] for name in names}
    units: list[OperationMeta] = []
    batch = tuple(sorted(f.path for f in target.files))
    unit_batch = tuple(wanted.services(target).units)
    for rendered in host.loop(target.files):
        meta = upload(rendered, batch)
        if rendered.path.startswith(f"{UNIT_DIR}/"):
            units.append(meta)
        owner = owner_of(rendered.path, names)
        if owner is not None:
            changed[owner].append(meta)
    systemd.daemon_reload(name="Reload systemd because a gpufleet unit changed.",
                          _if=any_changed(*units, *retired))
    for name in host.loop(names):
        start(name, changed[name], unit_batch)
    if TARGET in unit_batch:
        ops.unit_running(name="Ensure gpufleet.target is enabled and active.", unit=TARGET,
                         batch=unit_batch)


def upload(rendered: RenderedFile, batch: tuple[str, ...]) -> OperationMeta:
    operation = ops.secret_file if rendered.secret else ops.atomic_file
    suffix = " (secret)" if rendered.secret else ""
    return operation(name=f"Ensure {rendered.path} is up to date{suffix}.", dest=rendered.path,
                     content=rendered.content, mode=rendered.mode.lstrip("0"),
                     user=rendered.owner, group=rendered.group, batch=batch)


def start(name: str, changed: list[OperationMeta], batch: tuple[str, ...]) -> None:
    unit = unit_name(name)
    # Restart BEFORE ensuring running, and only if already running: a new unit starts once.
    systemd.service(name=f"Restart {name} because its unit or environment changed.",
                    service=unit, running=None, restarted=True, _if=any_changed(*changed))
    ops.unit_running(name=f"Ensure {name} is enabled and running.", unit=unit, batch=batch)


def retire(stale: list[str]) -> list[OperationMeta]:
    """Stop, disable and remove services no longer in the inventory; returns the unit removals."""
    removed = []
    for name in host.loop(stale):
        unit = unit_name(name)
        systemd.service(name=f"Stop and disable {name}: it is no longer in the inventory.",
                        service=unit, running=False, enabled=False)
        removed.append(files.file(name=f"Remove the unit of {name}.",
                                  path=f"{UNIT_DIR}/{unit}", present=False))
        files.file(name=f"Remove the environment file of {name}.",
                   path=env_file_path(name), present=False)
    return removed
