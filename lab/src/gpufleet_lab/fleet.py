"""The lab's own fleet: an inventory for the lab hosts, wired to the lab's mirrors.

`gpufleet lab up` writes it (inventories/lab.yml by default) so the whole flow — plan, render,
deploy, validate, drift — runs against real hosts on one machine. The hosts pull ROCm packages
from the lab's signed apt mirror and "vLLM" (the vllm-test-double wheel, named as such) from its
PyPI index; nothing else differs from a production inventory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from gpufleet_lab.config import Lab

LAB_VLLM_VERSION = "0.19.1"
LOAD_SECONDS = "2"  # the double's model-loading time: short, but a real wait


def settings(lab: Lab) -> dict[str, Any]:
    """Deploy knobs for hosts without a GPU driver or a route to the outside."""
    mirror = lab.mirror_url
    return {
        "gpufleet_rocm_repo_url": f"{mirror}/rocm/apt",
        "gpufleet_amdgpu_repo_url": f"{mirror}/amdgpu",
        "gpufleet_graphics_repo_url": f"{mirror}/graphics",
        "gpufleet_rocm_key_url": f"{mirror}/rocm/rocm.gpg.key",
        "gpufleet_rocm_packages": ["rocm-smi"],  # Debian's rocm-smi, served by the mirror
        "gpufleet_rocm_install_driver": False,  # the hosts share this machine's kernel
        "gpufleet_tuning_iommu_pt": False,
        "gpufleet_tuning_numa_balancing_off": False,
        "gpufleet_pip_index_url": f"{mirror}/simple/",
        "gpufleet_pip_trusted_hosts": [lab.config.bridge_ip],
        # the double's wheel carries a local version, as ROCm wheels do (+rocm700)
        "gpufleet_vllm_requirement": "vllm=={version}+testdouble",
        "gpufleet_vllm_extra_index_urls": [],  # the mirror serves the double, not vLLM's wheels
        "gpufleet_weights_download": False,  # no hub here; the double loads no weights
        "gpufleet_unit_read_write_paths": ["/run/fakegpu"],  # the emulated driver's state
    }


def services() -> list[dict[str, Any]]:
    """Per host: a chat model and an embedder sharing GPU 0 (start order matters), one model on
    GPU 1, and a reranker beside a Whisper model on GPU 2: every vLLM kind a probe can test."""
    env = {"VLLM_TEST_DOUBLE_LOAD_SECONDS": LOAD_SECONDS}
    return [
        {"name": "chat", "kind": "llm", "model": "Qwen/Qwen2.5-0.5B-Instruct", "gpus": [0],
         "port": 8000, "gpu_memory_utilization": 0.1, "max_model_len": 4096,
         "max_num_seqs": 64, "max_num_batched_tokens": 4096, "env": env,
         "secrets": {"VLLM_API_KEY": "api_key"}},
        {"name": "embed", "kind": "embed", "model": "intfloat/multilingual-e5-large",
         "gpus": [0], "port": 8001, "gpu_memory_utilization": 0.02, "max_model_len": 512,
         "max_num_seqs": 32, "max_num_batched_tokens": 2048, "env": env},
        {"name": "tiny", "kind": "llm", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
         "gpus": [1], "port": 8010, "gpu_memory_utilization": 0.15, "max_model_len": 2048,
         "max_num_seqs": 64, "max_num_batched_tokens": 2048, "env": env},
        {"name": "rerank", "kind": "rerank", "model": "BAAI/bge-reranker-v2-m3", "gpus": [2],
         "port": 8020, "gpu_memory_utilization": 0.02, "max_model_len": 1024,
         "max_num_seqs": 32, "max_num_batched_tokens": 4096, "env": env},
        {"name": "asr", "kind": "whisper", "model": "openai/whisper-large-v3", "gpus": [2],
         "port": 8021, "gpu_memory_utilization": 0.04, "max_model_len": 448,
         "max_num_seqs": 16, "max_num_batched_tokens": 4096, "env": env},
    ]


def lab_inventory(lab: Lab, api_key_file: Path) -> dict[str, Any]:
    return {
        "fleet": {
            "name": "lab", "gpu": "mi300x", "rocm_version": "6.4.1",
            "vllm_version": LAB_VLLM_VERSION, "runtime": "venv",
            "ssh_key": str(lab.key), "ssh_known_hosts": str(lab.known_hosts),
            "secrets": {"api_key": {"file": str(api_key_file)}},
            # The tests reach every service from the lab machine, the embedder without a key.
            "bind": "0.0.0.0",
            "settings": settings(lab),
            "rollout": {"batch_size": 1, "health_timeout_s": 60, "max_failed_hosts": 1,
                        "health_check": "request"},
        },
        "hosts": {
            h.name: {"address": h.address, "ssh_user": h.user, "gpu_count": lab.config.fake_gpus
                     or 8, "services": services()}
            for h in lab.hosts
        },
    }


def api_key(lab: Lab) -> Path:
    """A random API key for the lab's services, in a 0600 file beside the lab's SSH key."""
    path = lab.config.run_dir / "api_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24) + "\n")
    return path


def publish_vllm_double(lab: Lab, version: str = LAB_VLLM_VERSION) -> Path:
    """Put the vllm-test-double wheel on the lab's PyPI index."""
    from gpufleet_lab.vllm_double import build_wheel

    lab.wheels_dir.mkdir(parents=True, exist_ok=True)
    return build_wheel(lab.wheels_dir, vllm_version=version)


def write_lab_fleet(lab: Lab, path: Path) -> Path:
    """Publish the double and write the lab's inventory to `path`."""
    publish_vllm_double(lab)
    doc = lab_inventory(lab, api_key(lab))
    header = (
        "# The lab fleet, written by `gpufleet lab up`: real hosts on this machine, emulated\n"
        "# MI300X GPUs, and the vllm-test-double standing in for vLLM. Regenerated each up.\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=100), encoding="utf-8")
    return path
