"""Client-side ssh material for a lab: the client key, known_hosts with the hosts' real keys
(generated on the test machine before boot), and an ssh_config with strict checking."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from gpufleet_lab.config import Lab, LabHost
from gpufleet_lab.sh import run, write

SSH_OPTS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR")


def ensure_client_key(key: Path) -> None:
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpufleet-lab", "-f", key])


def make_host_key(root: Path) -> str:
    """Write a fresh ed25519 host key into a host rootfs; return its public line."""
    key = root / "etc/ssh/ssh_host_ed25519_key"
    for old in (key, key.with_suffix(".pub")):
        old.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", key])
    kind, blob = key.with_suffix(".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def write_known_hosts(lab: Lab, host_keys: dict[str, str]) -> None:
    lines = [f"{h.name},{h.address} {host_keys[h.name]}" for h in lab.hosts if h.name in host_keys]
    write(lab.known_hosts, "\n".join(lines) + "\n", mode=0o644)


def read_known_hosts(lab: Lab) -> dict[str, str]:
    keys: dict[str, str] = {}
    if lab.known_hosts.exists():
        for line in lab.known_hosts.read_text().splitlines():
            names, _, key = line.partition(" ")
            if key:
                keys[names.split(",")[0]] = key
    return keys


def write_ssh_config(lab: Lab) -> None:
    common = [
        f"  IdentityFile {lab.key}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {lab.known_hosts}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "  BatchMode yes",
        "  ConnectTimeout 3",
        "  LogLevel ERROR",
    ]
    blocks = []
    for h in lab.hosts:
        blocks += [
            f"Host {h.name}",
            f"  HostName {h.address}",
            f"  Port {h.ssh_port}",
            f"  User {h.user}",
            *common,
            "",
        ]
    blocks += [f"Host {lab.config.net}.*", "  User root", *common, ""]
    write(lab.ssh_config, "\n".join(blocks))


def ssh_argv(lab: Lab, host: LabHost, command: str) -> list[str]:
    return ["ssh", "-F", str(lab.ssh_config), *SSH_OPTS, host.name, command]


def ssh(
    lab: Lab, host: LabHost, command: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run a command on a host over real ssh (strict host-key checking), never raising."""
    try:
        return subprocess.run(
            ssh_argv(lab, host, command),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, 255, "", f"timed out after {timeout} s")


def wait_sshd(address: str, port: int, deadline: float) -> bool:
    """Wait until sshd on address:port sends its banner (accepting alone is not enough)."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(8).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False
