"""The vllm-test-double wheel, run as a real process on a fake GPU tree, over loopback HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpufleet_lab import fakegpu
from gpufleet_lab.vllm_double import build_wheel

GIB = 1 << 30
SMALL = "Qwen/Qwen2.5-0.5B-Instruct"
IDLE = fakegpu.KINDS["mi300x"].idle_bytes


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from this checkout and unpacked: what a lab host would install."""
    out = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(out)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(out / "site")
    return out / "site"


@pytest.fixture
def gpus(tmp_path: Path) -> Path:
    base = tmp_path / "fakegpu"
    fakegpu.build_tree(base, 2, "mi300x")
    return base


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Double:
    proc: subprocess.Popen[str]
    port: int

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        return _http(f"http://127.0.0.1:{self.port}{path}", None, headers or {})

    def post(self, path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
        status, text = _http(f"http://127.0.0.1:{self.port}{path}", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
        return status, json.loads(text)

    def wait_ready(self, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if self.get("/health")[0] in (200, 500):
                    return True
            except OSError:  # not listening yet, as vLLM during load
                time.sleep(0.05)
        return False

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err


def _http(url: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def start(site: Path, gpus: Path) -> Iterator:  # type: ignore[type-arg]
    started: list[Double] = []

    def run(*flags: str, model: str = SMALL, **env: str) -> Double:
        port = _free_port()
        environ = {**os.environ, "PYTHONPATH": str(site), "GPUFLEET_FAKEGPU_ROOT": str(gpus),
                   "VLLM_TEST_DOUBLE_LOAD_SECONDS": "0.2", **env}
        cmd = [sys.executable, "-m", "vllm", "serve", model, "--host", "127.0.0.1",
               "--port", str(port), *flags]
        proc = subprocess.Popen(cmd, env=environ, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        started.append(Double(proc, port))
        return started[-1]

    yield run
    for double in started:
        if double.proc.poll() is None:
            double.proc.kill()
        double.proc.communicate()


def _used(gpus: Path, index: int = 0) -> int:
    return fakegpu.gpus(gpus)[index].used_bytes


def test_unknown_flag_is_rejected_like_argparse_with_exit_2(start) -> None:  # type: ignore[no-untyped-def]
    code, err = start("--foo").finish()
    assert code == 2
    assert "vllm serve: error: unrecognized arguments: --foo" in err


def test_utilization_above_one_fails_pydantic_validation(start) -> None:  # type: ignore[no-untyped-def]
    code, err = start("--gpu-memory-utilization", "1.5").finish()
    assert code == 1
    assert "1 validation error for CacheConfig" in err
    assert "Input should be less than or equal to 1 [type=less_than_equal" in err


def test_fitting_model_serves_models_and_completions(start, gpus: Path) -> None:  # type: ignore[no-untyped-def]
    double = start("--gpu-memory-utilization", "0.3", "--max-model-len", "4096",
                   "--served-model-name", "small", VLLM_TEST_DOUBLE_LOAD_SECONDS="1")
    time.sleep(0.3)
    with pytest.raises(OSError):  # loading: the port is bound but not listening
        double.get("/health")
    assert double.wait_ready()
    assert double.get("/health")[0] == 200
    models = json.loads(double.get("/v1/models")[1])
    assert models["data"][0]["id"] == "small" and models["data"][0]["max_model_len"] == 4096
    request = {"model": "small", "prompt": "hi", "max_tokens": 3}
    status, body = double.post("/v1/completions", request)
    assert status == 200 and len(body["choices"][0]["text"].split()) == 3  # type: ignore[index]
    status, body = double.post("/v1/chat/completions",
                               {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert status == 200 and body["object"] == "chat.completion"
    assert double.post("/v1/embeddings", {"input": "x"})[0] == 400  # a generate model
    assert double.get("/nope")[0] == 404
    assert "vllm:gpu_cache_usage_perc" in double.get("/metrics")[1]
    assert _used(gpus) > IDLE + int(0.3 * 206141652992)  # budget + baseline


def test_second_instance_on_a_full_gpu_fails_with_vllms_free_memory_error(start) -> None:  # type: ignore[no-untyped-def]
    first = start("--gpu-memory-utilization", "0.5", "--max-model-len", "4096")
    assert first.wait_ready()
    code, err = start("--gpu-memory-utilization", "0.6", "--max-model-len", "4096").finish()
    assert code == 1
    assert "ValueError: Free memory on device cuda:0 (" in err
    assert "is less than desired GPU memory utilization (0.6, 115.19 GiB)" in err
    assert first.get("/health")[0] == 200


def test_two_instances_started_together_on_one_gpu_one_fails(start) -> None:  # type: ignore[no-untyped-def]
    # Both pass the free-memory check; the KV cache one allocates during the other's profiling
    # window is charged to the other (vllm#55827), which then has no room for KV. Budgets that
    # also overflow when started apart keep the outcome independent of scheduling delays.
    flags = ("--gpu-memory-utilization", "0.55", "--max-model-len", "4096")
    pair = [start(*flags, VLLM_TEST_DOUBLE_LOAD_SECONDS="1") for _ in range(2)]
    for double in pair:
        double.wait_ready()
    failed = [d for d in pair if d.proc.poll() is not None]
    assert len(failed) == 1
    code, err = failed[0].finish()
    assert code == 1
    assert "No available memory for the cache blocks" in err or "Free memory on device" in err


def test_deviation_env_raises_the_claimed_bytes(start, gpus: Path) -> None:  # type: ignore[no-untyped-def]
    flags = ("--gpu-memory-utilization", "0.2", "--max-model-len", "4096")
    plain = start(*flags)
    assert plain.wait_ready()
    exact = _used(gpus) - IDLE
    plain.proc.terminate()
    plain.finish()
    more = start(*flags, VLLM_TEST_DOUBLE_VRAM_DEVIATION="0.3")
    assert more.wait_ready()
    assert _used(gpus) - IDLE == int(exact * 1.3)


def test_sigterm_exits_cleanly_and_frees_the_memory_within_a_second(start, gpus: Path) -> None:  # type: ignore[no-untyped-def]
    double = start("--gpu-memory-utilization", "0.2", "--max-model-len", "4096")
    assert double.wait_ready() and _used(gpus) > IDLE
    t0 = time.monotonic()
    double.proc.send_signal(signal.SIGTERM)
    code, _ = double.finish()
    assert code == 0 and time.monotonic() - t0 < 2.0  # ~1 s, with slack for busy CI
    assert _used(gpus) == IDLE


def test_api_key_from_env_guards_v1_only(start) -> None:  # type: ignore[no-untyped-def]
    double = start("--gpu-memory-utilization", "0.1", "--max-model-len", "2048",
                   VLLM_API_KEY="s3cret")
    assert double.wait_ready()
    assert double.get("/v1/models")[0] == 401
    assert double.get("/v1/models", {"Authorization": "Bearer s3cret"})[0] == 200
    assert double.get("/health")[0] == 200


def test_hip_visible_devices_picks_the_card_and_limits_tp(start, gpus: Path) -> None:  # type: ignore[no-untyped-def]
    double = start("--gpu-memory-utilization", "0.1", "--max-model-len", "2048",
                   HIP_VISIBLE_DEVICES="1")
    assert double.wait_ready()
    assert _used(gpus, 0) == IDLE and _used(gpus, 1) > IDLE
    code, err = start("-tp", "2", HIP_VISIBLE_DEVICES="0").finish()
    assert code == 1 and "World size (2) is larger than the number of available GPUs (1)" in err


def test_fault_injection_health_and_crash(start, gpus: Path) -> None:  # type: ignore[no-untyped-def]
    sick = start("--gpu-memory-utilization", "0.1", "--max-model-len", "2048",
                 VLLM_TEST_DOUBLE_FAIL="health")
    assert sick.wait_ready() and sick.get("/health")[0] == 500
    sick.proc.terminate()
    sick.finish()
    code, err = start("--max-model-len", "2048", VLLM_TEST_DOUBLE_FAIL="crash").finish()
    assert code == 1 and "injected crash" in err and _used(gpus) == IDLE


def test_too_long_max_model_len_fails_like_vllm(start) -> None:  # type: ignore[no-untyped-def]
    code, err = start("--max-model-len", "100000").finish()
    assert code == 1 and "User-specified max_model_len (100000) is greater than" in err


@pytest.mark.parametrize(
    ("model", "path", "body"),
    [
        ("intfloat/multilingual-e5-large", "/v1/embeddings", {"input": ["a", "b"]}),
        ("BAAI/bge-reranker-v2-m3", "/rerank", {"query": "a b", "documents": ["a", "c"]}),
    ],
)
def test_pooling_models_serve_their_endpoints_only(start, model, path, body) -> None:  # type: ignore[no-untyped-def]
    double = start("--gpu-memory-utilization", "0.1", model=model)
    assert double.wait_ready()
    assert double.post(path, body)[0] == 200
    assert double.post("/v1/completions", {"prompt": "x"})[0] == 400


def test_whisper_accepts_a_multipart_transcription(start) -> None:  # type: ignore[no-untyped-def]
    double = start("--gpu-memory-utilization", "0.1", model="openai/whisper-large-v3")
    assert double.wait_ready()
    boundary = "XyZ"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nw\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\""
            f"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n--{boundary}--\r\n").encode()
    status, text = _http(f"http://127.0.0.1:{double.port}/v1/audio/transcriptions", form,
                         {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and "text" in json.loads(text)


def test_wheel_is_named_vllm_holds_no_planner_and_says_what_it_is(site: Path) -> None:
    wheel = next(site.parent.glob("vllm-*.whl"))
    assert wheel.name == "vllm-0.11.0+testdouble-py3-none-any.whl"
    assert not (site / "vllm/_planner").exists()
    sources = {p: p.read_text() for p in (site / "vllm").rglob("*.py")}
    planner = re.compile(r"^\s*(from|import)\s+gpufleet(\.|\s|$)", re.M)  # not gpufleet_lab
    assert sources and not [p for p, text in sources.items() if planner.search(text)]
    assert "Qwen/Qwen2.5-0.5B-Instruct" in json.loads((site / "vllm/startups.json").read_text())
    entry = next(site.glob("vllm-*.dist-info")) / "entry_points.txt"
    assert "vllm = vllm.entrypoints.cli.main:main" in entry.read_text()
    out = subprocess.run([sys.executable, "-m", "vllm", "--version"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(site)}, check=True)
    assert out.stdout.strip() == "0.11.0 (vllm-test-double)"


# ---------------------------------------------------------------- memory a test sets


def test_weights_larger_than_the_budget_leave_no_kv_cache(start, gpus: Path) -> None:  # type: ignore[no-untyped-def]
    memory = json.dumps({"weights_bytes": 30 * GIB})  # a checkpoint 30x what the plan thinks
    code, err = start("--gpu-memory-utilization", "0.1", "--max-model-len", "4096",
                      VLLM_TEST_DOUBLE_MEMORY=memory).finish()
    assert code == 1
    assert "ValueError: No available memory for the cache blocks" in err
    assert "EngineCore failed to start" in err and _used(gpus) == IDLE


def test_a_kv_cache_too_small_for_max_model_len_fails_with_vllms_numbers(start) -> None:  # type: ignore[no-untyped-def]
    # 0.1 x 192 GiB = 19.2 GiB, 18.9 GiB of it weights: ~0.1 GiB of KV at 1 MiB per token; the
    # recorded activation and non-torch memory are zeroed so the test sets every number it relies on
    memory = json.dumps({"weights_bytes": int(18.9 * GIB), "kv_bytes_per_token": 1 << 20,
                         "activation_bytes_per_token": 0, "non_torch_bytes": 0})
    code, err = start("--gpu-memory-utilization", "0.1", "--max-model-len", "4096",
                      "--max-num-batched-tokens", "1024", VLLM_TEST_DOUBLE_MEMORY=memory).finish()
    assert code == 1
    assert "To serve at least one request with the models's max seq len (4096), (4.00 GiB KV " \
           "cache is needed" in err
    assert "the estimated maximum model length is" in err


def test_an_encoder_only_model_holds_its_weights_not_the_budget(start, gpus: Path) -> None:  # type: ignore[no-untyped-def]
    double = start("--gpu-memory-utilization", "0.3", model="intfloat/multilingual-e5-large")
    assert double.wait_ready()
    held = _used(gpus) - IDLE
    assert 1 * GIB < held < 3 * GIB  # weights + activation + context, no KV cache
    assert held < 0.3 * 206141652992


@pytest.mark.parametrize("memory", ["{not json", "[1]", '{"weight_bytes": 1}'])
def test_a_test_s_memory_numbers_must_be_well_formed(start, memory: str) -> None:  # type: ignore[no-untyped-def]
    code, err = start("--gpu-memory-utilization", "0.1", VLLM_TEST_DOUBLE_MEMORY=memory).finish()
    assert code == 1 and "VLLM_TEST_DOUBLE_MEMORY" in err and "Traceback" not in err


def test_the_double_knows_only_the_models_it_has_numbers_for(start) -> None:  # type: ignore[no-untyped-def]
    code, err = start("--gpu-memory-utilization", "0.1", model="org/unknown-model").finish()
    assert code == 1 and "is not a valid model identifier" in err
