"""Read-only commands on hosts over SSH (validate, status, drift, import).

Deploys go through pyinfra; these checks only read, so a plain paramiko session is enough.
Host keys are checked strictly against a known_hosts file: an unknown or changed key is an error,
never a silent accept.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko

from gpufleet.errors import GpufleetError


class HostUnreachable(GpufleetError):
    """The host could not be reached or refused us: reported per host, never a traceback."""


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str


class HostAddress(Protocol):
    """How to reach a host (an inventory host has these)."""

    @property
    def address(self) -> str: ...
    @property
    def ssh_user(self) -> str: ...
    @property
    def ssh_port(self) -> int: ...


class SshDefaults(Protocol):
    """The fleet's SSH defaults (an inventory fleet has these)."""

    @property
    def ssh_key(self) -> str | None: ...
    @property
    def ssh_known_hosts(self) -> str | None: ...


@dataclass(frozen=True)
class SshTarget:
    name: str
    address: str
    user: str
    port: int
    key: str | None
    known_hosts: str

    @classmethod
    def of(
        cls,
        name: str,
        host: HostAddress,
        fleet: SshDefaults,
        key: str | None = None,
        known_hosts: str | None = None,
    ) -> SshTarget:
        kh = known_hosts or fleet.ssh_known_hosts or "~/.ssh/known_hosts"
        return cls(
            name,
            host.address,
            host.ssh_user,
            host.ssh_port,
            expand_path(key or fleet.ssh_key),
            str(Path(kh).expanduser()),
        )


def expand_path(path: str | None) -> str | None:
    """`~/x` -> `/root/x`; None stays None (settings that fall back to a default)."""
    return str(Path(path).expanduser()) if path else None


def connect_error(exc: BaseException) -> str:
    """paramiko's connect errors in an operator's words (refused, timed out, host key, auth)."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        causes = {getattr(e, "strerror", None) or str(e) for e in exc.errors.values()}
        return f"cannot connect to port {next(iter(exc.errors))[1]}: {', '.join(sorted(causes))}"
    if isinstance(exc, paramiko.BadHostKeyException):
        return f"host key mismatch ({exc}): check the host, then update known_hosts"
    if isinstance(exc, paramiko.AuthenticationException):
        return f"authentication failed: {exc}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "connection timed out"
    return str(exc) or type(exc).__name__


class Session:
    """One SSH connection to a host; `run` executes a command and returns its output."""

    def __init__(self, target: SshTarget, timeout: float = 5.0):
        self.target = target
        self.client = paramiko.SSHClient()
        if not os.path.exists(target.known_hosts):
            raise HostUnreachable(
                f"{target.name}: known_hosts file {target.known_hosts} does not exist; host keys "
                "are checked strictly (add the host's key first, e.g. with ssh-keyscan after "
                "verifying its fingerprint)"
            )
        self.client.load_host_keys(target.known_hosts)
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            self.client.connect(
                target.address,
                port=target.port,
                username=target.user,
                key_filename=target.key,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                allow_agent=target.key is None,
                look_for_keys=target.key is None,
            )
        except (TimeoutError, OSError, paramiko.SSHException) as exc:
            raise HostUnreachable(f"{target.name} ({target.address}): {connect_error(exc)}"
                                  ) from None
        transport = self.client.get_transport()
        if transport is not None:  # small interactive requests: don't wait for Nagle
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]

    def run(self, command: str, stdin: str | None = None, timeout: float = 60.0) -> Result:
        try:
            chan_in, out, err = self.client.exec_command(command, timeout=timeout)
            if stdin is not None:
                chan_in.write(stdin)
                chan_in.channel.shutdown_write()
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
            return Result(out.channel.recv_exit_status(), stdout, stderr)
        except (TimeoutError, OSError, paramiko.SSHException) as exc:
            raise HostUnreachable(f"{self.target.name}: {exc}") from None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
