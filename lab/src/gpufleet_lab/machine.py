"""One lab host's life on the test machine: rootfs overlay, identity, boot, stop, teardown."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from gpufleet_lab import net, procs
from gpufleet_lab.config import LabConfig
from gpufleet_lab.sh import LabError, log, run, start_detached, write
from gpufleet_lab.ssh import make_host_key

# Restarts nspawn when the guest reboots (exit 133), each boot in a fresh time namespace so the
# guest's uptime starts near 0 (pyinfra's server.reboot compares uptimes). $0 is the BOOT_TAG.
BOOT_SCRIPT = r"""
set -u
name=$1 root=$2; shift 2
for cg in "$@"; do echo $$ > "$cg/cgroup.procs"; done
while :; do
  up=$(cut -d. -f1 /proc/uptime)
  unshare --time --fork --boottime=-$((up - 1)) --monotonic=-$((up - 1)) \
    systemd-nspawn --quiet --boot --directory="$root" --machine="$name" \
      --register=no --keep-unit --network-namespace-path="/run/netns/$name" --private-network \
      --resolv-conf=off --timezone=off --link-journal=no --console=read-only
  rc=$?
  [ "$rc" -eq 133 ] || exit "$rc"
  echo "gpufleet-lab: $name rebooted"
done
"""
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


def overlay_source(name: str) -> str:
    return f"gpufleet-lab-{name}"  # the mount's source field: leftovers are found by it


def prepare(
    cfg: LabConfig,
    base: Path,
    name: str,
    address: str,
    all_hosts: Sequence[tuple[str, str]],
    client_pub: str,
) -> str:
    """Network, a fresh overlay and identity for a host; returns its public host key line."""
    net.add_host_net(cfg, name, address)
    d = cfg.host_dir(name)
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={base},upperdir={d / 'upper'},workdir={d / 'work'}"
    run(["mount", "-t", "overlay", overlay_source(name), "-o", opts, d / "root"])
    root = d / "root"
    write(root / "etc/hostname", name + "\n")
    write(root / "etc/machine-id", uuid.uuid4().hex + "\n", mode=0o444)
    # minbase has no /etc/hosts; sudo and getfqdn() look their own name up
    hosts = ["127.0.0.1 localhost", f"127.0.1.1 {name}", f"{cfg.bridge_ip} lab-mirror"]
    hosts += [f"{addr} {n}" for n, addr in all_hosts]
    write(root / "etc/hosts", "\n".join(hosts) + "\n")
    # Nothing listens on the bridge's port 53: lookups fail at once instead of hanging.
    write(root / "etc/resolv.conf", f"nameserver {cfg.bridge_ip}\noptions timeout:1 attempts:1\n")
    _authorize(root, "root", client_pub)
    _authorize(root, "deploy", client_pub)
    return make_host_key(root)


def _authorize(root: Path, user: str, pub: str) -> None:
    entry = next(
        ln.split(":")
        for ln in (root / "etc/passwd").read_text().splitlines()
        if ln.startswith(user + ":")
    )
    uid, gid, home = int(entry[2]), int(entry[3]), root / entry[5].lstrip("/")
    ssh_dir = home / ".ssh"
    write(ssh_dir / "authorized_keys", pub, mode=0o600)
    for p in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(p, uid, gid)
    ssh_dir.chmod(0o700)


def boot(cfg: LabConfig, name: str) -> None:
    """Start the host's launcher (bash loop around unshare + systemd-nspawn), detached."""
    cgroups = procs.host_cgroups(cfg, name)
    root = cfg.host_dir(name) / "root"
    argv = ["bash", "-c", BOOT_SCRIPT, f"{procs.BOOT_TAG}:{name}", name, str(root)]
    start_detached([*argv, *map(str, cgroups)], cfg.run_dir / f"{name}.log", env=CLEAN_ENV)


def exec_in(
    cfg: LabConfig,
    name: str,
    cmd: str | Sequence[str],
    *,
    timeout: float = 60,
    check: bool = False,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command inside a host (nsenter into all its namespaces), as root, without ssh."""
    pid = procs.guest_init_pid(cfg, name)
    if pid is None:
        raise LabError(f"lab host {name} is not running")
    env = ["env", "-i", *(f"{k}={v}" for k, v in CLEAN_ENV.items()), "HOME=/root", "TERM=dumb"]
    argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    return run(
        ["nsenter", "-t", str(pid), "-a", *env, *argv],
        check=check,
        timeout=timeout,
        input=input,
        quiet=True,
    )


def stop(cfg: LabConfig, names: Sequence[str] | None, timeout: float = 10.0) -> None:
    """Clean poweroff (SIGTERM to nspawn), then kill whatever is left in the hosts' cgroups.

    names=None means every host of the lab, including ones only leftovers still know about.
    """
    pids = _pids(cfg, names, procs.nspawn_pids)
    procs.signal_all(pids, signal.SIGTERM)
    left = procs.wait_gone(pids, timeout)
    if left:
        log.warning("nspawn %s did not power off in %.0f s; killing", left, timeout)
    for top in procs.lab_cgroup_roots(cfg):
        for d in [top / n for n in names] if names is not None else [top]:
            if d.is_dir():
                procs.kill_cgroup_tree(d)
    # Launchers whose cgroup placement failed are not in the cgroups; find them by their tag.
    procs.signal_all(_pids(cfg, names, procs.launcher_pids), signal.SIGKILL)
    procs.signal_all(_pids(cfg, names, procs.nspawn_pids), signal.SIGKILL)


def _pids(
    cfg: LabConfig,
    names: Sequence[str] | None,
    finder: Callable[[LabConfig, str | None], list[int]],
) -> list[int]:
    if names is None:
        return finder(cfg, None)
    return [pid for n in names for pid in finder(cfg, n)]


def lab_mounts(cfg: LabConfig, name: str | None = None) -> list[str]:
    """Mount points of this lab's overlays (by source name or by path), deepest first."""
    host_re = re.escape(name) if name else re.escape(cfg.prefix) + r"\d{1,2}"
    src = re.compile(f"gpufleet-lab-{host_re}$")
    under = str(cfg.host_dir(name) if name else cfg.run_dir) + "/"
    points = []
    for line in Path("/proc/mounts").read_text().splitlines():
        source, point = line.split()[:2]
        point = point.replace("\\040", " ")
        if src.match(source) or (point + "/").startswith(under):
            points.append(point)
    return sorted(set(points), key=lambda p: -p.count("/"))


def unmount_all(cfg: LabConfig, name: str | None = None) -> None:
    for point in lab_mounts(cfg, name):
        if run(["umount", point], check=False).returncode != 0:
            log.warning("umount %s failed; detaching it lazily", point)
            run(["umount", "-l", point], check=False)


def teardown(cfg: LabConfig, name: str) -> None:
    """Remove one host entirely: processes, overlay (and its upper dir), netns and veth."""
    stop(cfg, [name])
    unmount_all(cfg, name)
    net.remove_host_net(name)
    if lab_mounts(cfg, name):
        raise LabError(f"{name}: overlay still mounted, not deleting {cfg.host_dir(name)}")
    shutil.rmtree(cfg.host_dir(name), ignore_errors=True)
