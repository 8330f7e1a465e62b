"""What an SMI reading says about a host: GPUs, their VRAM, and the processes holding it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpufleet.errors import InputError


class SmiParseError(InputError):
    """The text is not a usable rocm-smi/amd-smi reading, or the tool itself reported failure."""


@dataclass
class GpuReading:
    """One GPU as the tool numbered it. `index` is the tool's own index (rocm-smi `card<i>` or
    `GPU[i]`, amd-smi `gpu`), not the DRM card number; `hip_id` only where the tool printed it."""

    index: int
    hip_id: int | None = None
    bdf: str | None = None
    vram_total_bytes: int | None = None
    vram_used_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "vram_total_bytes": self.vram_total_bytes,
            "vram_used_bytes": self.vram_used_bytes,
            "bdf": self.bdf,
            "hip_id": self.hip_id,
        }


@dataclass
class ProcessReading:
    """One process. `gpus` holds GPU indices the tool attributed it to: empty where the tool only
    gives a count (rocm-smi --showpids). `vram_bytes` is its VRAM summed over those GPUs."""

    pid: int
    name: str | None = None
    gpus: list[int] = field(default_factory=list)
    vram_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "name": self.name,
            "gpus": list(self.gpus),
            "vram_bytes": self.vram_bytes,
        }


@dataclass
class Snapshot:
    """One reading of one host. Unknown values are None. `warnings` say what the input lacked
    (truncated, elided); they are for people and are not part of `to_dict()`."""

    gpus: list[GpuReading]
    processes: list[ProcessReading]
    tool: str
    format: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "format": self.format,
            "gpus": [gpu.to_dict() for gpu in self.gpus],
            "processes": [proc.to_dict() for proc in self.processes],
        }


class SnapshotBuilder:
    """Collects GPU and process facts as a parser meets them, keyed by GPU index and PID."""

    def __init__(self, tool: str, format: str):
        self.tool = tool
        self.format = format
        self.warnings: list[str] = []
        self._gpus: dict[int, GpuReading] = {}
        self._procs: dict[int, ProcessReading] = {}
        self._vram_parts: dict[int, list[int | None]] = {}

    def gpu(self, index: int) -> GpuReading:
        return self._gpus.setdefault(index, GpuReading(index))

    def process(
        self, pid: int, *, name: str | None = None, gpu: int | None = None
    ) -> ProcessReading:
        proc = self._procs.setdefault(pid, ProcessReading(pid))
        proc.name = name or proc.name
        if gpu is not None:
            self.gpu(gpu)  # a GPU a process sits on is a GPU the host has
            if gpu not in proc.gpus:
                proc.gpus.append(gpu)
        return proc

    def add_vram(self, pid: int, vram: int | None) -> None:
        """A row of VRAM for a process: one GPU's share, or its total where rows are per process."""
        self._vram_parts.setdefault(pid, []).append(vram)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    @property
    def empty(self) -> bool:
        return not self._gpus and not self._procs

    def build(self) -> Snapshot:
        for pid, parts in self._vram_parts.items():
            # a total with one unknown share is unknown, not an undercount
            known = [p for p in parts if p is not None]
            self._procs[pid].vram_bytes = sum(known) if len(known) == len(parts) else None
        for proc in self._procs.values():
            proc.gpus.sort()
        return Snapshot(
            gpus=[self._gpus[i] for i in sorted(self._gpus)],
            processes=[self._procs[p] for p in sorted(self._procs)],
            tool=self.tool,
            format=self.format,
            warnings=list(self.warnings),
        )


def merge(*snapshots: Snapshot) -> Snapshot:
    """One snapshot from several readings of one host (`--showmeminfo vram` + `--showpids`, say).

    GPUs match on index, processes on PID; a later reading's known value replaces an earlier one,
    and process GPU lists are united. Readings from different tools are refused: rocm-smi and
    amd-smi number GPUs independently, so index 0 in one need not be index 0 in the other.
    """
    if not snapshots:
        raise SmiParseError("merge needs at least one snapshot")
    tools = sorted({s.tool for s in snapshots})
    if len(tools) > 1:
        raise SmiParseError(
            f"cannot merge readings of different tools ({', '.join(tools)})",
            hint="their GPU indices are numbered independently; merge rocm-smi with rocm-smi "
            "readings, amd-smi with amd-smi",
        )
    gpus: dict[int, GpuReading] = {}
    procs: dict[int, ProcessReading] = {}
    for snap in snapshots:
        for gpu in snap.gpus:
            _overlay(gpus.setdefault(gpu.index, GpuReading(gpu.index)), gpu)
        for proc in snap.processes:
            _overlay_process(procs.setdefault(proc.pid, ProcessReading(proc.pid)), proc)
    formats = list(dict.fromkeys(s.format for s in snapshots))
    return Snapshot(
        gpus=[gpus[i] for i in sorted(gpus)],
        processes=[procs[p] for p in sorted(procs)],
        tool=tools[0],
        format="+".join(formats),
        warnings=[w for s in snapshots for w in s.warnings],
    )


def _overlay(into: GpuReading, new: GpuReading) -> None:
    for name in ("hip_id", "bdf", "vram_total_bytes", "vram_used_bytes"):
        value = getattr(new, name)
        if value is not None:
            setattr(into, name, value)


def _overlay_process(into: ProcessReading, new: ProcessReading) -> None:
    into.name = new.name or into.name
    into.gpus = sorted(set(into.gpus) | set(new.gpus))
    if new.vram_bytes is not None:
        into.vram_bytes = new.vram_bytes
