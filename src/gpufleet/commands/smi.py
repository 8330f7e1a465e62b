"""`gpufleet smi parse FILE|-`: read a saved rocm-smi/amd-smi output and show the snapshot."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.table import Table

from gpufleet.commands import SUMMARIES
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.gpu.smi import Snapshot, parse

GIB = 2**30


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "smi",
        help=SUMMARIES["smi"],
        description="Read rocm-smi or amd-smi output into a snapshot of GPUs, VRAM and processes.",
    )
    sub = parser.add_subparsers(dest="smi_command", metavar="SUBCOMMAND")
    sub.required = True
    parse_cmd = sub.add_parser(
        "parse",
        help="parse one saved output (JSON, CSV or text of either tool)",
        description="Parse one rocm-smi or amd-smi output, e.g. "
        "`rocm-smi --showmeminfo vram --json > mem.json; gpufleet smi parse mem.json`.",
    )
    parse_cmd.add_argument("file", metavar="FILE|-", help="the saved output, or - for stdin")
    parse_cmd.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    parse_cmd.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, env: Environment) -> int:
    source = "<stdin>" if args.file == "-" else args.file
    snapshot = parse(_read(args.file), source=source)
    for warning in snapshot.warnings:
        env.warn(f"{source}: {warning}")
    if args.json:
        env.write_json(json.dumps(snapshot.to_dict(), indent=2))
    else:
        _show(snapshot, env)
    return ExitStatus.OK


def _read(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    try:
        # tools print °C in UTF-8; a stray byte must not stop the reading
        return Path(file).read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise InputError(
            f"cannot read the SMI output: {exc.strerror or exc}",
            where=file,
            hint="save it first, e.g. `rocm-smi --showmeminfo vram --json > mem.json`",
        ) from exc


def _gib(value: int | None) -> str:
    return "?" if value is None else f"{value / GIB:.1f}"


def _show(snapshot: Snapshot, env: Environment) -> None:
    if not snapshot.gpus:
        env.out.print(f"{snapshot.tool} ({snapshot.format}): no per-GPU rows in this reading")
    else:
        env.out.print(_gpu_table(snapshot))
    if snapshot.processes:
        env.out.print(_process_table(snapshot))


def _gpu_table(snapshot: Snapshot) -> Table:
    gpus = Table(title=f"{snapshot.tool} ({snapshot.format})")
    for column in ("GPU", "BDF", "VRAM used GiB", "VRAM total GiB", "processes"):
        gpus.add_column(column, justify="right" if "GiB" in column else "left")
    for gpu in snapshot.gpus:
        pids = [str(p.pid) for p in snapshot.processes if gpu.index in p.gpus]
        gpus.add_row(
            str(gpu.index),
            gpu.bdf or "?",
            _gib(gpu.vram_used_bytes),
            _gib(gpu.vram_total_bytes),
            ", ".join(pids) or "-",
        )
    return gpus


def _process_table(snapshot: Snapshot) -> Table:
    procs = Table(title="processes")
    for column in ("PID", "name", "GPUs", "VRAM GiB"):
        procs.add_column(column, justify="right" if column in ("PID", "VRAM GiB") else "left")
    for proc in snapshot.processes:
        # rocm-smi --showpids gives a GPU count, not indices: "?" rather than a guess
        where = ", ".join(map(str, proc.gpus)) or "?"
        procs.add_row(str(proc.pid), proc.name or "?", where, _gib(proc.vram_bytes))
    return procs
