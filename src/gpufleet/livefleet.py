"""The fleet kept open (`status --watch`, `exporter`): one SSH session per host, read again every
N seconds in the host's own thread, so a slow or lost host never holds up the others.

Each read runs validate's readers (`observe.read_host`, probes on `/health` only) on the host's
open session: no new SSH connection per read. A read that fails, or takes longer than the
host's deadline (a cut link leaves a session hanging, not failing), ends as "unreachable": the
session is closed and a new one is opened on the next read, so the host comes back by itself.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from gpufleet.host.layout import UNIT_GLOB
from gpufleet.host.ssh import HostUnreachable, Session, SshTarget
from gpufleet.host.systemctl import by_service, parse_show
from gpufleet.observe import read_host
from gpufleet.plan import Plan, PlannedHost
from gpufleet.validate import HostReading

READ_BASE_S = 20.0  # the SMI tools, cgroups and unit states of one host
PROBE_WAIT_S = 5.0  # the probe waits this long for each service's /health (host/scripts/probe.py)


@dataclass(frozen=True)
class Sample:
    """One completed read of a host."""

    reading: HostReading
    restarts: dict[str, int] = field(default_factory=dict)  # service -> systemd NRestarts
    at: float = 0.0  # time.time() when it finished
    took_s: float = 0.0
    number: int = 0  # 1 for the host's first read


@dataclass(frozen=True)
class HostState:
    """What is known of a host now: its last two reads, and whether one is under way."""

    current: Sample | None
    previous: Sample | None
    reading_since: float | None  # time.time() the read under way began; None between reads


def read_deadline(host: PlannedHost) -> float:
    """Seconds a read may take before the host counts as lost: the probe alone may wait
    PROBE_WAIT_S on each hung service, in turn."""
    return READ_BASE_S + PROBE_WAIT_S * len(host.services)


def restart_counts(session: Session) -> dict[str, int]:
    """Service name -> how often systemd restarted its unit (NRestarts) since it was started."""
    out = session.run(f"systemctl show -p Id,NRestarts '{UNIT_GLOB}'").stdout
    return {
        name: int(props["NRestarts"])
        for name, props in by_service(parse_show(out)).items()
        if props.get("NRestarts", "").isdigit()
    }


class HostLoop:
    """One host: its session, its reader thread, its last two samples."""

    def __init__(
        self, host: PlannedHost, target: SshTarget, interval: float, restarts: bool
    ) -> None:
        self.host = host
        self.target = target
        self.interval = interval
        self.restarts = restarts
        self.deadline = read_deadline(host)
        self._session: Session | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._aborted = False
        self._current: Sample | None = None
        self._previous: Sample | None = None
        self._since: float | None = None
        self._count = 0
        self._thread = threading.Thread(target=self._loop, name=f"read-{host.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def state(self) -> HostState:
        with self._lock:
            return HostState(self._current, self._previous, self._since)

    def stop(self) -> None:
        self._stop.set()
        self._close()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            sample = self._read()
            if self._stop.is_set():
                break
            with self._lock:
                self._previous, self._current, self._since = self._current, sample, None
            self._stop.wait(max(self.interval - (time.monotonic() - began), 0.0))

    def _read(self) -> Sample:
        started = time.time()
        with self._lock:
            self._since, self._aborted = started, False
        watchdog = threading.Timer(self.deadline, self._abort)
        watchdog.daemon = True
        watchdog.start()
        restarts: dict[str, int] = {}
        try:
            if self._session is None:
                self._session = Session(self.target)
            reading = read_host(self._session, self.host, full_probe=False)
            if self.restarts and reading.error is None:
                restarts = restart_counts(self._session)
        except HostUnreachable as exc:
            reading = HostReading(self.host.name, error=str(exc))
        except Exception as exc:  # a monitor outlives any one bad read: report it as the host's
            reading = HostReading(self.host.name, error=f"cannot read the host: {exc!r}")
        finally:
            watchdog.cancel()
        if self._aborted:
            reading = HostReading(
                self.host.name,
                error=f"{self.target.name} ({self.target.address}): no answer within "
                f"{self.deadline:.0f} s; reconnecting",
            )
        if reading.error is not None:
            self._close()  # a failed session is not reused: the next read connects afresh
        self._count += 1
        took = time.time() - started
        return Sample(reading, restarts, time.time(), took, self._count)

    def _abort(self) -> None:
        self._aborted = True
        self._close()  # closing the transport ends the hung read in the loop's thread

    def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()


class LiveFleet:
    """Every host of a plan, each read every `interval` seconds over its own open session."""

    def __init__(
        self,
        plan: Plan,
        *,
        interval: float,
        ssh_key: str | None = None,
        known_hosts: str | None = None,
        restarts: bool = False,
    ) -> None:
        fleet = plan.inventory.fleet
        self.plan = plan
        self.loops = {
            h.name: HostLoop(
                h, SshTarget.of(h.name, h.host, fleet, ssh_key, known_hosts), interval, restarts
            )
            for h in plan.hosts
        }

    def start(self) -> LiveFleet:
        for loop in self.loops.values():
            loop.start()
        return self

    def states(self) -> dict[str, HostState]:
        return {name: loop.state() for name, loop in self.loops.items()}

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reading and close every session; threads still in a read are daemons."""
        for loop in self.loops.values():
            loop.stop()
        end = time.monotonic() + timeout
        for loop in self.loops.values():
            loop.join(max(end - time.monotonic(), 0.0))

    def __enter__(self) -> LiveFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
