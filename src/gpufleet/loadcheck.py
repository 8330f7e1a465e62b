"""Validation under load (`gpufleet validate --load`): the plan's memory holds while serving.

On each host, host/scripts/load.py (the host's python3) sends a bounded load to the host's own
services over loopback — inputs of realistic lengths up to each service's max_model_len, as
many at once as the plan says fit — while sampling the GPUs with the accelerator's SMI tool.
vLLM allocates its KV cache whole at startup and its activations stay within the peak it
profiled, so a well-planned instance must not grow under load: memory above the plan (by more
than validate's tolerance), memory that grows with requests (a leak), and failed requests are
findings that name the host, the GPU and the service.

The decisions are pure and come first (what to load, how hard, what the samples mean); the
last section runs the script over SSH.
"""

from __future__ import annotations

import json
import math
import shlex
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpufleet.errors import InputError
from gpufleet.gpu import accelerator
from gpufleet.gpu.amd import ROCM_SMI_ONCE, SMI_COMMANDS
from gpufleet.gpu.models import GIB
from gpufleet.gpu.smi import SmiParseError, Snapshot, merge, parse
from gpufleet.host.layout import env_file_path
from gpufleet.host.layout import unit_id as unit_of
from gpufleet.host.ssh import HostUnreachable, Session, SshTarget
from gpufleet.observe import read_host
from gpufleet.plan import Finding, Plan, PlannedHost, PlannedService
from gpufleet.validate import (
    IDLE_GPU_BYTES,
    LIVE_HINT,
    TOLERANCE_FLOOR,
    HostReading,
    Unchecked,
    service_usage,
    tolerance,
)

# Runs with the host's python3 (stdlib only); reads the job as JSON on stdin.
LOAD_SCRIPT = (Path(__file__).parent / "host" / "scripts" / "load.py").read_text(encoding="utf-8")

DEFAULT_DURATION_S = 30.0
MAX_DURATION_S = 600.0
GRACE_S = 10.0  # requests in flight at the end of the duration have this long to finish
MAX_REQUESTS_PER_SERVICE = 20_000  # the count bound, whatever the duration
MAX_LOAD_CONCURRENCY = 64  # per service: a validation load from one script, not a benchmark
MAX_TOKENS = 64  # completion tokens per LLM request (ignore_eos: always this many)
SAMPLE_INTERVAL_S = 0.5
SCRIPT_START_S = 60.0  # SSH, python3 and the last SMI reading, on top of duration + grace
# The SMI commands a sample runs, per vendor and tool (the first tool the host has is used).
SAMPLE_COMMANDS: dict[str, list[tuple[str, list[str]]]] = {
    "amd": [("amd-smi", SMI_COMMANDS["amd-smi"]), ("rocm-smi", [ROCM_SMI_ONCE])],
}
LOAD_HINT = "memory that grows with requests is a leak (vLLM preallocates its KV cache)"


@dataclass(frozen=True)
class LoadSettings:
    """How hard and how long: `concurrency` None means what the plan says fits."""

    duration_s: float = DEFAULT_DURATION_S
    concurrency: int | None = None
    max_requests: int = MAX_REQUESTS_PER_SERVICE
    grace_s: float = GRACE_S
    sample_interval_s: float = SAMPLE_INTERVAL_S

    @classmethod
    def of(cls, duration_s: float | None, concurrency: int | None) -> LoadSettings:
        """Checked settings from the command line (InputError, exit 2, when out of bounds)."""
        duration = DEFAULT_DURATION_S if duration_s is None else duration_s
        if not (math.isfinite(duration) and 0 < duration <= MAX_DURATION_S):
            raise InputError(f"--duration {duration_s}: must be above 0 and at most "
                             f"{MAX_DURATION_S:g} seconds")
        if concurrency is not None and concurrency < 1:
            raise InputError(f"--concurrency {concurrency}: must be at least 1",
                             hint="leave it out for what the plan says fits")
        return cls(duration_s=duration, concurrency=concurrency)


@dataclass(frozen=True)
class ServiceLoad:
    """What the script measured for one service (latencies of the successful requests)."""

    requests: int = 0
    ok: int = 0
    errors: int = 0
    first_errors: tuple[str, ...] = ()
    unfinished: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    longest_input: int = 0
    refused: str | None = None  # the script would not send to this address


@dataclass(frozen=True)
class Sample:
    """One SMI reading during the load, `count` times in a row from `t` to `last_t` seconds."""

    t: float
    last_t: float
    count: int
    snapshot: Snapshot


@dataclass
class LoadReading:
    """One host's load run: the requests per service and the SMI samples, first at rest."""

    host: str
    error: str | None = None
    elapsed_s: float | None = None
    smi_tool: str | None = None
    samples: list[Sample] = field(default_factory=list)
    services: dict[str, ServiceLoad] = field(default_factory=dict)
    concurrency: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # service -> why it got no load
    sample_errors: list[str] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        """The script ran (or failed): there was something to load on this host."""
        return self.error is not None or bool(self.services)


# ---------------------------------------------------------------- what to load (pure)


def plan_concurrency(svc: PlannedService) -> int:
    """Requests at once that the plan says fit: for a KV-cache model, the requests of
    max_model_len tokens its KV cache holds; for one without (encoders), the scheduler's
    max_num_seqs; never above max_num_seqs nor MAX_LOAD_CONCURRENCY, at least 1."""
    est, seqs = svc.estimate, svc.service.max_num_seqs
    fits = int(est.max_concurrency) if est and est.kv_cache_bytes > 0 else None
    bounds = [b for b in (fits, seqs, MAX_LOAD_CONCURRENCY) if b is not None]
    return max(1, min(bounds))


def load_concurrency(svc: PlannedService, asked: int | None) -> int:
    """--concurrency N, capped at what the plan says fits (never more)."""
    fits = plan_concurrency(svc)
    return fits if asked is None else min(asked, fits)


def loaded_services(
    host: PlannedHost, reading: HostReading
) -> tuple[list[PlannedService], dict[str, str]]:
    """The services the load goes to, and why each other one gets none."""
    chosen, skipped = [], {}
    for svc in host.services:
        state = reading.unit_states.get(unit_of(svc.name), "not-found")
        if not svc.service.kind.runs_vllm:
            skipped[svc.name] = (f"kind {svc.service.kind.value} is not a vLLM server: no load "
                                 "is defined for it")
        elif state != "active":
            skipped[svc.name] = f"unit {unit_of(svc.name)}.service is {state} (service_down)"
        else:
            chosen.append(svc)
    return chosen, skipped


def sample_commands(gpu_model: str) -> list[dict[str, object]]:
    vendor = accelerator(gpu_model).vendor
    return [{"tool": tool, "commands": commands}
            for tool, commands in SAMPLE_COMMANDS.get(vendor, [])]


def load_request(
    host: PlannedHost, services: list[PlannedService], settings: LoadSettings
) -> str:
    """The JSON the load script reads on stdin (the API key stays in the env file)."""
    return json.dumps({
        "duration_s": settings.duration_s,
        "grace_s": settings.grace_s,
        "max_requests": settings.max_requests,
        "sample_interval_s": settings.sample_interval_s,
        "smi": sample_commands(host.gpu_model),
        "services": [
            {
                "name": s.name,
                "kind": s.service.kind.value,
                "url": f"http://{s.probe_host}:{s.service.port}",
                "model": s.service.model or s.name,
                "env_file": env_file_path(s.name),
                "max_model_len": s.model_len or 512,
                "max_tokens": min(MAX_TOKENS, max(1, (s.model_len or 512) // 8)),
                "concurrency": load_concurrency(s, settings.concurrency),
            }
            for s in services
        ],
    })


def script_timeout(settings: LoadSettings) -> float:
    """How long the controller waits for the script: its own hard bound plus its start."""
    return settings.duration_s + settings.grace_s + SCRIPT_START_S


# ---------------------------------------------------------------- what it measured (pure)


def parse_load_output(host: str, text: str) -> LoadReading:
    """The script's JSON line; a reading with `error` when there is none."""
    lines = text.strip().splitlines()
    try:
        data = json.loads(lines[-1])
    except (json.JSONDecodeError, IndexError):
        tail = text.strip()[-300:] or "no output"
        return LoadReading(host, error=f"the load script gave no result: {tail}")
    reading = LoadReading(host, elapsed_s=data.get("elapsed_s"), smi_tool=data.get("smi_tool"))
    for name, got in data.get("services", {}).items():
        if "refused" in got:
            reading.services[name] = ServiceLoad(refused=str(got["refused"]))
            continue
        keys = {k: got[k] for k in ServiceLoad.__dataclass_fields__ if k in got}
        keys["first_errors"] = tuple(got.get("first_errors", ()))
        reading.services[name] = ServiceLoad(**keys)
    for raw in data.get("samples", []):
        snapshot = _sample_snapshot(host, raw["outputs"], reading.sample_errors)
        if snapshot is not None:
            reading.samples.append(Sample(raw["t"], raw["last_t"], raw["count"], snapshot))
    return reading


def _sample_snapshot(host: str, outputs: list[str], errors: list[str]) -> Snapshot | None:
    snapshots = []
    for text in outputs:
        try:
            snapshots.append(parse(text, source=f"{host}: load sample"))
        except SmiParseError as exc:
            if "No KFD PIDs" in text or "no running processes" in text.lower():
                continue  # nothing on the GPUs is a valid reading
            if str(exc) not in errors:
                errors.append(str(exc))
            return None
    return merge(*snapshots) if snapshots else None


@dataclass(frozen=True)
class Peaks:
    """GPU memory during the load: at rest (the first sample) and at its highest, per GPU and
    per service and GPU (idle GPU use taken off the GPU figures, as validate does)."""

    gpu_rest: dict[int, int]
    gpu_peak: dict[int, int]
    service_rest: dict[str, dict[int, int]]
    service_peak: dict[str, dict[int, int]]
    service_unknown: set[str]


def peaks(planned: PlannedHost, load: LoadReading, pid_units: Mapping[int, str]) -> Peaks:
    gpu_rest: dict[int, int] = {}
    gpu_peak: dict[int, int] = {}
    svc_rest: dict[str, dict[int, int]] = {}
    svc_peak: dict[str, dict[int, int]] = defaultdict(dict)
    unknown: set[str] = set()
    for n, sample in enumerate(load.samples):
        for gpu in sample.snapshot.gpus:
            if gpu.vram_used_bytes is None:
                continue
            used = max(gpu.vram_used_bytes - IDLE_GPU_BYTES, 0)
            gpu_rest.setdefault(gpu.index, used)
            gpu_peak[gpu.index] = max(gpu_peak.get(gpu.index, 0), used)
        reading = HostReading(planned.name, snapshot=sample.snapshot, pid_units=dict(pid_units))
        usage, gaps = service_usage(planned, reading)
        unknown |= gaps
        for name, per_gpu in usage.items():
            if n == 0:
                svc_rest[name] = dict(per_gpu)
            for index, held in per_gpu.items():
                svc_peak[name][index] = max(svc_peak[name].get(index, 0), held)
    return Peaks(gpu_rest, gpu_peak, svc_rest, dict(svc_peak), unknown)


def compare_load(
    planned: PlannedHost, load: LoadReading, pid_units: Mapping[int, str]
) -> list[Finding]:
    """Findings of one host's load run: memory above the plan or growing, failed requests."""
    if load.error is not None:
        return [Finding("error", "load_failed", load.error, planned.name,
                        hint="run validate again; if it persists, check python3 and SSH there")]
    got = peaks(planned, load, pid_units)
    out: list[Finding] = []
    for svc in planned.services:
        if svc.name in load.services:
            out += _service_findings(planned.name, svc, load.services[svc.name], got)
    for gpu in planned.gpus:
        if gpu.index in got.gpu_peak:
            out += _gpu_finding(planned, gpu.index, gpu.used_bytes, got)
    return out


def _service_findings(
    host: str, svc: PlannedService, run: ServiceLoad, got: Peaks
) -> list[Finding]:
    out = []
    first_gpu = svc.gpus[0] if len(svc.gpus) == 1 else None
    if run.errors:
        out.append(Finding(
            "error", "load_requests_failed",
            f"{run.errors} of {run.requests} requests failed under load; first: "
            f"{'; '.join(run.first_errors) or '?'}", host, first_gpu, svc.name,
            f"journalctl -u {unit_of(svc.name)} on {host}"))
    peak = got.service_peak.get(svc.name, {})
    rest = got.service_rest.get(svc.name, {})
    for gpu in svc.gpus:
        if svc.footprint_bytes == 0 or gpu not in peak or svc.name in got.service_unknown:
            continue
        grew = peak[gpu] - rest.get(gpu, peak[gpu])
        text = (f"{svc.name} peaked at {peak[gpu] / GIB:.1f} GiB on GPU {gpu} under load, "
                f"planned {svc.footprint_bytes / GIB:.1f} GiB; it grew {grew / GIB:.1f} GiB "
                "while serving")
        if peak[gpu] - svc.footprint_bytes > tolerance(svc.footprint_bytes):
            out.append(Finding("error", "load_service_memory_over", text, host, gpu, svc.name,
                               f"{LOAD_HINT}: find what grew (journalctl -u {unit_of(svc.name)})"
                               ", restart it to free the memory, and re-plan if it is the "
                               "model's real size"))
        elif grew > TOLERANCE_FLOOR:
            out.append(Finding("warning", "load_memory_grew", text, host, gpu, svc.name,
                               f"{LOAD_HINT}: watch it; a longer load will take it over the plan"))
    return out


def _gpu_finding(planned: PlannedHost, gpu: int, want: int, got: Peaks) -> list[Finding]:
    peak = got.gpu_peak[gpu]
    if peak - want <= tolerance(want):
        return []
    names = [s.name for s in planned.services if gpu in s.gpus and s.footprint_bytes]
    growth = {name: got.service_peak.get(name, {}).get(gpu, 0)
              - got.service_rest.get(name, {}).get(gpu, 0) for name in names}
    grower = max(growth, key=lambda n: growth[n]) if growth else None
    service = grower if grower and growth[grower] > 0 else (names[0] if len(names) == 1 else None)
    return [Finding(
        "error", "load_gpu_memory_over",
        f"GPU {gpu} peaked at {peak / GIB:.1f} GiB under load, planned {want / GIB:.1f} GiB "
        f"({(peak - want) / max(want, 1):+.0%}; at rest {got.gpu_rest.get(gpu, 0) / GIB:.1f} "
        f"GiB; on it: {', '.join(names) or 'nothing planned'})",
        planned.name, gpu, service,
        "a neighbour on this GPU may fail to start or run out of memory; find what grew")]


def load_unchecked(
    planned: PlannedHost, load: LoadReading, pid_units: Mapping[int, str]
) -> list[Unchecked]:
    """What the load could not check: GPUs without a sample, services without a finished
    request or whose processes came without their VRAM, services the script refused."""
    if load.error is not None or not load.ran:
        return []  # load_failed already fails the host; or nothing was loaded here
    got = peaks(planned, load, pid_units)
    why = ("; ".join(load.sample_errors) if load.sample_errors
           else f"no {load.smi_tool or 'SMI tool'} reading" if load.samples or load.smi_tool
           else "the host has none of the SMI tools (amd-smi, rocm-smi)")
    out = [Unchecked(planned.name, g.index, None, f"under load: {why} of GPU {g.index}",
                     LIVE_HINT) for g in planned.gpus if g.index not in got.gpu_peak]
    for name, run in load.services.items():
        if run.refused:
            out.append(Unchecked(planned.name, None, name, f"under load: {run.refused}",
                                 "check the service's bind address in the inventory"))
        elif run.requests == 0:
            out.append(Unchecked(planned.name, None, name, "under load: no request was sent "
                                 "within the duration", "run with a longer --duration"))
        elif name in got.service_unknown:
            out.append(Unchecked(planned.name, None, name, "under load: the SMI samples give "
                                 "a process of it without its VRAM or its GPUs", LIVE_HINT))
    return out


# ---------------------------------------------------------------- views of the result (pure)


def _gib(value: int | None) -> float | None:
    return None if value is None else round(value / GIB, 2)


def load_dict(
    planned: PlannedHost, load: LoadReading, pid_units: Mapping[int, str]
) -> dict[str, Any]:
    """One host's load run for tables and JSON: GPUs (at rest, peak, planned) and services."""
    got = peaks(planned, load, pid_units)
    services = []
    for svc in planned.services:
        run = load.services.get(svc.name)
        known = run is not None and svc.name not in got.service_unknown and load.samples
        peak = got.service_peak.get(svc.name, {})
        services.append({
            "service": svc.name, "kind": svc.service.kind.value, "gpus": list(svc.gpus),
            "skipped": load.skipped.get(svc.name) or (run.refused if run else None),
            "concurrency": load.concurrency.get(svc.name),
            **({k: getattr(run, k) for k in ("requests", "ok", "errors", "p50_ms", "p95_ms",
                                             "p99_ms", "max_ms", "longest_input")}
               if run else dict.fromkeys(("requests", "ok", "errors", "p50_ms", "p95_ms",
                                          "p99_ms", "max_ms", "longest_input"))),
            "first_errors": list(run.first_errors) if run else [],
            "rest_gib": _gib(sum(got.service_rest.get(svc.name, {}).values())) if known else None,
            "peak_gib": _gib(sum(peak.values())) if known else None,
            "planned_gib": _gib(svc.footprint_bytes * len(svc.gpus)),
        })
    return {
        "name": planned.name, "error": load.error, "elapsed_s": load.elapsed_s,
        "samples": sum(s.count for s in load.samples),
        "gpus": [{"index": g.index, "planned_gib": _gib(g.used_bytes),
                  "rest_gib": _gib(got.gpu_rest.get(g.index)),
                  "peak_gib": _gib(got.gpu_peak.get(g.index))} for g in planned.gpus],
        "services": services,
    }


# ---------------------------------------------------------------- on the hosts


def run_load(
    session: Session, host: PlannedHost, reading: HostReading, settings: LoadSettings
) -> LoadReading:
    """The load script on one host (after validate's reading, which says what is up)."""
    services, skipped = loaded_services(host, reading)
    if not services:
        return LoadReading(host.name, skipped=skipped)
    result = session.run("python3 -c " + shlex.quote(LOAD_SCRIPT),
                         stdin=load_request(host, services, settings),
                         timeout=script_timeout(settings))
    load = parse_load_output(host.name, result.stdout + ("\n" + result.stderr[-300:]
                                                          if result.rc else ""))
    load.skipped = skipped
    load.concurrency = {s.name: load_concurrency(s, settings.concurrency) for s in services}
    return load


def read_fleet_under_load(
    plan: Plan, settings: LoadSettings, *, ssh_key: str | None = None,
    known_hosts: str | None = None,
) -> tuple[dict[str, HostReading], dict[str, LoadReading]]:
    """Per host, in parallel over one SSH session: validate's reading, then the load."""
    fleet = plan.inventory.fleet

    def one(host: PlannedHost) -> tuple[HostReading, LoadReading]:
        target = SshTarget.of(host.name, host.host, fleet, ssh_key, known_hosts)
        try:
            with Session(target) as session:
                reading = read_host(session, host)
                if reading.error is not None:
                    return reading, LoadReading(host.name, error=reading.error)
                try:
                    return reading, run_load(session, host, reading, settings)
                except HostUnreachable as exc:  # lost during the load: the reading stands
                    return reading, LoadReading(host.name, error=f"during the load: {exc}")
        except HostUnreachable as exc:
            return HostReading(host.name, error=str(exc)), LoadReading(host.name, error=str(exc))

    with ThreadPoolExecutor(max_workers=min(16, len(plan.hosts) or 1)) as pool:
        done = dict(zip([h.name for h in plan.hosts], pool.map(one, plan.hosts), strict=True))
    return {h: r for h, (r, _) in done.items()}, {h: ld for h, (_, ld) in done.items()}
