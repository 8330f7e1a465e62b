"""Process and cgroup bookkeeping for lab hosts.

Each host's launcher is moved into `<hierarchy>/<own cgroup>/gpufleet-lab/<prefix>/<host>` in
the name=systemd, unified and memory hierarchies before it starts nspawn. That keeps two hosts'
`payload` cgroups apart (nspawn --keep-unit nests below its own cgroup) and lets `down` find and
kill a guest's systemd even when nspawn was SIGKILLed and the guest was reparented to PID 1.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from gpufleet_lab.config import LabConfig

CGROUP_ROOT = Path("/sys/fs/cgroup")
BOOT_TAG = "gpufleet-lab-boot"  # $0 of each host's launcher, so leftovers are found by name


def _hierarchies() -> list[tuple[Path, str]]:
    """(mount point, our own cgroup path in it) for the hierarchies we place hosts in."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        own[ctrls] = path
    found: list[tuple[Path, str]] = []
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mnt, fstype, opts, *_ = line.split()
        options = opts.split(",")
        if fstype == "cgroup2":
            found.append((Path(mnt), own.get("", "/")))
        elif fstype == "cgroup" and "name=systemd" in options:
            found.append((Path(mnt), own.get("name=systemd", "/")))
        elif fstype == "cgroup" and "memory" in options:
            found.append((Path(mnt), own.get("memory", "/")))
    return found


def host_cgroups(cfg: LabConfig, name: str) -> list[Path]:
    """Create (if needed) and return the host's cgroup dirs, one per hierarchy."""
    dirs = []
    for mnt, own in _hierarchies():
        d = mnt / own.lstrip("/") / cfg.cgroup_rel / name
        d.mkdir(parents=True, exist_ok=True)
        dirs.append(d)
    return dirs


def lab_cgroup_roots(cfg: LabConfig) -> list[Path]:
    """Every `gpufleet-lab/<prefix>` dir in any hierarchy, wherever the creator's cgroup was."""
    roots: list[Path] = []
    for mnt, _ in _hierarchies():
        roots.extend(_find_dirs(mnt, cfg.cgroup_rel, depth=4))
    return roots


def remove_empty_lab_dirs() -> None:
    """rmdir the shared `gpufleet-lab` dirs once no lab has hosts below them (rmdir of a
    non-empty cgroup dir fails, so another live lab keeps its own)."""
    for mnt, _ in _hierarchies():
        for d in _find_dirs(mnt, "gpufleet-lab", depth=4):
            _rmdir(d)


def _find_dirs(top: Path, rel: str, depth: int) -> Iterator[Path]:
    if (top / rel).is_dir():
        yield top / rel
    if depth == 0:
        return
    try:
        children = [c for c in top.iterdir() if c.is_dir() and c.name != "gpufleet-lab"]
    except OSError:
        return
    for child in children:
        yield from _find_dirs(child, rel, depth - 1)


def cgroup_pids(top: Path) -> set[int]:
    pids: set[int] = set()
    for procs in top.rglob("cgroup.procs"):
        try:
            pids.update(int(p) for p in procs.read_text().split())
        except OSError:
            continue
    return pids


def kill_cgroup_tree(top: Path, timeout: float = 5.0) -> None:
    """SIGKILL everything in a cgroup subtree, then remove its dirs (leaves first)."""
    kill = top / "cgroup.kill"  # cgroup v2: kills the whole subtree atomically
    if kill.exists():
        try:
            kill.write_text("1")
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while (pids := cgroup_pids(top)) and time.monotonic() < deadline:
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.05)
    for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _rmdir(d)
    _rmdir(top)


def _rmdir(d: Path) -> None:
    try:
        d.rmdir()
    except OSError:
        pass


def iter_procs() -> Iterator[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if raw:
            yield int(entry.name), raw.decode(errors="replace").rstrip("\0").split("\0")


def nspawn_pids(cfg: LabConfig, name: str | None = None) -> list[int]:
    """systemd-nspawn processes of this lab (of one host when name is given)."""
    pids = []
    for pid, argv in iter_procs():
        if not argv[0].endswith("systemd-nspawn"):
            continue
        machine = next((a.split("=", 1)[1] for a in argv if a.startswith("--machine=")), "")
        if (machine == name) if name else cfg.is_host_name(machine):
            pids.append(pid)
    return pids


def launcher_pids(cfg: LabConfig, name: str | None = None) -> list[int]:
    pids = []
    for pid, argv in iter_procs():
        tags = [a for a in argv if a.startswith(BOOT_TAG + ":")]
        if tags:
            host = tags[0].split(":", 1)[1]
            if (host == name) if name else cfg.is_host_name(host):
                pids.append(pid)
    return pids


def guest_init_pid(cfg: LabConfig, name: str) -> int | None:
    """The host's PID 1 (its systemd), seen from the test machine: NSpid ends in 1."""
    for top in lab_cgroup_roots(cfg):
        for pid in sorted(cgroup_pids(top / name) if (top / name).is_dir() else ()):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            nspid = [ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")]
            if nspid and len(nspid[0]) == 2 and nspid[0][1] == "1":
                return pid
    return None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        _signal(pid, sig)


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until the pids exit; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
        if alive:
            time.sleep(0.05)
    return alive


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
