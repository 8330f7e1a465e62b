"""Value conventions shared by the SMI parsers: unknowns, byte units, BDFs, table cells."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

# Both tools mean binary multiples by "KB/MB/GB": amd-smi's JSON "MB" is bytes // 2**20
# (amdsmi_commands.py: `used_vram // (1024*1024)`; 196592 MB * 2**20 == 206141652992 B, the
# exact figure rocm-smi prints for the same MI300X), and its text views divide by 1024 per
# step (amdsmi_helpers.convert_bytes_to_readable: "16.0 EB" is the 2**64 N/A sentinel;
# VRAM_MEM "7.3 GB" is the CSV's 7889485824 B / 2**30). rocm-smi prints raw bytes, "(B)".
UNIT_BYTES = {
    "B": 1,
    "KB": 2**10,
    "KIB": 2**10,
    "MB": 2**20,
    "MIB": 2**20,
    "GB": 2**30,
    "GIB": 2**30,
    "TB": 2**40,
    "TIB": 2**40,
    "PB": 2**50,
    "PIB": 2**50,
    "EB": 2**60,
    "EIB": 2**60,
}

# What the tools print instead of a value they could not read.
UNKNOWN = {"", "N/A", "NA", "UNKNOWN", "NONE", "NOT SUPPORTED", "UNSUPPORTED"}

_QUANTITY = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_BDF = re.compile(r"^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")


def is_unknown(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().upper() in UNKNOWN)


def to_bytes(value: Any, unit: str | None = None, *, default_unit: str = "B") -> int | None:
    """Bytes from a number and a unit ("7.3", "GB"), a "7.3 GB" string, or an amd-smi
    {"value": 7, "unit": "GB"} object. Unknowns give None. Text views round (amd-smi prints one
    decimal), so the result is exact only to the precision the tool printed."""
    if isinstance(value, dict):
        return to_bytes(value.get("value"), value.get("unit"), default_unit=default_unit)
    if is_unknown(value) or isinstance(value, bool):
        return None
    match = _QUANTITY.match(str(value))
    if not match:
        return None
    number, inline_unit = match.groups()
    factor = UNIT_BYTES.get((unit or inline_unit or default_unit).strip().upper())
    if factor is None:
        return None
    try:
        exact = Decimal(number) * factor
    except InvalidOperation:
        return None
    return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


def to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if is_unknown(value):
        return None
    text = str(value).strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else None


def to_bdf(value: Any) -> str | None:
    """A PCI address in one spelling (rocm-smi prints upper case, amd-smi lower case)."""
    if is_unknown(value):
        return None
    text = str(value).strip()
    return text.lower() if _BDF.match(text) else None


def to_name(value: Any) -> str | None:
    return None if is_unknown(value) else str(value).strip()


def cells(line: str) -> list[str]:
    """Cells of a space-aligned table row: columns are 2+ spaces apart, a value such as
    "283 MB" or "Process Name" holds single spaces."""
    return [c for c in re.split(r"\s{2,}|\t", line.strip()) if c]
