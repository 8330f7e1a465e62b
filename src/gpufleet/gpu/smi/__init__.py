"""rocm-smi / amd-smi output → one Snapshot of a host's GPUs, their VRAM and the processes on them.

Pure: `parse` reads only the text it is given. It recognises a format by its own marks and never
guesses: text that is none of the known formats, a help text, another tool's output or a tool's
own failure message is a `SmiParseError` that says which it is.

    >>> snap = parse(open("meminfo.json").read(), source="meminfo.json")
    >>> snap.gpus[0].vram_total_bytes
    206141652992
"""

from __future__ import annotations

import re
import textwrap

from gpufleet.gpu.smi import amd_smi, rocm_smi
from gpufleet.gpu.smi.jsonload import MalformedJson, load
from gpufleet.gpu.smi.model import GpuReading, ProcessReading, SmiParseError, Snapshot, merge

__all__ = ["GpuReading", "ProcessReading", "SmiParseError", "Snapshot", "merge", "parse"]

EXPECTED = (
    "rocm-smi --json / --csv / text (concise, --showmeminfo vram, --showpids, -a), "
    "amd-smi --json / --csv / text (list, static, metric, process, monitor, default view)"
)
# a pasted command line: "$ amd-smi list", "~$ sudo rocm-smi", "% amd-smi metric"
_PROMPT = re.compile(r"^\S*[$%#]\s+(sudo\s+)?\S*(amd-smi|rocm-smi|rocminfo)\b")
_NO_DRIVER = re.compile(r"Driver not initialized|amdgpu not found in modules|DRIVER_NOT_LOADED")
_ROCMINFO = re.compile(r"^(ROCk module|HSA System Attributes|HSA Agents)|^\$ rocminfo", re.M)
# "{" or "[" opening a line, then a key, an object or a line break: not "[output truncated]"
_JSON_START = re.compile(r'^[\[{][ \t]*($|["{\[])', re.M)
_CSV_START = re.compile(r"^(device|gpu),\w", re.M)
_HELP = re.compile(r"^usage: (amd-smi|rocm-smi)\b", re.M)


def parse(text: str, *, source: str = "<stdin>") -> Snapshot:
    """One snapshot from one rocm-smi or amd-smi output. Raises SmiParseError if it is not one."""
    _refuse_non_readings(text, source)
    body = _strip_prompt(textwrap.dedent(text.replace("\r\n", "\n").lstrip("\ufeff")))
    if not body.strip():
        raise SmiParseError("only a command line, no output to read", where=source)
    json_start = _JSON_START.search(body)
    if json_start:
        return _parse_json(body[json_start.start() :], source)
    csv_start = _CSV_START.search(body)  # after any warning lines the tool printed first
    if csv_start:
        csv_body = body[csv_start.start() :]
        if rocm_smi.looks_like_csv(csv_body):
            return rocm_smi.parse_csv(csv_body)
        return amd_smi.parse_csv(csv_body)
    if rocm_smi.looks_like_text(body):
        return rocm_smi.parse_text(body, source=source)
    if amd_smi.looks_like_text(body):
        return amd_smi.parse_text(body, source=source)
    raise _not_smi(text, source)


def _refuse_non_readings(text: str, source: str) -> None:
    if not text.strip():
        raise SmiParseError("empty input: no rocm-smi or amd-smi output", where=source)
    if _NO_DRIVER.search(text):
        # rocm-smi prints this and exits 0, so only the text tells that nothing was read
        raise SmiParseError(
            "the SMI tool found no GPU driver: 'Driver not initialized (amdgpu not found in "
            "modules)'; this output has no reading",
            where=source,
            hint="load the driver (`modprobe amdgpu`, check `dmesg | grep amdgpu`) and rerun",
        )
    help_text = _HELP.search(text)
    if help_text:
        raise SmiParseError(
            f"this is {help_text.group(1)} help text, not a reading",
            where=source,
            hint=f"run the command without --help/--usage, e.g. `{help_text.group(1)} ... --json`",
        )
    if _ROCMINFO.search(text):
        raise SmiParseError(
            "this is rocminfo output (HSA agents), not rocm-smi or amd-smi",
            where=source,
            hint="run `rocm-smi --showmeminfo vram --json` or `amd-smi metric --mem-usage --json`",
        )


def _strip_prompt(text: str) -> str:
    lines = text.lstrip("\n").split("\n")
    return "\n".join(lines[1:]) if _PROMPT.match(lines[0]) else text


def _parse_json(body: str, source: str) -> Snapshot:
    try:
        data, truncated = load(body)
    except MalformedJson as exc:
        raise SmiParseError(f"malformed JSON: {exc}", where=source) from exc
    entries = amd_smi.gpu_entries(data)
    if entries is not None:
        return amd_smi.parse_json(entries, truncated=truncated)
    if rocm_smi.looks_like_json(data):
        return rocm_smi.parse_json(data, truncated=truncated)
    if truncated:
        raise SmiParseError(
            "truncated JSON with no complete GPU entry: nothing to read",
            where=source,
            hint="capture the whole output (`... --json > file`) and parse that",
        )
    shape = sorted(data)[:6] if isinstance(data, dict) else type(data).__name__
    raise SmiParseError(
        f"JSON, but not a rocm-smi or amd-smi reading (top level: {shape}); expected "
        '{"card0": {...}} (rocm-smi) or [{"gpu": 0, ...}] / {"gpu_data": [...]} (amd-smi)',
        where=source,
        hint="pass the tool's whole --json output, not a jq-filtered part",
    )


def _not_smi(text: str, source: str) -> SmiParseError:
    first = next(ln.strip() for ln in text.splitlines() if ln.strip())
    return SmiParseError(
        f"not rocm-smi or amd-smi output: first line: {first[:80]!r}; expected one of {EXPECTED}",
        where=source,
    )
