"""AMD Instinct GPUs (ROCm): the first accelerator (see gpufleet.gpu).

HIP_VISIBLE_DEVICES pins a unit's GPUs (ROCR_VISIBLE_DEVICES filters first and CUDA's name is
honoured too, so the plan owns all three); a container reaches the GPUs through /dev/kfd and
/dev/dri with the video group, as AMD documents for vLLM on ROCm; the amdgpu driver lists the
cards under /sys/class/drm with PCI vendor 0x1002; memory and processes come from amd-smi when
the host has it (ROCm >= 6), else rocm-smi, whose exit code is never trusted (it exits 0
without a driver: the parser recognises that text).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpufleet.gpu.smi import SmiParseError, Snapshot, merge, parse

PCI_VENDOR = "0x1002"
# amd-smi first (ROCm >= 6), then rocm-smi; both as JSON where the version supports it.
SMI_COMMANDS = {
    "amd-smi": ["amd-smi metric --mem-usage --json", "amd-smi process --json"],
    "rocm-smi": [
        "rocm-smi --showmeminfo vram --json",
        "rocm-smi --showpids",
        "rocm-smi --showpidgpus",
    ],
}
# One rocm-smi run for memory, processes and their GPUs (each run is a Python start on the host,
# which is most of a no-op deploy's cost there); the separate commands above are the fallback.
ROCM_SMI_ONCE = "rocm-smi --showmeminfo vram --showpids --showpidgpus"


@dataclass(frozen=True)
class Serving:
    """What a vendor's rules look at in one vLLM service (plain facts: gpu/ knows no stages)."""

    kind: str  # llm | embed | rerank | whisper
    vllm_version: str
    behaviours: frozenset[str]  # the release behaviours (release_behaviours) that hold
    env: Mapping[str, str] = field(default_factory=dict)
    attention_backend: str | None = None  # --attention-backend in extra_args


@dataclass(frozen=True)
class Advice:
    """One vendor rule's verdict, as the plan reports it."""

    severity: str  # error | warning
    code: str
    message: str
    hint: str


@dataclass(frozen=True)
class Amd:
    vendor: str = "amd"
    visible_devices_env: str = "HIP_VISIBLE_DEVICES"
    device_env: tuple[str, ...] = ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                                   "CUDA_VISIBLE_DEVICES")
    driver_step: str = "rocm"
    unit_groups: tuple[str, ...] = ("render", "video")  # /dev/kfd and /dev/dri

    def container_device_args(self) -> list[list[str]]:
        return [["--device=/dev/kfd", "--device=/dev/dri", "--group-add=video"],
                ["--cap-add=SYS_PTRACE", "--security-opt", "seccomp=unconfined"]]

    def survey_gpus_script(self) -> str:
        # The driver's view (amdgpu DRM cards) rather than an SMI run: the same GPUs, without
        # a Python start per host on every no-op; the deploy's own check and validate use SMI.
        return ("for c in /sys/class/drm/card[0-9]*; do [ -e \"$c/device/vendor\" ] && "
                "read -r v < \"$c/device/vendor\" && "
                f"[ \"$v\" = {PCI_VENDOR} ] && echo \"GPU[${{c##*card}}]\"; done")

    release_behaviours: tuple[str, ...] = ("rocm_encoder_decoder",)

    def serving_advice(self, serving: Serving) -> list[Advice]:
        """Encoder-decoder models (Whisper) on ROCm: vLLM's ROCm attention backends were
        decoder-only until the Triton backend gained cross-attention (vllm#31406, in 0.14);
        AITER FA still lacks it (#38508), so with AITER on a backend must be named."""
        if serving.kind != "whisper":
            return []
        if "rocm_encoder_decoder" not in serving.behaviours:
            return [Advice(
                "error", "whisper_on_rocm",
                f"vLLM {serving.vllm_version} cannot serve encoder-decoder models such as "
                "Whisper on ROCm: its ROCm attention backends are decoder-only (vllm#28184)",
                "use vLLM >= 0.14 (fleet.vllm_version)")]
        if serving.env.get("VLLM_ROCM_USE_AITER") == "1" and serving.attention_backend is None:
            return [Advice(
                "warning", "whisper_aiter",
                "with VLLM_ROCM_USE_AITER=1 vLLM picks ROCM_AITER_FA, which has no "
                "cross-attention", "add extra_args: [--attention-backend, TRITON_ATTN]")]
        return []

    def read_snapshot(self, session: Any) -> Snapshot:
        """One merged snapshot of the host's GPUs, over an open session."""
        tool = "amd-smi" if session.run("command -v amd-smi").rc == 0 else "rocm-smi"
        if tool == "rocm-smi":
            once = session.run(ROCM_SMI_ONCE)
            try:
                snapshot = parse(once.stdout, source=f"{session.target.name}: {ROCM_SMI_ONCE}")
                if snapshot.gpus and (snapshot.processes or "No KFD PIDs" in once.stdout):
                    return snapshot
            except SmiParseError:
                pass  # an older or newer rocm-smi that words the combined view otherwise
        snapshots = []
        for command in SMI_COMMANDS[tool]:
            result = session.run(command)
            text = result.stdout + ("\n" + result.stderr if "ERROR" in result.stderr else "")
            try:
                snapshots.append(parse(text, source=f"{session.target.name}: {command}"))
            except SmiParseError as exc:
                if "No KFD PIDs" in text or "no running processes" in text.lower():
                    continue  # nothing running on the GPUs is a valid reading
                raise exc
        return merge(*snapshots)


AMD = Amd()
