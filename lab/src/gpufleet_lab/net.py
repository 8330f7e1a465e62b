"""Lab networking: one bridge on the test machine, one netns + veth pair per host. No NAT, no
default route inside the hosts: they reach the test machine and each other, nothing else."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gpufleet_lab.config import LabConfig
from gpufleet_lab.sh import run


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def ensure_bridge(cfg: LabConfig) -> None:
    br = cfg.bridge_name
    if not link_exists(br):
        run(["ip", "link", "add", br, "type", "bridge"])
    addrs = run(["ip", "-o", "-4", "addr", "show", "dev", br]).stdout
    if f" {cfg.bridge_ip}/" not in addrs:
        run(["ip", "addr", "add", f"{cfg.bridge_ip}/24", "dev", br])
    run(["ip", "link", "set", br, "up"])


def add_host_net(cfg: LabConfig, name: str, address: str) -> None:
    """Netns `name` with eth0 = address/24, wired to the bridge through veth `name-h`."""
    remove_host_net(name)  # a leftover of a crashed run would make `ip netns add` fail
    run(["ip", "netns", "add", name])
    run(["ip", "link", "add", f"{name}-h", "type", "veth", "peer", "name", f"{name}-c"])
    run(["ip", "link", "set", f"{name}-h", "master", cfg.bridge_name, "up"])
    run(["ip", "link", "set", f"{name}-c", "netns", name])
    ns = ["ip", "-n", name]
    run([*ns, "link", "set", f"{name}-c", "name", "eth0"])
    # A MAC derived from the IP: a recreated host keeps it, so ARP entries cached by the test
    # machine and the other hosts stay right (a new MAC stalled connects for ~25 s).
    run([*ns, "link", "set", "eth0", "address", mac_for(address)])
    run([*ns, "addr", "add", f"{address}/24", "dev", "eth0"])
    run([*ns, "link", "set", "lo", "up"])
    run([*ns, "link", "set", "eth0", "up"])


def mac_for(address: str) -> str:
    """Locally administered unicast MAC 02:00:<the four IPv4 octets>."""
    return "02:00:" + ":".join(f"{int(o):02x}" for o in address.split("."))


def remove_host_net(name: str) -> None:
    # Deleting the netns destroys eth0 and with it the peer `name-h`; the explicit del covers a
    # veth whose netns end was never moved (crash between the two steps).
    if Path("/run/netns", name).exists():
        run(["ip", "netns", "del", name], check=False)
    for end in (f"{name}-h", f"{name}-c"):
        if link_exists(end):
            run(["ip", "link", "del", end], check=False)


def set_link(name: str, up: bool) -> None:
    run(["ip", "link", "set", f"{name}-h", "up" if up else "down"])


def link_is_up(name: str) -> bool:
    flags = Path("/sys/class/net", f"{name}-h", "flags")
    return flags.exists() and bool(int(flags.read_text(), 16) & 0x1)


def lab_netns(cfg: LabConfig) -> list[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    names = [n["name"] for n in json.loads(out or "[]")]
    return sorted(n for n in names if cfg.is_host_name(n))


def lab_links(cfg: LabConfig) -> list[str]:
    """Links of this lab on the test machine: the bridge and the host ends of the veths."""
    pat = re.compile(re.escape(cfg.prefix) + r"\d{1,2}-[hc]")
    names = [p.name for p in Path("/sys/class/net").iterdir()]
    return sorted(n for n in names if n == cfg.bridge_name or pat.fullmatch(n))


def remove_bridge(cfg: LabConfig) -> None:
    if link_exists(cfg.bridge_name):
        run(["ip", "link", "del", cfg.bridge_name], check=False)
