"""validate.compare: the plan vs what the GPUs report, on synthetic readings of the berget host."""

from __future__ import annotations

import json

import pytest
from support import INVENTORIES, REPO

from gpufleet import inventory
from gpufleet.errors import ExitStatus
from gpufleet.gpu.models import GIB
from gpufleet.gpu.smi import GpuReading, ProcessReading, Snapshot
from gpufleet.plan import build_plan
from gpufleet.probe import Probe, parse_probe_output, probe_request
from gpufleet.validate import (
    IDLE_GPU_BYTES,
    HostReading,
    compare,
    host_rows,
    tolerance,
    unchecked,
    unit_from_cgroup,
    unit_of,
)


@pytest.fixture(scope="module")
def host():
    return build_plan(inventory.load(INVENTORIES / "berget.yml")).hosts[0]


def healthy_reading(host, scale=None, moved=None):
    """A reading where every service holds what the plan says (scaled for `scale` services)."""
    scale, moved = scale or {}, moved or {}
    procs, pid_units, used = [], {}, {g.index: IDLE_GPU_BYTES for g in host.gpus}
    pid = 1000
    for svc in host.services:
        if svc.footprint_bytes == 0:
            continue
        for gpu in svc.gpus:
            gpu = moved.get(svc.name, gpu)
            size = int(svc.footprint_bytes * scale.get(svc.name, 1.0))
            procs.append(ProcessReading(pid, "python3", [gpu], size))
            pid_units[pid] = unit_of(svc.name)
            used[gpu] += size
            pid += 1
    gpus = [GpuReading(g.index, None, None, g.total_bytes, used[g.index]) for g in host.gpus]
    return HostReading(
        host.name,
        Snapshot(gpus, procs, "rocm-smi", "test"),
        pid_units,
        {unit_of(s.name): "active" for s in host.services},
        {s.name: Probe(s.name, True, "ok") for s in host.services},
    )


def errors(findings):
    return sorted((f.code, f.service, f.gpu) for f in findings if f.severity == "error")


def test_matching_reading_passes(host):
    assert errors(compare(host, healthy_reading(host))) == []


def test_service_using_30_percent_more_is_named(host):
    found = errors(compare(host, healthy_reading(host, scale={"kb-whisper": 1.3})))
    assert ("service_memory_over", "kb-whisper", 0) in found


def test_small_deviation_within_tolerance(host):
    svc = host.service("llama-8b")
    extra = tolerance(svc.footprint_bytes) / svc.footprint_bytes * 0.9
    assert errors(compare(host, healthy_reading(host, scale={"llama-8b": 1 + extra}))) == []


def test_process_on_wrong_gpu(host):
    found = errors(compare(host, healthy_reading(host, moved={"gemma-3": 7})))
    assert ("wrong_gpu", "gemma-3", 7) in found


def test_service_stopped_answering(host):
    reading = healthy_reading(host)
    reading.probes["llama-70b"] = Probe("llama-70b", False, "connection refused")
    found = [f for f in compare(host, reading) if f.code == "service_unhealthy"]
    assert [(f.service, f.host) for f in found] == [("llama-70b", "gpu-01")]
    assert "connection refused" in found[0].message


def test_unplanned_and_missing_processes(host):
    reading = healthy_reading(host)
    stray = ProcessReading(99, "python3", [3], 5 * GIB)
    reading.snapshot.processes.append(stray)
    reading.pid_units[99] = "session-4.scope"
    gone = [
        p.pid
        for p in reading.snapshot.processes
        if reading.pid_units[p.pid] == unit_of("mistral-small")
    ]
    reading.snapshot.processes = [p for p in reading.snapshot.processes if p.pid not in gone]
    found = errors(compare(host, reading))
    assert ("unplanned_process", None, 3) in found
    assert ("missing_process", "mistral-small", None) in found


def test_unit_down(host):
    reading = healthy_reading(host)
    reading.unit_states[unit_of("docling")] = "failed"
    assert ("service_down", "docling", None) in errors(compare(host, reading))


def test_unreachable_host(host):
    found = compare(host, HostReading(host.name, error="timed out"))
    assert [(f.code, f.host) for f in found] == [("host_unreachable", "gpu-01")]


def test_unit_from_cgroup():
    assert unit_from_cgroup("0::/system.slice/gpufleet-llama-8b.service\n") == "gpufleet-llama-8b"
    assert unit_from_cgroup("0::/user.slice/session-3.scope") is None


def test_probe_output_parsing(host):
    services = host.services[:2]
    request = json.loads(probe_request(services, True))
    assert request["services"][0]["env_file"] == "/etc/gpufleet/llama-8b.env"
    out = parse_probe_output('{"llama-8b": {"ok": true, "detail": "ok"}}', services)
    assert out["llama-8b"].ok and not out["kb-whisper"].ok


def test_parse_show_reads_several_units():
    from gpufleet.host.systemctl import parse_show

    text = ("Id=gpufleet-chat.service\nActiveState=active\nMainPID=12\n\n"
            "Id=gpufleet-embed.service\nActiveState=failed\nMainPID=0\n")
    assert parse_show(text) == {
        "gpufleet-chat.service": {"Id": "gpufleet-chat.service", "ActiveState": "active",
                                  "MainPID": "12"},
        "gpufleet-embed.service": {"Id": "gpufleet-embed.service", "ActiveState": "failed",
                                   "MainPID": "0"},
    }
    assert parse_show("") == {}


# ---------------------------------------------------------------- what could not be checked

SMI = REPO / "tests" / "fixtures" / "smi"
BERGET = str(INVENTORIES / "berget.yml")


def meminfo(host, used):
    """`rocm-smi --showmeminfo vram --json` text with `used(gpu)` bytes in use (None: no figure)."""
    cards = {}
    for g in host.gpus:
        card = {"VRAM Total Memory (B)": str(g.total_bytes)}
        if used(g) is not None:
            card["VRAM Total Used Memory (B)"] = str(used(g))
        cards[f"card{g.index}"] = card
    return json.dumps(cards)


def offline(cli, tmp_path, text, *extra):
    saved = tmp_path / "smi.json"
    saved.write_text(text)
    return cli("validate", BERGET, "--smi", f"gpu-01={saved}", *extra)


def saved(name):
    return f"gpu-01={SMI / name}"


def test_offline_without_vram_figures_checked_nothing(cli):
    result = cli("validate", BERGET, "--smi", saved("amd-smi_process_json_8xMI300X.json"))
    assert result.exit_status == ExitStatus.FINDINGS
    assert "validation passed" not in result.stdout
    assert "validation checked nothing" in result.stdout
    gap = "unchecked gpu-01/gpu3: the SMI output has no VRAM-used figure for GPU 3"
    assert gap in result.stdout
    assert "rocm-smi --showmeminfo vram --showpids --json" in result.stdout  # what to save


def test_offline_process_list_alone_is_unchecked_not_missing_gpus(cli):
    result = cli("validate", BERGET, "--smi", saved("rocm-smi_showpids_json_8xMI300X.json"),
                 "--json")
    data = json.loads(result.stdout)
    assert result.exit_status == ExitStatus.FINDINGS and data["ok"] is False
    assert not [f for f in data["findings"] if f["code"] == "gpu_missing"]
    assert sorted(u["gpu"] for u in data["unchecked"]) == list(range(8))
    assert all("lists no GPUs" in u["reason"] for u in data["unchecked"])


def test_offline_unknown_measurements_are_null_and_question_marks(cli, host, tmp_path):
    text = meminfo(host, lambda g: None)
    data = json.loads(offline(cli, tmp_path, text, "--json").stdout)
    assert set(data) == {"ok", "hosts", "findings", "unchecked"}
    (entry,) = data["hosts"]
    assert set(entry["gpus"][0]) == {"index", "planned_gib", "measured_gib"}
    assert {g["measured_gib"] for g in entry["gpus"]} == {None}
    assert {s["measured_gib"] for s in entry["services"]} == {None}  # no cgroup map offline
    table = offline(cli, tmp_path, text).stdout
    llama = next(line for line in table.splitlines() if line.strip().startswith("llama-8b"))
    assert llama.split()[-1] == "?" and "0.0" not in llama


def test_offline_idle_gpus_mean_the_planned_services_are_not_running(cli, host, tmp_path):
    result = offline(cli, tmp_path, meminfo(host, lambda g: IDLE_GPU_BYTES), "--json")
    data = json.loads(result.stdout)
    assert result.exit_status == ExitStatus.FINDINGS and data["ok"] is False
    idle = {f["gpu"]: f for f in data["findings"] if f["code"] == "gpu_idle"}
    assert sorted(idle) == list(range(8)) and {f["severity"] for f in idle.values()} == {"error"}
    assert "mai-ds-r1" in idle[6]["message"]


def test_offline_matching_memory_passes_and_says_what_it_checked(cli, host, tmp_path):
    result = offline(cli, tmp_path, meminfo(host, lambda g: g.used_bytes + IDLE_GPU_BYTES))
    assert result.exit_status == ExitStatus.OK, result.stdout
    assert "validation passed (offline: GPU memory only" in result.stdout


def test_offline_one_gpu_without_a_figure_is_incomplete(cli, host, tmp_path):
    text = meminfo(host, lambda g: None if g.index == 3 else g.used_bytes + IDLE_GPU_BYTES)
    result = offline(cli, tmp_path, text, "--json")
    data = json.loads(result.stdout)
    assert result.exit_status == ExitStatus.FINDINGS and data["ok"] is False
    assert data["findings"] == []
    assert [(u["gpu"], u["service"]) for u in data["unchecked"]] == [(3, None)]
    assert "gemma-3" in data["unchecked"][0]["reason"]
    text_out = offline(cli, tmp_path, text).stdout
    assert "validation incomplete: 1 GPU could not be checked" in text_out


def test_offline_bad_input_still_exits_2(cli, tmp_path):
    assert offline(cli, tmp_path, "not smi output\n").exit_status == ExitStatus.BAD_INPUT


def test_a_process_without_its_vram_is_unchecked_not_zero(host):
    reading = healthy_reading(host)
    pid = next(p for p, u in reading.pid_units.items() if u == unit_of("gemma-3"))
    proc = next(p for p in reading.snapshot.processes if p.pid == pid)
    proc.vram_bytes = None
    assert not [f for f in compare(host, reading) if f.service == "gemma-3"]
    assert [(u.service, u.gpu) for u in unchecked(host, reading)] == [("gemma-3", None)]
    row = next(r for r in host_rows(host, reading) if r["service"] == "gemma-3")
    assert row["measured_gib"] is None


def test_an_unplanned_process_of_unknown_size_is_not_zero(host):
    reading = healthy_reading(host)
    reading.snapshot.processes.append(ProcessReading(99, "python3", [3], None))
    (found,) = [f for f in compare(host, reading) if f.code == "unplanned_process"]
    assert "holds ? GiB" in found.message
