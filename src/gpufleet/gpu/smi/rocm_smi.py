"""rocm-smi readings: `--json`, `--csv` and text (concise, `--showmeminfo vram`, `--showpids`,
`--showpidgpus`, `-a`). Labels per rocm_smi_lib's python_smi_tools/rocm_smi.py, ROCm 4.x-7.x."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from gpufleet.gpu.smi.model import SmiParseError, Snapshot, SnapshotBuilder
from gpufleet.gpu.smi.values import to_bdf, to_bytes, to_name

TOOL = "rocm-smi"

# Labels are matched lower-cased: early releases printed the memory type as typed ("vram").
_GPU_FIELDS = {
    "vram total memory (b)": "vram_total_bytes",
    "vram total used memory (b)": "vram_used_bytes",
    "pci bus": "bdf",
}
_TOPOLOGY_SECTIONS = {
    "weight between two gpus",
    "hops between two gpus",
    "link type between two gpus",
    "numa nodes",
}
_FRAME_SECTIONS = {"rocm system management interface", "end of rocm smi log", ""}
_CARD = re.compile(r"^card(\d+)$")
_GPU_LINE = re.compile(r"^GPU\[(\d+)\]\s*:\s?(.*)$")
_SECTION = re.compile(r"^={3,}(.*?)={3,}\s*$")
_PID_GPUS = re.compile(r"^PID (\d+) is using (\d+) DRM device\(s\)")


def _apply_field(builder: SnapshotBuilder, index: int, label: str, value: Any) -> None:
    attr = _GPU_FIELDS.get(label.strip().lower())
    gpu = builder.gpu(index)
    if attr == "bdf":
        gpu.bdf = to_bdf(value)
    elif attr:
        setattr(gpu, attr, to_bytes(value, "B"))


# --- JSON ------------------------------------------------------------------------------------


def looks_like_json(data: Any) -> bool:
    return isinstance(data, dict) and any(_CARD.match(k) or k == "system" for k in data)


def parse_json(data: dict[str, Any], *, truncated: bool) -> Snapshot:
    builder = SnapshotBuilder(TOOL, "rocm-smi-json")
    for key, fields in data.items():
        card = _CARD.match(key)
        if card and isinstance(fields, dict):
            for label, value in fields.items():
                _apply_field(builder, int(card.group(1)), label, value)
    system = data.get("system")
    for key, value in (system or {}).items() if isinstance(system, dict) else ():
        if key.startswith("PID") and key[3:].isdigit():
            _json_pid(builder, int(key[3:]), str(value))
    if truncated:
        builder.warn("the JSON is truncated: this snapshot holds only what came before the cut")
    return builder.build()


def _json_pid(builder: SnapshotBuilder, pid: int, row: str) -> None:
    # "name, gpu count, vram, sdma, cu": the name may itself hold ", ", so count from the right
    parts = row.split(", ")
    if len(parts) < 5:
        builder.warn(f"PID{pid}: cannot read {row!r} as 'name, gpus, vram, sdma, cu'")
        builder.process(pid)
        return
    builder.process(pid, name=to_name(", ".join(parts[:-4])))
    builder.add_vram(pid, to_bytes(parts[-3], "B"))


# --- CSV -------------------------------------------------------------------------------------


def looks_like_csv(text: str) -> bool:
    return text.startswith("device,")


def parse_csv(text: str) -> Snapshot:
    builder = SnapshotBuilder(TOOL, "rocm-smi-csv")
    for row in csv.DictReader(io.StringIO(text)):
        card = _CARD.match((row.get("device") or "").strip())
        if not card:
            continue
        for label, value in row.items():
            if label:
                _apply_field(builder, int(card.group(1)), label, value)
    return builder.build()


# --- text ------------------------------------------------------------------------------------


def looks_like_text(text: str) -> bool:
    return bool(
        "ROCm System Management Interface" in text
        or "End of ROCm SMI Log" in text
        or "KFD process information" in text
        or re.search(r"^GPU\[\d+\]", text, re.M)
    )


def parse_text(text: str, *, source: str) -> Snapshot:
    builder = SnapshotBuilder(TOOL, "rocm-smi-text")
    lines = text.splitlines()
    if not text.endswith("\n") and re.match(r"^(\d+\s|GPU\[)", lines[-1]):
        # real output ends with a newline: a last data row without one may be cut mid-value
        builder.warn(f"dropped the last row, cut off mid-line: {lines.pop().strip()!r}")
    sections = _sections(lines)
    titles = {title.lower() for title, _ in sections} - _FRAME_SECTIONS
    if titles and titles <= _TOPOLOGY_SECTIONS:
        raise SmiParseError(
            "this is rocm-smi topology output (--showtopo/--showtoponuma), not a memory or "
            "process reading",
            where=source,
            hint="run `rocm-smi --showmeminfo vram --json` and `rocm-smi --showpids --json`",
        )
    for title, lines in sections:
        _section(builder, title.lower(), lines)
    return builder.build()


def _sections(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(title, lines) for each `==== Title ====` block; lines before any title go under ""."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in lines:
        match = _SECTION.match(line.strip())
        if match and match.group(1).strip():
            sections.append((match.group(1).strip(), []))
        elif not match:  # a bare ==== rule closes a table header, not the section
            sections[-1][1].append(line)
    return sections


def _section(builder: SnapshotBuilder, title: str, lines: list[str]) -> None:
    if title == "concise info":
        _concise(builder, lines)
    elif title == "kfd processes" or any("KFD process information" in ln for ln in lines):
        _kfd_processes(builder, lines)
    elif title == "gpus indexed by pid":
        _pid_gpus(builder, lines)
    if title in _TOPOLOGY_SECTIONS:
        return  # numa/link rows name GPUs but carry no reading of them
    for line in lines:
        match = _GPU_LINE.match(line.strip())
        if match:
            _gpu_line(builder, int(match.group(1)), match.group(2))


def _gpu_line(builder: SnapshotBuilder, index: int, rest: str) -> None:
    builder.gpu(index)
    label, sep, value = rest.partition(": ")
    if sep:
        _apply_field(builder, index, label, value.strip())


def _concise(builder: SnapshotBuilder, lines: list[str]) -> None:
    # a device row starts with its index; the second line of a 6.1 row (the name) is indented
    for line in lines:
        match = re.match(r"^(\d+)\s", line)
        if match:
            builder.gpu(int(match.group(1)))


def _kfd_processes(builder: SnapshotBuilder, lines: list[str]) -> None:
    """`--showpids` (and `=details`): PID, PROCESS NAME, GPU(s), VRAM USED, SDMA USED, CU OCCUPANCY.

    GPU(s) is a count, not an index (rocm_smi_lib#166), so no GPU is attributed here. The
    `details` variant prints one row per device for a PID: its VRAM is summed.
    """
    for line in (ln for ln in lines if re.match(r"^\d+\s", ln)):
        tokens = line.split()
        if len(tokens) < 6:
            builder.warn(f"dropped an incomplete --showpids row (output cut off): {line.strip()!r}")
            continue
        pid = int(tokens[0])
        builder.process(pid, name=to_name(" ".join(tokens[1:-4])))
        builder.add_vram(pid, to_bytes(tokens[-3], "B"))


def _pid_gpus(builder: SnapshotBuilder, lines: list[str]) -> None:
    """`--showpidgpus`: "PID 123 is using 2 DRM device(s):" then the indices on the next line(s)."""
    pid: int | None = None
    for line in lines:
        match = _PID_GPUS.match(line.strip())
        if match:
            pid = int(match.group(1))
            builder.process(pid)
        elif pid is not None and re.fullmatch(r"[\d ]+", line.strip() or "x"):
            for index in line.split():
                builder.process(pid, gpu=int(index))
