"""The lab's public API: real test hosts (systemd-nspawn + netns + overlay) on this machine.

Recipe and pitfalls: shared/facts/testhosts.md. Everything here needs root.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gpufleet_lab import machine, mirror, net, procs, ssh
from gpufleet_lab.base import build_base
from gpufleet_lab.config import MAX_HOSTS, Lab, LabConfig, LabHost
from gpufleet_lab.sh import LabError, log, preflight_problem, run, write

FAKEGPU = Path(__file__).with_name("fakegpu.py")
FAKEGPU_IN_HOST = "/usr/local/lib/gpufleet-lab/fakegpu.py"


@dataclass(frozen=True)
class HostStatus:
    name: str
    address: str
    state: str  # systemd's is-system-running, or "stopped" / "link down"
    ssh_ok: bool
    uptime_s: float | None


def _require_root_tools() -> None:
    problem = preflight_problem()
    if problem:
        raise LabError(f"{problem}; install with: bash .ci/lab-deps.sh")


def load(cfg: LabConfig) -> Lab:
    """The Lab handle of a lab that is up (read from its state file)."""
    state = cfg.run_dir / "lab.json"
    if not state.exists():
        return Lab(cfg, [])
    data = json.loads(state.read_text())
    return Lab(cfg, [LabHost(name, addr) for name, addr in data["hosts"]])


def _save(lab: Lab, base: Path) -> None:
    data = {"hosts": [[h.name, h.address] for h in lab.hosts], "base": str(base)}
    write(lab.config.run_dir / "lab.json", json.dumps(data, indent=1) + "\n")
    listing = "".join(f"{h.name} {h.address}\n" for h in lab.hosts)
    write(lab.config.run_dir / "hosts.txt", listing)


def up(cfg: LabConfig, n: int) -> Lab:
    """Boot n hosts `<prefix>1..n` at `<net>.11..`, plus the lab's package mirror."""
    _require_root_tools()
    if not 1 <= n <= MAX_HOSTS:
        raise LabError(f"lab size {n}: want 1..{MAX_HOSTS} hosts")
    if procs.nspawn_pids(cfg):
        raise LabError(f"lab {cfg.prefix!r} is already up (gpufleet lab down first)")
    t0 = time.monotonic()
    down(cfg, quiet=True)  # leftovers of a crashed run would collide with names and mounts
    try:
        lab = _bring_up(cfg, n)
    except BaseException:
        # A half-up lab is useless and blocks the next `up`: roll back (host logs are in the
        # exception when boot was what failed).
        down(cfg, quiet=True)
        raise
    log.info("lab %s: %d host(s) up in %.1f s", cfg.prefix, n, time.monotonic() - t0)
    return lab


def _bring_up(cfg: LabConfig, n: int) -> Lab:
    base = build_base(cfg)
    _ensure_inotify_instances(n)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    lab = Lab(cfg, [LabHost(cfg.host_name(i), cfg.host_address(i)) for i in range(1, n + 1)])
    ssh.ensure_client_key(lab.key)
    net.ensure_bridge(cfg)
    mirror.start(cfg, mirror.build_repo(cfg, base))
    client_pub = lab.key.with_suffix(".pub").read_text()
    pairs = [(h.name, h.address) for h in lab.hosts]
    keys = {
        h.name: machine.prepare(cfg, base, h.name, h.address, pairs, client_pub) for h in lab.hosts
    }
    ssh.write_known_hosts(lab, keys)
    ssh.write_ssh_config(lab)
    _save(lab, base)
    for h in lab.hosts:
        machine.boot(cfg, h.name)
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(lambda h: _await_host(cfg, h), lab.hosts))
    return lab


def _ensure_inotify_instances(n: int) -> None:
    # Every guest systemd holds several inotify instances, all charged to the one root user;
    # at the kernel default (128) the ~20th guest fails to start (shared/facts/testhosts.md).
    # Only ever raised, never lowered: other labs on the machine may rely on it.
    path = Path("/proc/sys/fs/inotify/max_user_instances")
    want = 1024 + 16 * n
    if n > 8 and int(path.read_text()) < want:
        log.info("raising fs.inotify.max_user_instances to %d for %d hosts", want, n)
        path.write_text(str(want))


def _await_host(cfg: LabConfig, host: LabHost) -> None:
    """Wait for sshd, then for systemd to finish booting; then add the fake GPUs."""
    deadline = time.monotonic() + cfg.boot_timeout
    if not ssh.wait_sshd(host.address, host.ssh_port, deadline):
        tail = (cfg.run_dir / f"{host.name}.log").read_text(errors="replace")[-1500:]
        raise LabError(f"{host.name}: sshd did not answer in {cfg.boot_timeout:.0f} s\n{tail}")
    left = max(5.0, deadline - time.monotonic())
    state = machine.exec_in(cfg, host.name, "systemctl is-system-running --wait", timeout=left)
    if state.stdout.strip() != "running":
        failed = machine.exec_in(cfg, host.name, "systemctl --failed --no-legend --plain").stdout
        log.warning("%s: system is %s; failed units: %s", host.name, state.stdout.strip(), failed)
    _install_fake_gpus(cfg, host.name)


def _install_fake_gpus(cfg: LabConfig, name: str) -> None:
    if cfg.fake_gpus <= 0:
        return
    if not FAKEGPU.exists():
        log.info("%s: no %s yet; hosts get no fake GPUs", name, FAKEGPU.name)
        return
    dest = cfg.host_dir(name) / "root" / FAKEGPU_IN_HOST.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(FAKEGPU, dest)
    cmd = [
        "python3",
        FAKEGPU_IN_HOST,
        "install",
        "--gpus",
        str(cfg.fake_gpus),
        "--model",
        cfg.gpu_model,
    ]
    res = machine.exec_in(cfg, name, cmd, timeout=60)
    if res.returncode != 0:
        raise LabError(f"{name}: fakegpu install failed ({res.returncode}): {res.stderr[-1500:]}")


def down(cfg: LabConfig, *, quiet: bool = False) -> None:
    """Remove every trace of the lab, also after a crash/SIGKILL or with a lost state dir.

    Leftovers are found by name (netns, links, mount sources, cgroup dirs, process tags), not by
    the state dir. The cached base, debs and GPG key are kept, and so is the wheelhouse.
    """
    t0 = time.monotonic()
    machine.stop(cfg, None)
    mirror.stop(cfg)
    machine.unmount_all(cfg)
    for name in net.lab_netns(cfg):
        net.remove_host_net(name)
    for link in net.lab_links(cfg):
        if link != cfg.bridge_name:
            run(["ip", "link", "del", link], check=False)
    net.remove_bridge(cfg)
    _remove_tagged_iptables_rules(cfg)
    for top in procs.lab_cgroup_roots(cfg):
        procs.kill_cgroup_tree(top)
    procs.remove_empty_lab_dirs()
    _remove_run_dir(cfg)
    if not quiet:
        log.info("lab %s down in %.1f s", cfg.prefix, time.monotonic() - t0)


def _remove_run_dir(cfg: LabConfig) -> None:
    if machine.lab_mounts(cfg):
        raise LabError(f"lab mounts remain under {cfg.run_dir}; not deleting it")
    if not cfg.run_dir.exists():
        return
    for entry in cfg.run_dir.iterdir():
        if entry.name == "wheels" and any(entry.iterdir()):
            continue  # filled by others (test doubles); it is data, not runtime state
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if not any(cfg.run_dir.iterdir()):
        cfg.run_dir.rmdir()


def _remove_tagged_iptables_rules(cfg: LabConfig) -> None:
    # The lab adds no rules (no NAT); this removes any a future version or a user tagged
    # `gpufleet-lab-<prefix>`, so `down` stays the one cleanup.
    if shutil.which("iptables-save") is None:
        return
    tag = f"gpufleet-lab-{cfg.prefix}"
    table = ""
    for line in run(["iptables-save"], check=False).stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A ") and tag in line:
            run(["iptables", "-t", table, "-D", *line[3:].split()], check=False)


def status(cfg: LabConfig) -> list[HostStatus]:
    lab = load(cfg)
    with ThreadPoolExecutor(max_workers=max(1, len(lab.hosts))) as pool:
        return list(pool.map(lambda h: _host_status(lab, h), lab.hosts))


def _host_status(lab: Lab, host: LabHost) -> HostStatus:
    cfg = lab.config
    if procs.guest_init_pid(cfg, host.name) is None:
        return HostStatus(host.name, host.address, "stopped", False, None)
    state = machine.exec_in(cfg, host.name, "systemctl is-system-running", timeout=10)
    uptime = machine.exec_in(cfg, host.name, "cut -d' ' -f1 /proc/uptime", timeout=10)
    link = net.link_is_up(host.name)
    ok = link and ssh.ssh(lab, host, "true", timeout=8).returncode == 0
    text = state.stdout.strip() or "unknown"
    return HostStatus(
        host.name,
        host.address,
        text if link else f"{text}, link down",
        ok,
        float(uptime.stdout) if uptime.returncode == 0 else None,
    )


def destroy_host(cfg: LabConfig, name: str) -> None:
    """Take one host away completely (processes, disk, network); the rest keep running."""
    cfg.host_index(name)
    machine.teardown(cfg, name)
    lab = load(cfg)
    keys = ssh.read_known_hosts(lab)
    keys.pop(name, None)
    ssh.write_known_hosts(lab, keys)


def recreate_host(cfg: LabConfig, name: str) -> LabHost:
    """Bring a host back bare: new overlay upper dir, new machine-id, NEW host key."""
    lab = load(cfg)
    host = lab.host(name)
    machine.teardown(cfg, name)  # idempotent: also fine when destroy_host ran before
    base = Path(json.loads((cfg.run_dir / "lab.json").read_text())["base"])
    pairs = [(h.name, h.address) for h in lab.hosts]
    client_pub = lab.key.with_suffix(".pub").read_text()
    keys = ssh.read_known_hosts(lab)
    keys[name] = machine.prepare(cfg, base, name, host.address, pairs, client_pub)
    ssh.write_known_hosts(lab, keys)
    machine.boot(cfg, name)
    _await_host(cfg, host)
    return host


def cut_link(cfg: LabConfig, name: str) -> None:
    """Unplug the host's cable: its veth goes down, so ssh to it fails (ConnectTimeout)."""
    net.set_link(name, up=False)
    # Drop the cached ARP entry too, so connects fail with "no route" instead of hanging.
    run(["ip", "neigh", "flush", "dev", cfg.bridge_name, "to", _address(cfg, name)], check=False)


def restore_link(cfg: LabConfig, name: str) -> None:
    net.set_link(name, up=True)


def _address(cfg: LabConfig, name: str) -> str:
    return cfg.host_address(cfg.host_index(name))


def exec_in(
    cfg: LabConfig, name: str, cmd: str | Sequence[str], *, timeout: float = 60, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run cmd (a shell string or argv) as root inside host `name`, bypassing ssh."""
    return machine.exec_in(cfg, name, cmd, timeout=timeout, check=check)
