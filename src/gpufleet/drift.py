"""Drift: what differs between a host and the inventory, weeks after the rollout.

Pure comparisons (`compare_files`, `compare_processes`, `compare_versions`) over what `read_drift`
gathers in one SSH session: hashes of gpufleet's files, the vLLM processes with their real command
lines, the installed ROCm and vLLM versions.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from gpufleet.adopt import RunningVllm, read_vllm_processes, service_from_argv
from gpufleet.host import layout
from gpufleet.host.ssh import Session
from gpufleet.plan import Finding, PlannedHost
from gpufleet.render import RenderedFile

MANAGED_GLOBS = " ".join(layout.MANAGED_GLOBS)
VENV_PYTHON = "/opt/gpufleet/venv/bin/python"


@dataclass
class DriftReading:
    host: str
    hashes: dict[str, str] = field(default_factory=dict)  # path -> sha256 of managed files
    processes: list[RunningVllm] = field(default_factory=list)
    rocm_version: str | None = None
    vllm_version: str | None = None
    images: dict[str, str] = field(default_factory=dict)  # container name -> image


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def compare_files(host: str, rendered: list[RenderedFile], hashes: dict[str, str],
                  secrets_known: bool) -> list[Finding]:
    """Unit and env files by content hash; managed files the plan no longer has."""
    out = []
    wanted = {f.path: f for f in rendered}
    for path, file in sorted(wanted.items()):
        if file.secret and not secrets_known:
            continue  # without the secret values the expected hash is unknown
        if path not in hashes:
            out.append(Finding("error", "file_missing", f"{path} is missing", host))
        elif hashes[path] != sha256(file.content):
            out.append(Finding("error", "file_changed", f"{path} differs from the plan", host,
                               hint="`gpufleet deploy --diff` shows how; deploy to restore it"))
    for path in sorted(set(hashes) - set(wanted)):
        out.append(Finding("error", "file_unplanned",
                           f"{path} is on the host but not in the inventory", host,
                           hint="a service removed from the inventory? deploy removes it"))
    return out


def compare_processes(planned: PlannedHost, processes: list[RunningVllm]) -> list[Finding]:
    """Running vLLM flags vs the plan's; vLLM servers no unit of the plan started."""
    out = []
    by_unit = {layout.unit_id(s.name): s for s in planned.services}
    for proc in processes:
        svc = by_unit.get(proc.unit or "")
        if svc is None:
            out.append(Finding(
                "error", "unmanaged_process",
                f"vLLM serving {_model(proc)} runs outside gpufleet (unit "
                f"{proc.unit or 'none'}): {' '.join(proc.argv)[:160]}", planned.name,
                hint="stop it or adopt it with `gpufleet import`",
            ))
            continue
        want = service_from_argv(["vllm", *svc.vllm_args], {}, svc.name)
        got = service_from_argv(proc.argv, {}, svc.name)
        changed = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        if changed:
            detail = ", ".join(f"{k}: {got.get(k)!r} (plan {want.get(k)!r})" for k in changed)
            out.append(Finding("error", "flags_drifted", f"running with {detail}",
                               planned.name, None, svc.name,
                               "restart it (deploy) so it runs what its unit says"))
    return out


def _model(proc: RunningVllm) -> str:
    try:
        return service_from_argv(proc.argv, {}, "x")["model"]
    except Exception:  # a command line we cannot read is still reported, by its text
        return "?"


def compare_versions(planned: PlannedHost, reading: DriftReading, rocm: str, vllm: str,
                     images: dict[str, str]) -> list[Finding]:
    out = []
    if reading.rocm_version is None:
        out.append(Finding("info", "rocm_version_unknown",
                           "no /opt/rocm/.info/version or rocm-core package", planned.name))
    elif not reading.rocm_version.startswith(rocm):
        out.append(Finding("error", "rocm_version", f"ROCm {reading.rocm_version} installed, "
                           f"inventory says {rocm}", planned.name))
    if reading.vllm_version is not None and reading.vllm_version != vllm:
        out.append(Finding("error", "vllm_version", f"vLLM {reading.vllm_version} installed, "
                           f"inventory says {vllm}", planned.name))
    for name, image in sorted(reading.images.items()):
        if name in images and images[name] != image:
            out.append(Finding("error", "image_drifted", f"{name} runs {image}, inventory "
                               f"says {images[name]}", planned.name))
    return out


# ---------------------------------------------------------------- reading a host


def parse_hashes(text: str) -> dict[str, str]:
    hashes = {}
    for line in text.splitlines():
        digest, _, path = line.partition("  ")
        if re.fullmatch(r"[0-9a-f]{64}", digest):
            hashes[path.strip()] = digest
    return hashes


def read_drift(session: Session, planned: PlannedHost) -> DriftReading:
    reading = DriftReading(planned.name)
    reading.hashes = parse_hashes(
        session.run(f"sha256sum {MANAGED_GLOBS} 2>/dev/null").stdout)
    reading.processes = read_vllm_processes(session)
    rocm = session.run("cat /opt/rocm/.info/version 2>/dev/null || "
                       "dpkg-query -W -f '${Version}' rocm-core 2>/dev/null").stdout.strip()
    reading.rocm_version = rocm or None
    vllm = session.run(f"test -x {VENV_PYTHON} && {VENV_PYTHON} -c "
                       "'import vllm; print(vllm.__version__)' 2>/dev/null").stdout.strip()
    reading.vllm_version = vllm.splitlines()[-1] if vllm else None
    for engine in ("docker", "podman"):
        out = session.run(f"command -v {engine} >/dev/null && {engine} ps "
                          "--format '{{.Names}} {{.Image}}'").stdout
        for line in out.splitlines():
            name, _, image = line.partition(" ")
            if layout.service_of(name):
                reading.images[name] = image.strip()
    return reading
