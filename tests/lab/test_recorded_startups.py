"""The double's memory numbers are recorded real startups, and nothing else (issue 13).

Every number the vllm-test-double uses for a model is read here, independently of the lab's
generator, from the quote the fixture names (a verbatim vLLM log line with its URL, or a cited
checkpoint fact) and compared with startups.json and with what the double's Profile holds. The
double then starts every lab-fleet service at the fleet's flags, in memory and as the real wheel.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet_lab import fakegpu
from gpufleet_lab.fleet import services as lab_services
from gpufleet_lab.vllm_double import build_wheel, recorded
from gpufleet_lab.vllm_double.vllm import _startup

GIB = 1 << 30
MIB = 1 << 20
HERE = Path(recorded.__file__).resolve().parent
FIXTURE = HERE / "vllm" / "recorded_startups.yaml"
STARTUPS = HERE / "vllm" / "startups.json"
LAB_MODELS = {
    "Qwen/Qwen2.5-0.5B-Instruct", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "facebook/opt-125m",
    "intfloat/multilingual-e5-large", "BAAI/bge-reranker-v2-m3", "openai/whisper-large-v3",
}
MI300X = fakegpu.KINDS["mi300x"]
# structure from config.json: unchanged by issue 13 (startups.json before it)
CONFIG = {
    "Qwen/Qwen2.5-0.5B-Instruct": ("Qwen2ForCausalLM", "generate", 896, 14, 24, 12288, 32768),
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": ("LlamaForCausalLM", "generate", 2048, 32, 22, 22528,
                                           2048),
    "facebook/opt-125m": ("OPTForCausalLM", "generate", 768, 12, 12, 36864, 2048),
    "intfloat/multilingual-e5-large": ("XLMRobertaModel", "embed", 1024, 16, 24, 0, 512),
    "BAAI/bge-reranker-v2-m3": ("XLMRobertaForSequenceClassification", "classify", 1024, 16, 24,
                                0, 8192),
    "openai/whisper-large-v3": ("WhisperForConditionalGeneration", "transcription", 1280, 20, 32,
                                163840, 448),
}
CONFIG_KEYS = ("architecture", "task", "hidden_size", "num_attention_heads", "num_layers",
               "kv_bytes_per_token", "max_position_embeddings")


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    return dict(yaml.safe_load(FIXTURE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def startups() -> dict[str, Any]:
    return dict(json.loads(STARTUPS.read_text(encoding="utf-8")))


def _sources(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for model in doc["models"].values():
        for entry in (model.get("runs") or []) + (model.get("facts") or []):
            out[entry["id"]] = entry
    return out


def _lines(source: dict[str, Any]) -> list[str]:
    return list(source.get("lines") or source.get("text") or [])


def _figure(pattern: str, quote: str) -> tuple[str, ...]:
    match = re.search(pattern, quote)
    assert match, f"the quote {quote!r} has no figure like {pattern!r}"
    return match.groups()


def _expected(spec: dict[str, Any], sources: dict[str, dict[str, Any]]) -> int:
    """What the quote says, in bytes: read here, not with the lab's generator."""
    rule = spec["rule"]
    if rule == "none":
        assert spec.get("note"), "a number no record gives must say why"
        return 0
    source = sources[spec["source"]]
    quote = spec["quote"]
    assert any(quote in line for line in _lines(source)), \
        f"{spec['source']}: {quote!r} is not in any of its quoted lines"
    if rule == "gib":  # "Model loading took X GiB", "... X GB" (GiB in vLLM's wording too)
        (number,) = _figure(r"([0-9.]+) ?G(?:i)?B", quote)
        return round(float(number) * GIB)
    if rule == "gib_per_batched_token":
        (number,) = _figure(r"([0-9.]+) ?GiB", quote)
        return round(float(number) * GIB / source["flags"]["max_num_batched_tokens"])
    if rule == "used_minus_budget_mib":
        used, total = _figure(r"([0-9]+)MiB +/ +([0-9]+)MiB", quote)
        util = source["flags"]["gpu_memory_utilization"]
        return round((int(used) - util * int(total)) * MIB)
    if rule == "params_x2":
        number, unit = _figure(r"([0-9.]+) ?(M|B|million|billion)\b", quote)
        return round(float(number) * {"M": 1e6, "million": 1e6, "B": 1e9, "billion": 1e9}[unit]
                     * 2)
    if rule == "decimal_gb":
        (number,) = _figure(r"([0-9.]+) ?GB", quote)
        return round(float(number) * 1e9)
    raise AssertionError(f"unknown rule {rule!r}")


# ---------------------------------------------------------------- the record


def test_the_fixture_covers_exactly_the_models_the_double_knows(fixture, startups) -> None:
    assert set(fixture["models"]) == LAB_MODELS
    assert {k for k in startups if not k.startswith("_")} == LAB_MODELS


def test_startups_json_is_generated_from_the_fixture(startups) -> None:
    assert startups == recorded.startups(recorded.load(FIXTURE))
    assert recorded.main(["--check"]) == 0
    assert "GENERATED from recorded_startups.yaml" in " ".join(startups["_about"])


def test_every_run_and_fact_names_where_it_was_published(fixture) -> None:
    for name, model in fixture["models"].items():
        entries = (model.get("runs") or []) + (model.get("facts") or [])
        assert entries, f"{name}: no record at all"
        for entry in entries:
            assert re.match(r"https://[^\s]+$", entry["url"]), (name, entry["id"])
            assert _lines(entry), (name, entry["id"])
        for run in model.get("runs") or []:
            assert set(run["flags"]) >= {"gpu_memory_utilization", "max_model_len",
                                         "max_num_seqs", "max_num_batched_tokens", "dtype"}
            assert "vllm_version" in run and run.get("gpu")
        if not model.get("runs"):  # no real log: the fixture says so, and weights are a fact
            assert "No" in model["notes"] and "log" in model["notes"]
            facts = {f["id"] for f in model["facts"]}
            assert model["numbers"]["weights_bytes"]["source"] in facts


def test_a_flag_vllm_chose_itself_is_marked_derived_with_its_reason(fixture) -> None:
    sources = _sources(fixture)
    specs = [s for m in fixture["models"].values() for s in m["numbers"].values()]
    for spec in specs + list(fixture["defaults"].values()):
        if spec["rule"] != "gib_per_batched_token":
            continue
        run = sources[spec["source"]]
        tokens = run["flags"]["max_num_batched_tokens"]
        printed = any(f"max_num_batched_tokens={tokens}" in line for line in run["lines"])
        assert printed or run.get("derived_flags", {}).get("max_num_batched_tokens"), run["id"]


@pytest.mark.parametrize("model", sorted(LAB_MODELS))
def test_every_number_the_double_uses_is_what_its_quote_says(
        model: str, fixture, startups) -> None:
    sources = _sources(fixture)
    profile = _startup.profile(model, environ={})
    assert profile is not None
    numbers = fixture["models"][model]["numbers"]
    assert set(numbers) == {"weights_bytes", "activation_bytes_per_token"}
    for key, spec in numbers.items():
        want = _expected(spec, sources)
        assert startups[model][key] == want, (model, key)
        assert getattr(profile, key) == want, (model, key)
    for key, spec in fixture["defaults"].items():
        want = _expected(spec, sources)
        assert startups["_defaults"][key] == want, key
        assert getattr(profile, key) == want, (model, key)


def test_the_recorded_figures_are_the_ones_quoted(startups) -> None:
    """Spot checks against the logs, in the logs' own units."""
    assert startups["facebook/opt-125m"]["weights_bytes"] == round(0.2389 * GIB)
    assert startups["TinyLlama/TinyLlama-1.1B-Chat-v1.0"]["weights_bytes"] == round(2.0513 * GIB)
    assert startups["_defaults"]["non_torch_bytes"] == round(0.53 * GIB)
    assert startups["_defaults"]["graph_bytes"] == round(0.13 * GIB)
    assert startups["facebook/opt-125m"]["activation_bytes_per_token"] == round(0.49 * GIB / 2048)
    assert startups["_defaults"]["baseline_bytes"] == round((3578 - 0.4 * 8188) * MIB)


@pytest.mark.parametrize("model", sorted(CONFIG))
def test_structure_stays_as_config_json_gives_it(model: str, startups) -> None:
    assert tuple(startups[model][k] for k in CONFIG_KEYS) == CONFIG[model]


def test_the_generator_never_imports_gpufleet() -> None:
    text = Path(recorded.__file__).read_text(encoding="utf-8")
    assert not re.search(r"^\s*(from|import)\s+gpufleet(\.|\s|$)", text, re.M)


def test_a_test_s_numbers_still_override_the_recorded_ones() -> None:
    env = {_startup.MEMORY_ENV: json.dumps({"weights_bytes": 7, "non_torch_bytes": 5})}
    profile = _startup.profile("openai/whisper-large-v3", environ=env)
    assert profile is not None and (profile.weights_bytes, profile.non_torch_bytes) == (7, 5)
    with pytest.raises(_startup.MemoryError_, match="unknown keys"):
        _startup.profile("openai/whisper-large-v3", environ={_startup.MEMORY_ENV: '{"x": 1}'})


# ---------------------------------------------------------------- the lab fleet, in memory


def test_every_lab_service_starts_at_the_fleet_s_flags_and_its_gpus_hold_them() -> None:
    held: dict[int, int] = defaultdict(int)
    for svc in lab_services():  # in start order: a later one sees what earlier ones hold
        profile = _startup.profile(svc["model"], environ={})
        assert profile is not None, svc["name"]
        (gpu,) = svc["gpus"]
        free = MI300X.total_bytes - MI300X.idle_bytes - held[gpu] - profile.baseline_bytes
        assert _startup.free_memory_problem(
            MI300X.total_bytes, free, svc["gpu_memory_utilization"]) is None, svc["name"]
        done = _startup.start(
            profile, total=MI300X.total_bytes, utilization=svc["gpu_memory_utilization"],
            max_model_len=svc["max_model_len"], batched_tokens=svc["max_num_batched_tokens"])
        if profile.has_kv_cache:
            assert done.kv_tokens >= svc["max_model_len"], svc["name"]
        held[gpu] += done.held_bytes
    assert all(MI300X.idle_bytes + used < MI300X.total_bytes for used in held.values())


# ---------------------------------------------------------------- the lab fleet, as the wheel


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(port: int, proc: subprocess.Popen[str], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.05)
    return False


def test_the_wheel_serves_the_whole_lab_fleet_on_emulated_mi300x(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "wheel")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path / "site")
    gpus = tmp_path / "fakegpu"
    fakegpu.build_tree(gpus, 3, "mi300x")
    started: list[subprocess.Popen[str]] = []
    try:
        for svc in lab_services():  # one after the other, as gpufleet starts them
            port = _free_port()
            env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"),
                   "GPUFLEET_FAKEGPU_ROOT": str(gpus), "VLLM_TEST_DOUBLE_LOAD_SECONDS": "0.1",
                   "HIP_VISIBLE_DEVICES": ",".join(map(str, svc["gpus"]))}
            env.pop("VLLM_TEST_DOUBLE_MEMORY", None)
            cmd = [sys.executable, "-m", "vllm", "serve", svc["model"], "--host", "127.0.0.1",
                   "--port", str(port),
                   "--gpu-memory-utilization", str(svc["gpu_memory_utilization"]),
                   "--max-model-len", str(svc["max_model_len"]),
                   "--max-num-seqs", str(svc["max_num_seqs"]),
                   "--max-num-batched-tokens", str(svc["max_num_batched_tokens"])]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            started.append(proc)
            if not _healthy(port, proc):
                proc.kill()
                raise AssertionError(f"{svc['name']} did not start: {proc.communicate()[1]}")
        states = fakegpu.gpus(gpus)
        assert all(states[i].used_bytes > MI300X.idle_bytes for i in (0, 1, 2))
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
