"""The GPU vendor seam: AMD's rules reach the units, another vendor is refused where it is set."""

from __future__ import annotations

import pytest
from support import run_cli

from gpufleet import inventory
from gpufleet.errors import InputError
from gpufleet.gpu import ACCELERATORS, accelerator
from gpufleet.gpu.amd import AMD
from gpufleet.plan import build_plan
from gpufleet.render import render_host

FLEET = """\
fleet:
  name: seam
  gpu: {fleet_gpu}
  runtime: {runtime}
  image: rocm/vllm:rocm6.4.1_vllm_0.11.0
hosts:
  h1:
    address: h1.seam.example
    gpu_count: 2
{host_gpu}    services:
      - name: chat
        kind: llm
        model: Qwen/Qwen2.5-0.5B-Instruct
        gpus: [1]
        port: 8000
        gpu_memory_utilization: 0.5
        max_model_len: 4096
"""


def units(fleet_gpu: str = "mi300x", runtime: str = "venv", host_gpu: str = "") -> str:
    text = FLEET.format(fleet_gpu=fleet_gpu, runtime=runtime,
                        host_gpu=f"    gpu: {host_gpu}\n" if host_gpu else "")
    plan = build_plan(inventory.loads(text, "seam.yml"))
    return next(f.content for f in render_host(plan, "h1") if f.path.endswith("chat.service"))


def test_amd_pins_with_hip_and_owns_every_device_variable() -> None:
    assert accelerator("mi300x") is AMD and accelerator("MI325X") is AMD
    assert AMD.visible_devices_env == "HIP_VISIBLE_DEVICES"
    assert set(AMD.device_env) == {"HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                                   "CUDA_VISIBLE_DEVICES"}
    assert "HIP_VISIBLE_DEVICES=1" in units()
    container = units(runtime="container")
    for arg in ("--device=/dev/kfd", "--device=/dev/dri", "--group-add=video",
                "HIP_VISIBLE_DEVICES=1"):
        assert arg in container


def test_a_vendor_without_an_accelerator_plans_but_does_not_render() -> None:
    assert "nvidia" not in ACCELERATORS
    with pytest.raises(InputError) as err:
        accelerator("h100", where="fleet.yml:3:8")
    assert "plans for it" in str(err.value) and "gpufleet/gpu/nvidia.py" in str(err.value)
    with pytest.raises(InputError) as err:
        units(host_gpu="h100")  # one host's own GPU decides, not the fleet's
    assert err.value.where and "seam.yml" in err.value.where
    assert run_cli("estimate", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "h100",
                   "--max-model-len", "4096").exit_status == 0


def test_the_service_users_groups_default_to_what_the_devices_need() -> None:
    from gpufleet.settings import defaults

    assert tuple(defaults()["gpufleet_gpu_groups"]) == AMD.unit_groups


def test_the_survey_lists_gpus_by_the_amd_pci_vendor() -> None:
    script = AMD.survey_gpus_script()
    assert "/sys/class/drm/card" in script and "0x1002" in script and "rocm-smi" not in script
