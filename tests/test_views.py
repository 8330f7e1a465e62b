"""The terminal views at 80 and 200 columns and without colour (snapshots + what must hold).

Snapshots live in tests/snapshots/views/; regenerate them with GPUFLEET_UPDATE_SNAPSHOTS=1 and
review the diff. Beside the snapshots, each test checks the rules the snapshots were made for:
numbers are never cut, a shared GPU reads without colour, ids people copy are whole.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from support import INVENTORIES, REPO

from gpufleet import inventory, views
from gpufleet.plan import build_plan
from gpufleet.vllm.models import catalog_ids

SNAPSHOTS = REPO / "tests" / "snapshots" / "views"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cli(*args: str, columns: int, color: bool = False) -> str:
    """The real command line in a fresh process, as a terminal of `columns` would show it
    (FORCE_COLOR makes rich write colour as on a TTY; NO_COLOR takes it away)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update({"COLUMNS": str(columns), "TERM": "xterm-256color"})
    env.update({"FORCE_COLOR": "1"} if color else {"NO_COLOR": "1"})
    done = subprocess.run([sys.executable, "-m", "gpufleet", *args], capture_output=True,
                          text=True, env=env, cwd=REPO)
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


def snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("GPUFLEET_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no snapshot {path.name}: GPUFLEET_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(), f"{path.name} differs from its snapshot (review, then " \
        "GPUFLEET_UPDATE_SNAPSHOTS=1)"


def tables(text: str) -> list[str]:
    """The lines of the host and services tables (before the findings)."""
    return text.split("\n\n")[0].splitlines()


@pytest.mark.parametrize("columns", [80, 200])
def test_plan_view_at_a_width_never_cuts_a_number(columns: int) -> None:
    text = cli("plan", str(INVENTORIES / "berget.yml"), columns=columns)
    snapshot(f"plan-{columns}.txt", text)
    assert max(len(line) for line in text.splitlines()) <= columns
    assert "…" not in text  # nothing ellipsised
    lines = tables(text)
    row = next(line for line in lines if " llama-8b " in line)  # the services table's row
    assert "131072" in row and "8000" in row and "620," in row  # ctx, port, KV tokens whole
    mai = next(line for line in lines if " mai-ds-r1 " in line)
    assert " 4-7 " in mai  # a run of GPUs as a range
    assert ("after" in text) == (columns >= views.WIDE)


def test_a_shared_gpu_reads_without_colour() -> None:
    text = cli("plan", str(INVENTORIES / "berget.yml"), columns=120)
    assert not ANSI.search(text)
    gpu0 = next(line for line in tables(text) if line.lstrip().startswith("0 "))
    bar = gpu0.split()[1]
    assert set(bar) == {"A", "B", "C", "·"} and bar.index("A") < bar.index("B") < bar.index("C")
    assert "A=llama-8b" in gpu0 and "B=kb-whisper" in gpu0 and "C=qwen3-32b" in gpu0


def test_colour_marks_services_and_red_only_errors() -> None:
    assert "red" not in " ".join(views.PALETTE)
    text = cli("plan", str(INVENTORIES / "examples" / "berget-as-published.yml"), columns=200,
               color=True)
    assert ANSI.search(text)
    red = re.compile(r"\x1b\[(?:[0-9;]*;)?31(?:;[0-9;]*)?m")
    table_lines = text.split("\n\n")[0].splitlines()
    for line in table_lines:  # red in the tables: only an overcommitted GPU's free memory
        if red.search(line):
            assert ANSI.sub("", line).split()[0].isdigit() and "!" in ANSI.sub("", line), line
    findings = text.split("\n\n", 1)[1]
    assert red.search(findings)  # the errors themselves are red


def test_letters_follow_the_start_order_and_the_legend_names_them() -> None:
    plan = build_plan(inventory.load(INVENTORIES / "berget.yml"))
    host = plan.hosts[0]
    keys = views.service_keys(host)
    assert [keys[s.name].letter for s in host.services] == list("ABCDEFGHIJKL")
    console = Console(width=200, no_color=True, file=open(os.devnull, "w"))
    with console.capture() as cap:
        console.print(views.host_table(host, 200))
    assert "A=llama-8b, B=kb-whisper, C=qwen3-32b" in cap.get()


def test_gpu_list_writes_runs_as_ranges() -> None:
    assert views.gpu_list([0]) == "0"
    assert views.gpu_list([4, 5, 6, 7]) == "4-7"
    assert views.gpu_list([0, 1]) == "0,1"
    assert views.gpu_list([0, 2, 3, 4, 7]) == "0,2-4,7"


@pytest.mark.parametrize("columns", [80, 200])
def test_models_view_keeps_every_id_whole(columns: int) -> None:
    text = cli("models", columns=columns)
    snapshot(f"models-{columns}.txt", text)
    words = {w for line in text.splitlines() for w in line.split()}
    assert set(catalog_ids()) <= words  # each id appears whole, as one word
    assert "…" not in text


def test_snapshots_are_all_used() -> None:
    made = {f"{v}-{c}.txt" for v in ("plan", "models", "status") for c in (80, 200)}
    assert {p.name for p in Path(SNAPSHOTS).iterdir()} == made


@pytest.mark.parametrize("columns", [80, 200])
def test_status_view_from_a_saved_rocm_smi_reading(columns: int) -> None:
    """`status`'s table over the real rocm-smi fixture (offline: no service state is known),
    without colour: nothing ellipsised, every service and its GiB on a line."""
    from gpufleet.commands.status import status_table
    from gpufleet.observe import reading_from_files

    plan = build_plan(inventory.load(INVENTORIES / "berget.yml"))
    smi = REPO / "tests" / "fixtures" / "smi" / "rocm-smi_showmeminfo-vram_json_8xMI300X.json"
    reading = reading_from_files("gpu-01", [str(smi)])
    reading.offline = True
    console = Console(width=columns, no_color=True, record=True, file=open(os.devnull, "w"))
    console.print(status_table(plan.hosts[0], reading))
    text = console.export_text()
    snapshot(f"status-{columns}.txt", text)
    assert max(len(line) for line in text.splitlines()) <= columns
    assert "…" not in text
    assert all(s.name in text for s in plan.hosts[0].services)
