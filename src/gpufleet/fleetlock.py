"""The fleet lock: two runs never change one host at once.

A run that changes hosts (deploy, rebuild) first takes a controller-side lock per inventory
(flock on a file under the user's cache), then one lock per host: `/run/gpufleet/deploy.lock`,
held with flock(1) by a shell on the host for as long as the run's SSH session lives. The lock
file says who holds it (controller host, user, pid, start time, inventory, command). A holder
that dies — controller killed, connection cut, host rebooted — loses its session, and the
kernel releases the flock with the process: no timeout guesses, no stale lock to clean up.
Read-only commands (plan, status, validate, drift, deploy --dry-run) take no lock.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import shlex
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from gpufleet.errors import ExitStatus, GpufleetError
from gpufleet.host.layout import HOST_LOCK, LOCK_DIR
from gpufleet.host.ssh import HostUnreachable, Session, SshTarget

BUSY_EXIT = 75  # EX_TEMPFAIL


@dataclass(frozen=True)
class Holder:
    """Who holds (or asks for) a lock."""

    controller: str
    user: str
    pid: int
    started: str
    inventory: str
    command: str = "deploy"

    @classmethod
    def me(cls, inventory: str | Path, command: str = "deploy") -> Holder:
        started = datetime.now(UTC).replace(microsecond=0).isoformat()
        return cls(socket.gethostname(), getpass.getuser(), os.getpid(), started,
                   str(Path(inventory).resolve()), command)

    def json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def describe(self) -> str:
        return (f"{self.user}@{self.controller} (pid {self.pid}, `gpufleet {self.command}` "
                f"since {self.started}, inventory {self.inventory})")


def holder_from(text: str) -> str:
    """A lock file's content -> who holds it, for the message (unknown when unreadable)."""
    try:
        data = json.loads(text)
        return Holder(**{k: data[k] for k in Holder.__dataclass_fields__}).describe()
    except (ValueError, TypeError, KeyError):
        return "an unknown holder" if not text.strip() else text.strip()[:200]


class FleetLocked(GpufleetError):
    """Another run holds the lock: nothing was changed."""

    exit_status = ExitStatus.BAD_INPUT

    def __init__(self, message: str, busy: dict[str, str] | None = None):
        super().__init__(message)
        self.busy = busy or {}


# ---------------------------------------------------------------- the controller's lock


def controller_lock_path(inventory: str | Path) -> Path:
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or Path.home() / ".cache") / "gpufleet"
    digest = hashlib.sha256(str(Path(inventory).resolve()).encode()).hexdigest()[:16]
    return base / "locks" / f"{digest}.lock"


@contextmanager
def controller_lock(holder: Holder, wait_s: float | None) -> Iterator[None]:
    """flock on a per-inventory file on this machine for the whole run."""
    path = controller_lock_path(holder.inventory)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the whole run)
    try:
        _flock(fh, wait_s, lambda: f"inventory {holder.inventory} is being deployed by "
               f"{_read(fh)} on this machine")
        fh.seek(0)
        fh.truncate()
        fh.write(holder.json() + "\n")
        fh.flush()
        yield
    finally:
        fh.close()  # closing the file releases the flock


def _flock(fh: IO[str], wait_s: float | None, busy: Callable[[], str]) -> None:
    deadline = time.monotonic() + (wait_s or 0)
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise FleetLocked(f"{busy()}: refusing to run at the same time (pass --wait "
                                  "SECONDS to wait for it)") from None
            time.sleep(0.2)


def _read(fh: IO[str]) -> str:
    fh.seek(0)
    return holder_from(fh.read())


# ---------------------------------------------------------------- the hosts' locks


def lock_script(holder: Holder, wait_s: float | None) -> str:
    """Shell run on the host: take the flock, say so, and hold it until our stdin closes."""
    q = shlex.quote
    busy = f"echo \"BUSY $(cat {HOST_LOCK})\"; exit {BUSY_EXIT}"
    take = (f"if ! flock -n 9; then echo \"WAIT $(cat {HOST_LOCK})\"; "
            f"flock -w {wait_s:.1f} 9 || {{ {busy}; }}; fi; " if wait_s
            else f"flock -n 9 || {{ {busy}; }}; ")
    return (
        f"umask 022; mkdir -p {LOCK_DIR} || exit 1; "
        f"exec 9>>{HOST_LOCK} || exit 1; {take}"
        f"printf '%s\\n' {q(holder.json())} > {HOST_LOCK}; echo LOCKED; exec cat >/dev/null"
    )


@dataclass
class HostLock:
    """One host's lock, held by an open SSH session."""

    name: str
    session: Session | None = None
    channel: Any = None
    error: str | None = None  # unreachable or failed
    holder: str | None = None  # set when another run holds it

    def release(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.session is not None:
            self.session.close()


def take_host_lock(target: SshTarget, holder: Holder, wait_s: float | None,
                   notify: Callable[[str], None]) -> HostLock:
    lock = HostLock(target.name)
    try:
        lock.session = Session(target)
    except HostUnreachable as exc:
        lock.error = str(exc)
        return lock
    transport = lock.session.client.get_transport()
    assert transport is not None
    channel = transport.open_session()
    channel.exec_command(lock_script(holder, wait_s))
    reader = channel.makefile("r")
    for line in reader:
        if line.startswith("WAIT "):
            notify(f"{target.name}: waiting for the lock held by {holder_from(line[5:])}")
        elif line.startswith("BUSY "):
            lock.holder = holder_from(line[5:])
            break
        elif line.strip() == "LOCKED":
            lock.channel = channel
            return lock
    if lock.holder is None:
        lock.error = f"{target.name}: could not take {HOST_LOCK} (is flock installed?)"
    lock.release()
    return lock


@dataclass
class FleetLock:
    """The locks of one run; `busy` names the hosts another run holds."""

    locks: dict[str, HostLock] = field(default_factory=dict)

    @property
    def busy(self) -> dict[str, str]:
        return {n: lk.holder for n, lk in self.locks.items() if lk.holder}

    @property
    def sessions(self) -> dict[str, Session]:
        """The open SSH session of every locked host (reused for the survey and validation)."""
        return {n: lk.session for n, lk in self.locks.items()
                if lk.session is not None and lk.channel is not None}

    @property
    def unreachable(self) -> dict[str, str]:
        return {n: lk.error for n, lk in self.locks.items() if lk.error}

    def release(self) -> None:
        for lock in self.locks.values():
            lock.release()


@contextmanager
def fleet_lock(targets: Sequence[SshTarget], holder: Holder, wait_s: float | None,
               notify: Callable[[str], None] = lambda _: None) -> Iterator[FleetLock]:
    """The controller's lock, then every host's lock in parallel. Raises FleetLocked (having
    released what it took) when another run holds any of them."""
    with controller_lock(holder, wait_s):
        held = FleetLock()
        try:
            with ThreadPoolExecutor(max_workers=min(32, max(1, len(targets)))) as pool:
                locks = pool.map(lambda t: take_host_lock(t, holder, wait_s, notify), targets)
                held.locks = {lk.name: lk for lk in locks}
            if held.busy:
                names = ", ".join(f"{n} by {who}" for n, who in held.busy.items())
                raise FleetLocked(f"another run holds the lock on {names}: refusing to run at "
                                  "the same time (pass --wait SECONDS to wait for it)", held.busy)
            yield held
        finally:
            held.release()
