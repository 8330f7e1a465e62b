"""amd-smi readings: `--json` (bare list, or `{"gpu_data": [...]}` from amd-smi 26 / ROCm 7.0),
`--csv`, and the text views (`list`/`static`/`metric`/`process` blocks, `monitor` tables, the
default boxed view). Field names per amdsmi_cli/amdsmi_commands.py, ROCm 6.1-7.x."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from gpufleet.gpu.smi.model import GpuReading, SmiParseError, Snapshot, SnapshotBuilder
from gpufleet.gpu.smi.values import cells, to_bdf, to_bytes, to_int, to_name

TOOL = "amd-smi"

# amd-smi's JSON/CSV print VRAM totals as bare MiB counts ("MB", see values.UNIT_BYTES) and
# process memory in bytes; these are the units for values that come without one.
_VRAM_UNIT = "MB"
_PROCESS_UNIT = "B"
_ELIDED = "the output is elided ('...' or '[output truncated]'): what was cut is missing here"
_KV = re.compile(r"^(\s*)([^:]+):(?:\s+(.*?))?\s*$")
_RATIO = re.compile(r"^([\d.]+)\s*/\s*([\d.]+)\s*([A-Za-z]+)$")


def _set(gpu: GpuReading, attr: str, value: Any) -> None:
    if value is not None:  # a later sample or view fills in, never blanks out
        setattr(gpu, attr, value)


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _add_process(builder: SnapshotBuilder, gpu: int, pid: Any, name: Any, vram: int | None) -> None:
    pid_int = to_int(pid)
    if pid_int is None:
        builder.warn(f"GPU {gpu}: a process entry without a PID was skipped")
        return
    builder.process(pid_int, name=to_name(name), gpu=gpu)
    builder.add_vram(pid_int, vram)


# --- JSON ------------------------------------------------------------------------------------


def gpu_entries(data: Any) -> list[dict[str, Any]] | None:
    """The per-GPU entries of an amd-smi JSON document, or None if it is not one."""
    if isinstance(data, dict) and isinstance(data.get("gpu_data"), list):
        data = data["gpu_data"]
    if isinstance(data, list) and data and all(isinstance(e, dict) for e in data):
        entries = [e for e in data if "gpu" in e]
        return entries if entries else None
    return None


def parse_json(entries: list[dict[str, Any]], *, truncated: bool) -> Snapshot:
    builder = SnapshotBuilder(TOOL, "amd-smi-json")
    for entry in entries:
        _json_gpu(builder, entry)
    if truncated:
        builder.warn("the JSON is truncated: this snapshot holds only what came before the cut")
    return builder.build()


def _json_gpu(builder: SnapshotBuilder, entry: dict[str, Any]) -> None:
    index = to_int(entry.get("gpu"))
    if index is None:
        return
    gpu = builder.gpu(index)
    _set(gpu, "bdf", to_bdf(entry.get("bdf")) or to_bdf(_get(entry, "bus", "bdf")))
    _set(gpu, "hip_id", to_int(entry.get("hip_id")))
    total = _get(entry, "mem_usage", "total_vram") or _get(entry, "vram", "size")
    _set(gpu, "vram_total_bytes", to_bytes(total, default_unit=_VRAM_UNIT))
    used = _get(entry, "mem_usage", "used_vram")
    _set(gpu, "vram_used_bytes", to_bytes(used, default_unit=_VRAM_UNIT))
    for item in entry.get("process_list") or []:
        # idle GPUs list {"process_info": "No running processes detected"}
        info = item.get("process_info", item) if isinstance(item, dict) else None
        if isinstance(info, dict):
            # "mem_usage" is the process's total (GTT + CPU + VRAM), not its VRAM
            vram = to_bytes(_get(info, "memory_usage", "vram_mem"), default_unit=_PROCESS_UNIT)
            _add_process(builder, index, info.get("pid"), info.get("name"), vram)


# --- CSV -------------------------------------------------------------------------------------


def parse_csv(text: str) -> Snapshot:
    builder = SnapshotBuilder(TOOL, "amd-smi-csv")
    for raw in csv.DictReader(io.StringIO(text)):
        row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        index = to_int(row.get("gpu"))
        if index is None:
            continue
        gpu = builder.gpu(index)
        _set(gpu, "bdf", to_bdf(row.get("bdf")))
        _set(gpu, "hip_id", to_int(row.get("hip_id")))
        _set(gpu, "vram_total_bytes", to_bytes(row.get("total_vram"), default_unit=_VRAM_UNIT))
        _set(gpu, "vram_used_bytes", to_bytes(row.get("used_vram"), default_unit=_VRAM_UNIT))
        if "pid" in row:
            vram = to_bytes(row.get("vram_mem"), default_unit=_PROCESS_UNIT)
            _add_process(builder, index, row["pid"], row.get("name"), vram)
    return builder.build()


# --- text ------------------------------------------------------------------------------------


def looks_like_text(text: str) -> bool:
    return bool(
        re.search(r"^GPU: \d+\s*$", text, re.M)
        or re.search(r"^GPU {2,}[A-Z]", text, re.M)
        or re.search(r"^\|\s+(BDF|Processes:|AMD-SMI)", text, re.M)
    )


def parse_text(text: str, *, source: str) -> Snapshot:
    lines = text.splitlines()
    if any(
        ln.rstrip() in ("CURRENT_PARTITION:", "ACCELERATOR_PARTITION_PROFILES:") for ln in lines
    ):
        raise SmiParseError(
            "this is amd-smi partition output, not a memory or process reading",
            where=source,
            hint="run `amd-smi metric --mem-usage --json` and `amd-smi process --json`",
        )
    builder = SnapshotBuilder(TOOL, "amd-smi-text")
    if any(ln.strip() in ("...", "[output truncated]") for ln in lines):
        builder.warn(_ELIDED)
    _blocks(builder, lines)
    _tables(builder, lines)
    _boxes(builder, lines)
    return builder.build()


def _blocks(builder: SnapshotBuilder, lines: list[str]) -> None:
    """`GPU: 0` blocks of indented `KEY: value` lines (list, static, metric, process)."""
    gpu: int | None = None
    stack: list[tuple[int, str]] = []
    proc: dict[str, str] | None = None
    for line in lines:
        match = _KV.match(line)
        if not match:
            continue
        indent, key, value = len(match.group(1)), match.group(2).strip(), match.group(3) or ""
        if indent == 0:
            _flush_process(builder, gpu, proc)
            proc, stack = None, []
            gpu = to_int(value) if key == "GPU" else None
            if gpu is not None:
                builder.gpu(gpu)
            continue
        if gpu is None:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        if not value:
            stack.append((indent, key))
        if key == "PROCESS_INFO":
            _flush_process(builder, gpu, proc)
            proc = {} if not value else None  # a value here is "No running processes detected"
        elif proc is not None and "PROCESS_INFO" in path:
            proc[key] = value
        else:
            _block_field(builder.gpu(gpu), path, value)
    _flush_process(builder, gpu, proc)


def _block_field(gpu: GpuReading, path: list[str], value: str) -> None:
    key = path[-1]
    if key == "BDF":
        _set(gpu, "bdf", to_bdf(value))
    elif key == "HIP_ID":
        _set(gpu, "hip_id", to_int(value))
    elif key == "TOTAL_VRAM" or path[-2:] == ["VRAM", "SIZE"]:
        _set(gpu, "vram_total_bytes", to_bytes(value, default_unit=_VRAM_UNIT))
    elif key == "USED_VRAM":
        _set(gpu, "vram_used_bytes", to_bytes(value, default_unit=_VRAM_UNIT))


def _flush_process(builder: SnapshotBuilder, gpu: int | None, proc: dict[str, str] | None) -> None:
    if gpu is not None and proc:
        vram = to_bytes(proc.get("VRAM_MEM"), default_unit=_PROCESS_UNIT)
        _add_process(builder, gpu, proc.get("PID"), proc.get("NAME"), vram)


def _tables(builder: SnapshotBuilder, lines: list[str]) -> None:
    """`amd-smi monitor` tables: a `GPU  POWER ...` header, then one row per GPU (or process)."""
    header: list[str] | None = None
    for line in lines:
        row = cells(line)
        if row and row[0] == "GPU" and all(re.fullmatch(r"[A-Z][A-Z0-9_%]*", c) for c in row):
            header = row
        elif header and row and to_int(row[0]) is not None:
            _table_row(builder, header, row)
        else:
            header = None


def _table_row(builder: SnapshotBuilder, header: list[str], row: list[str]) -> None:
    if len(row) != len(header):
        builder.warn(f"skipped a table row whose cells do not line up with its header: {row}")
        return
    record = dict(zip(header, row, strict=True))
    index = to_int(record["GPU"])
    assert index is not None  # the caller checked
    if "PID" in record:
        vram = to_bytes(record.get("VRAM_MEM"))
        name = record.get("NAME", record.get("Process Name"))
        _add_process(builder, index, record["PID"], name, vram)
        return
    gpu = builder.gpu(index)
    _set(gpu, "vram_used_bytes", to_bytes(record.get("VRAM_USED")))
    _set(gpu, "vram_total_bytes", to_bytes(record.get("VRAM_TOTAL")))
    _ratio(gpu, record.get("VRAM_USAGE"))


def _ratio(gpu: GpuReading, value: str | None) -> None:
    """Used/total from `3.1/191.7 GB` (monitor) or `4976/196592 MB` (default view)."""
    match = _RATIO.match(value or "")
    if match:
        used, total, unit = match.groups()
        _set(gpu, "vram_used_bytes", to_bytes(used, unit))
        _set(gpu, "vram_total_bytes", to_bytes(total, unit))


def _boxes(builder: SnapshotBuilder, lines: list[str]) -> None:
    """The default view (amd-smi 26+): a GPU box of two-line records (`BDF  GPU-Name | ...` over
    `GPU  HIP-ID  OAM-ID  Partition-Mode | ...`), then a process box."""
    headers: list[list[str]] = []
    proc_header: list[str] = []
    first: list[str] | None = None
    for line in (ln for ln in lines if ln.startswith("|")):
        row = [c for part in line.strip().strip("|").split("|") for c in cells(part)]
        if not row or set(row[0]) <= set("=-+"):
            continue
        if row[0] == "BDF" or (row[0] == "GPU" and "HIP-ID" in row):
            headers = [*headers[-1:], row] if row[0] == "GPU" else [row]
        elif row[:2] == ["GPU", "PID"]:
            proc_header = row
        elif proc_header and to_int(row[0]) is not None:
            _table_row(builder, proc_header, row)
        elif len(headers) == 2 and to_bdf(row[0]):
            first = row
        elif len(headers) == 2 and first and to_int(row[0]) is not None:
            record = dict(zip(headers[0], first, strict=False))
            record.update(zip(headers[1], row, strict=False))
            _box_gpu(builder, record)
            first = None


def _box_gpu(builder: SnapshotBuilder, record: dict[str, str]) -> None:
    index = to_int(record.get("GPU"))
    if index is None:
        return
    gpu = builder.gpu(index)
    _set(gpu, "bdf", to_bdf(record.get("BDF")))
    _set(gpu, "hip_id", to_int(record.get("HIP-ID")))
    _ratio(gpu, record.get("Mem-Usage"))
