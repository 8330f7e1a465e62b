"""validate --load: the pure comparison (loadcheck) on synthetic samples of the berget host, and
the load script's bounds against stub servers on loopback (named test doubles below)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support import INVENTORIES

from gpufleet import inventory
from gpufleet.errors import InputError
from gpufleet.gpu.models import GIB
from gpufleet.gpu.smi import GpuReading, ProcessReading, Snapshot
from gpufleet.loadcheck import (
    LOAD_SCRIPT,
    MAX_LOAD_CONCURRENCY,
    LoadReading,
    LoadSettings,
    Sample,
    ServiceLoad,
    compare_load,
    load_concurrency,
    load_dict,
    load_request,
    load_unchecked,
    loaded_services,
    parse_load_output,
    plan_concurrency,
)
from gpufleet.plan import build_plan
from gpufleet.validate import IDLE_GPU_BYTES, HostReading, tolerance, unit_of

# ---------------------------------------------------------------- the comparison (pure)


@pytest.fixture(scope="module")
def host():
    return build_plan(inventory.load(INVENTORIES / "berget.yml")).hosts[0]


def pids(host) -> dict[int, str]:
    return {1000 + i: unit_of(s.name) for i, s in enumerate(host.services)}


def snapshot(host, grow: dict[str, int] | None = None) -> Snapshot:
    """Every service holding its footprint, plus `grow` bytes for some (on each of its GPUs)."""
    grow = grow or {}
    used = {g.index: IDLE_GPU_BYTES for g in host.gpus}
    procs = []
    for i, svc in enumerate(host.services):
        if not svc.footprint_bytes:
            continue
        size = svc.footprint_bytes + grow.get(svc.name, 0)
        procs.append(ProcessReading(1000 + i, "python3", list(svc.gpus), size * len(svc.gpus)))
        for gpu in svc.gpus:
            used[gpu] += size
    gpus = [GpuReading(g.index, None, None, g.total_bytes, used[g.index]) for g in host.gpus]
    return Snapshot(gpus, procs, "rocm-smi", "test")


def load(host, *samples: Snapshot, errors: dict[str, int] | None = None) -> LoadReading:
    errors = errors or {}
    services = {s.name: ServiceLoad(requests=100, ok=100 - errors.get(s.name, 0),
                                    errors=errors.get(s.name, 0),
                                    first_errors=("HTTP 500: boom",) if s.name in errors else (),
                                    p50_ms=10.0, p95_ms=20.0, p99_ms=30.0)
                for s in host.services if s.service.kind.runs_vllm}
    return LoadReading(host.name, samples=[Sample(i, i, 1, s) for i, s in enumerate(samples)],
                       services=services, smi_tool="rocm-smi")


def codes(findings):
    return sorted((f.severity, f.code, f.gpu, f.service) for f in findings)


def test_a_service_that_holds_its_claim_under_load_passes(host):
    run = load(host, snapshot(host), snapshot(host), snapshot(host))
    assert compare_load(host, run, pids(host)) == []
    assert load_unchecked(host, run, pids(host)) == []


def test_a_leak_past_the_plan_names_host_gpu_and_service(host):
    svc = host.service("kb-whisper")  # 8 GiB on GPU 0, beside two LLMs
    leak = tolerance(svc.footprint_bytes) + GIB
    run = load(host, snapshot(host), snapshot(host, {"kb-whisper": leak // 2}),
               snapshot(host, {"kb-whisper": leak}))
    found = compare_load(host, run, pids(host))
    assert ("error", "load_service_memory_over", 0, "kb-whisper") in codes(found)
    over = next(f for f in found if f.code == "load_service_memory_over")
    assert over.host == host.name and "grew" in over.message and over.hint
    assert all(f.service == "kb-whisper" for f in found)  # the neighbours held


def test_the_gpu_over_its_plan_is_blamed_on_the_service_that_grew(host):
    gpu0 = next(g for g in host.gpus if g.index == 0)
    leak = tolerance(gpu0.used_bytes) + GIB
    run = load(host, snapshot(host), snapshot(host, {"qwen3-32b": leak}))
    assert ("error", "load_gpu_memory_over", 0, "qwen3-32b") in codes(
        compare_load(host, run, pids(host)))


def test_growth_within_the_plan_is_a_warning(host):
    svc = host.service("llama-8b")
    grown = tolerance(svc.footprint_bytes) // 2  # more than the 0.5 GiB floor, within the plan
    run = load(host, snapshot(host), snapshot(host, {"llama-8b": grown}))
    assert codes(compare_load(host, run, pids(host))) == [
        ("warning", "load_memory_grew", 0, "llama-8b")]


def test_failed_requests_are_an_error_with_the_first_message(host):
    run = load(host, snapshot(host), errors={"e5-embed": 3})
    found = compare_load(host, run, pids(host))
    assert codes(found) == [("error", "load_requests_failed", 3, "e5-embed")]
    assert "3 of 100" in found[0].message and "HTTP 500: boom" in found[0].message


def test_no_sample_leaves_the_gpus_unchecked_not_passed(host):
    run = load(host)
    gaps = load_unchecked(host, run, pids(host))
    assert {g.gpu for g in gaps} == {g.index for g in host.gpus}
    assert compare_load(host, run, pids(host)) == []


def test_a_script_without_a_result_is_a_finding(host):
    run = parse_load_output(host.name, "Traceback (most recent call last): ...")
    assert [f.code for f in compare_load(host, run, {})] == ["load_failed"]


def test_the_concurrency_is_what_the_plan_says_fits_and_never_more(host):
    llama = host.service("llama-8b")  # KV cache for 4.74 requests of max_model_len
    assert plan_concurrency(llama) == 4
    assert load_concurrency(llama, 100) == 4 and load_concurrency(llama, 2) == 2
    e5 = host.service("e5-embed")  # no KV cache: the scheduler's max_num_seqs, capped
    assert plan_concurrency(e5) == min(64, MAX_LOAD_CONCURRENCY)


def test_settings_are_bounded(host):
    assert LoadSettings.of(None, None).duration_s == 30
    for duration, concurrency in ((0, None), (601, None), (float("nan"), None), (10, 0)):
        with pytest.raises(InputError):
            LoadSettings.of(duration, concurrency)


def test_the_request_names_no_secret_and_only_this_host(host):
    reading = HostReading(host.name, unit_states={unit_of(s.name): "active"
                                                  for s in host.services})
    services, skipped = loaded_services(host, reading)
    assert "docling" in skipped and all(s.service.kind.runs_vllm for s in services)
    job = json.loads(load_request(host, services, LoadSettings(duration_s=5)))
    assert all(s["url"].startswith("http://127.0.0.1:") for s in job["services"])
    assert all(s["env_file"].startswith("/etc/gpufleet/") for s in job["services"])
    assert "VLLM_API_KEY" not in json.dumps(job)
    llm = next(s for s in job["services"] if s["name"] == "llama-8b")
    assert llm["max_tokens"] <= llm["max_model_len"] and llm["concurrency"] == 4


def test_the_json_rows_say_rest_peak_and_plan(host):
    svc = host.service("llama-8b")
    run = load(host, snapshot(host), snapshot(host, {"llama-8b": GIB}))
    row = load_dict(host, run, pids(host))
    llama = next(s for s in row["services"] if s["service"] == "llama-8b")
    assert llama["peak_gib"] == pytest.approx(llama["rest_gib"] + 1, abs=0.01)
    assert llama["planned_gib"] == round(svc.footprint_bytes / GIB, 2)
    docling = next(s for s in row["services"] if s["service"] == "docling")
    assert docling["requests"] is None


def test_the_table_shows_services_and_gpus(host):
    from rich.console import Console

    from gpufleet.commands.validate import load_table

    run = load(host, snapshot(host))
    run.skipped = {"docling": "kind docling is not a vLLM server"}
    console = Console(width=200, record=True)
    console.print(load_table(load_dict(host, run, pids(host)), LoadSettings(duration_s=5)))
    text = console.export_text()
    assert f"{host.name} under load (5 s" in text and "llama-8b" in text and "gpu0" in text
    assert "skipped: kind docling" in text


# ---------------------------------------------------------------- the script's bounds


class StubVllm(BaseHTTPRequestHandler):
    """A named test double for a vLLM server: answers at once, hangs, or drips its answer,
    as `mode` says; records the Authorization headers it saw."""

    mode = "ok"
    seen: list[str] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        StubVllm.seen.append(self.headers.get("Authorization") or "")
        if self.mode == "hang":
            time.sleep(60)
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        for _ in range(1000 if self.mode == "drip" else 1):  # drip: a byte per 0.2 s
            self.wfile.write(b"x" if self.mode == "drip" else b"x" * 1000)
            self.wfile.flush()
            if self.mode == "drip":
                time.sleep(0.2)


class StubServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the script hangs up on a hung or dripping answer: expected here


@pytest.fixture
def stub() -> Iterator[ThreadingHTTPServer]:
    server = StubServer(("127.0.0.1", 0), StubVllm)
    server.daemon_threads = True
    StubVllm.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def run_script(tmp_path: Path, port: int, *, duration: float = 1.0, grace: float = 1.0,
               max_requests: int = 1000, smi: str = "echo no-smi", url: str | None = None):
    env_file = tmp_path / "svc.env"
    env_file.write_text('VLLM_API_KEY="s3cret-key"\n')
    job = {"duration_s": duration, "grace_s": grace, "max_requests": max_requests,
           "sample_interval_s": 0.2, "smi": [{"tool": "sh", "commands": [smi]}],
           "services": [{"name": "svc", "kind": "llm", "url": url or f"http://127.0.0.1:{port}",
                         "model": "m", "env_file": str(env_file), "max_model_len": 256,
                         "max_tokens": 16, "concurrency": 4}]}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT], input=json.dumps(job),
                          capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    assert "s3cret-key" not in done.stdout + done.stderr
    return json.loads(done.stdout), took


@pytest.mark.parametrize("mode", ["hang", "drip"])
def test_the_deadline_holds_when_the_server_never_finishes(stub, tmp_path, mode):
    StubVllm.mode = mode
    out, took = run_script(tmp_path, stub.server_address[1], duration=1.0, grace=1.0)
    assert took < 1.0 + 1.0 + 2.0  # duration + grace, plus python's start
    svc = out["services"]["svc"]
    assert svc["ok"] == 0 and svc["unfinished"] == 4 and svc["errors"] == 4
    assert "still running at the deadline" in svc["first_errors"][-1]


def test_the_count_bound_holds_and_the_key_comes_from_the_env_file(stub, tmp_path):
    StubVllm.mode = "ok"
    out, took = run_script(tmp_path, stub.server_address[1], duration=20.0, max_requests=7)
    svc = out["services"]["svc"]
    assert svc["requests"] == svc["ok"] == 7 and svc["errors"] == 0 and took < 10
    assert svc["p50_ms"] is not None and svc["p99_ms"] >= svc["p50_ms"]
    assert set(StubVllm.seen) == {"Bearer s3cret-key"}


def test_a_hanging_smi_tool_cannot_stretch_the_bound(stub, tmp_path):
    StubVllm.mode = "ok"
    out, took = run_script(tmp_path, stub.server_address[1], duration=1.0, grace=1.0,
                           smi="sleep 30")
    assert took < 1.0 + 1.0 + 2.0
    assert out["services"]["svc"]["ok"] > 0


def test_another_hosts_address_is_refused(tmp_path):
    out, _ = run_script(tmp_path, 80, url="http://192.0.2.1:80")  # TEST-NET-1: not this host
    assert "not an address of this host" in out["services"]["svc"]["refused"]


def test_samples_are_kept_once_with_a_count(stub, tmp_path):
    StubVllm.mode = "ok"
    out, _ = run_script(tmp_path, stub.server_address[1], duration=1.0)
    assert len(out["samples"]) == 1 and out["samples"][0]["count"] >= 3
    assert out["samples"][0]["outputs"] == ["no-smi\n"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_is_an_error_not_a_hang(tmp_path):
    out, took = run_script(tmp_path, _free_port(), duration=0.5)
    svc = out["services"]["svc"]
    assert svc["errors"] == svc["requests"] > 0 and "Connection refused" in svc["first_errors"][0]
    assert took < 4
