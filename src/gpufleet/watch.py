"""What `status --watch` shows: every GPU's measured memory against the plan, every service's
state and health, and the services whose memory grew past their plan. Pure: (plan, the latest
readings, the readings before them) -> rows. The loop that reads the hosts is `livefleet`.

"Past its plan" is validate's own judgement (`service_memory_over`): measured above the
planned footprint on a GPU by more than the tolerance. "Growing" says the footprint rose since
the host's previous reading by more than allocator noise, so an operator sees it coming.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gpufleet.host.layout import unit_id
from gpufleet.plan import Plan, PlannedHost, PlannedService
from gpufleet.validate import HostReading, service_usage, tolerance

GROWTH_NOISE = 64 * 2**20  # bytes: what allocator rounding moves between two readings


@dataclass(frozen=True)
class ServiceOnGpu:
    """One service on one of its GPUs: its state and answers, its memory there against plan."""

    service: str
    gpu: int | None  # the GPU of this row; None for a service planned on no GPU
    gpus: tuple[int, ...]  # every GPU it is planned on
    state: str  # systemd ActiveState; "unknown" when the reading has none
    uptime_s: float | None
    healthy: bool | None  # None: not probed
    detail: str  # the probe's words ("health ok", "timed out")
    planned_bytes: int  # its footprint on this GPU
    measured_bytes: int | None  # None: the reading does not say (never 0)
    grew_bytes: int | None  # since the previous reading; None when either is unknown

    @property
    def over_plan(self) -> bool:
        return (
            self.measured_bytes is not None
            and self.planned_bytes > 0
            and self.measured_bytes - self.planned_bytes > tolerance(self.planned_bytes)
        )

    @property
    def growing(self) -> bool:
        return self.grew_bytes is not None and self.grew_bytes > GROWTH_NOISE


@dataclass(frozen=True)
class GpuView:
    index: int
    planned_bytes: int
    measured_bytes: int | None  # VRAM used as the SMI tool reports it (idle GPUs ~0.28 GiB)
    services: tuple[ServiceOnGpu, ...]  # in the GPU's start order


@dataclass(frozen=True)
class HostView:
    name: str
    error: str | None  # the host could not be read: nothing else is known
    gpus: tuple[GpuView, ...]
    off_gpu: tuple[ServiceOnGpu, ...] = ()  # services planned on no GPU (docling on CPU)

    @property
    def rows(self) -> list[ServiceOnGpu]:
        return [row for gpu in self.gpus for row in gpu.services] + list(self.off_gpu)


def fleet_view(
    plan: Plan,
    readings: Mapping[str, HostReading | None],
    previous: Mapping[str, HostReading | None] | None = None,
) -> list[HostView]:
    """One view per planned host; a host with no reading yet has error "not read yet"."""
    before = previous or {}
    return [host_view(h, readings.get(h.name), before.get(h.name)) for h in plan.hosts]


def host_view(
    planned: PlannedHost, reading: HostReading | None, previous: HostReading | None = None
) -> HostView:
    if reading is None:
        return HostView(planned.name, "not read yet", ())
    if reading.error is not None:
        return HostView(planned.name, reading.error, ())
    now = measured_by_gpu(planned, reading)
    before = (
        measured_by_gpu(planned, previous) if previous and previous.error is None else {}
    )
    smi = {g.index: g.vram_used_bytes for g in reading.snapshot.gpus} if reading.snapshot else {}
    gpus = []
    for gpu in planned.gpus:
        rows = tuple(
            _row(planned.service(name), gpu.index, reading, now, before)
            for name, _ in gpu.segments
        )
        gpus.append(GpuView(gpu.index, gpu.used_bytes, smi.get(gpu.index), rows))
    off_gpu = tuple(_row(s, None, reading, now, before) for s in planned.services if not s.gpus)
    return HostView(planned.name, None, tuple(gpus), off_gpu)


def measured_by_gpu(planned: PlannedHost, reading: HostReading) -> dict[tuple[str, int], int]:
    """(service, GPU) -> VRAM its processes hold there; a pair absent is unknown. A service the
    reading can account for (its processes came with VRAM and GPUs) holds 0 on a GPU where none
    of them is; one whose processes came without them is left out, as validate leaves it."""
    if reading.snapshot is None or reading.offline or reading.error is not None:
        return {}
    usage, unknown = service_usage(planned, reading)
    out: dict[tuple[str, int], int] = {}
    for svc in planned.services:
        if svc.name in unknown:
            continue
        on = usage.get(svc.name, {})
        for gpu in sorted(set(svc.gpus) | set(on)):
            out[(svc.name, gpu)] = on.get(gpu, 0)
    return out


def over_plan(views: list[HostView]) -> list[tuple[str, ServiceOnGpu]]:
    """(host, row) of every service past its plan on a GPU: what the watch flags."""
    return [(v.name, row) for v in views for row in v.rows if row.over_plan]


def _row(
    svc: PlannedService,
    gpu: int | None,
    reading: HostReading,
    now: Mapping[tuple[str, int], int],
    before: Mapping[tuple[str, int], int],
) -> ServiceOnGpu:
    probe = reading.probes.get(svc.name)
    measured = None if gpu is None else now.get((svc.name, gpu))
    earlier = None if gpu is None else before.get((svc.name, gpu))
    return ServiceOnGpu(
        service=svc.name,
        gpu=gpu,
        gpus=svc.gpus,
        state=reading.unit_states.get(unit_id(svc.name), "unknown"),
        uptime_s=reading.uptimes.get(unit_id(svc.name)),
        healthy=probe.ok if probe else None,
        detail=probe.detail if probe else "",
        planned_bytes=0 if gpu is None else svc.footprint_bytes,
        measured_bytes=measured,
        grew_bytes=None if measured is None or earlier is None else measured - earlier,
    )
