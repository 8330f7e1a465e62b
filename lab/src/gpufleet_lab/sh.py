"""Subprocess helpers for the lab: every external tool call goes through `run`."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("gpufleet_lab")

# tool -> Debian package that ships it (what .ci/lab-deps.sh installs)
REQUIRED_TOOLS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "apt-ftparchive": "apt-utils",
    "gpg": "gnupg",
    "nsenter": "util-linux",
    "unshare": "util-linux",
}


class LabError(RuntimeError):
    """A lab step failed; the message says which command and what it printed."""


def missing_tools() -> list[str]:
    return sorted(t for t in REQUIRED_TOOLS if shutil.which(t) is None)


def preflight_problem() -> str | None:
    """Why the lab cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, mounts, systemd-nspawn)"
    missing = missing_tools()
    if missing:
        pkgs = sorted({REQUIRED_TOOLS[t] for t in missing})
        return f"missing tools: {', '.join(missing)} (Debian packages: {' '.join(pkgs)})"
    return None


def run(
    cmd: Sequence[str | Path],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float | None = 120,
    env: dict[str, str] | None = None,
    quiet: bool = False,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; on failure raise LabError with stderr attached."""
    argv = [str(c) for c in cmd]
    if not quiet:
        log.debug("$ %s", " ".join(argv))
    proc = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        out = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise LabError(f"{' '.join(argv)} exited {proc.returncode}: {out}")
    return proc


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def start_detached(argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
    """Start a lab daemon in its own session (`setsid -f` returns at once), so it outlives the
    process that ran `up` and is never our zombie; its output goes to log_path."""
    with open(log_path, "ab") as fh:
        subprocess.run(
            ["setsid", "-f", *argv],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            check=True,
            timeout=10,
        )
