"""Builds the vllm-test-double wheel (stdlib only; also the PEP 517 backend of pyproject.toml).

The wheel is named `vllm` and holds:
  vllm/                 the double (this folder's vllm/ package and its startups.json, as is)
  vllm/_fakegpu.py      the lab's fakegpu.py (the claim API for emulated VRAM)
Nothing of gpufleet's planner is in it: the double's memory is its own (vllm/_startup.py).
  vllm/_build_info.py   the vLLM version the double emulates
No network and no build dependencies: lab hosts are offline.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
EMULATED_VERSION = "0.11.0"
LOCAL_TAG = "testdouble"


def wheel_version(vllm_version: str = EMULATED_VERSION) -> str:
    """A local version: pip and importlib see 0.11.0, and '+testdouble' says what it is."""
    return f"{vllm_version}+{LOCAL_TAG}"


def _double_files(vllm_version: str) -> dict[str, bytes]:
    files = {}
    for path in sorted((HERE / "vllm").rglob("*")):
        if path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
            files[f"vllm/{path.relative_to(HERE / 'vllm')}"] = path.read_bytes()
    files["vllm/_fakegpu.py"] = (HERE.parent / "fakegpu.py").read_bytes()
    files["vllm/_build_info.py"] = f'EMULATED_VERSION = "{vllm_version}"\n'.encode()
    return files


def _dist_info(version: str) -> dict[str, str]:
    return {
        "METADATA": (
            f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
            "Summary: vllm-test-double: stands in for vLLM's GPU and model loading in gpufleet "
            "lab hosts (no GPU, no weights)\nRequires-Python: >=3.9\n"
        ),
        "WHEEL": "Wheel-Version: 1.0\nGenerator: gpufleet-vllm-double\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        "entry_points.txt": "[console_scripts]\nvllm = vllm.entrypoints.cli.main:main\n",
        "top_level.txt": "vllm\n",
    }


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(
    out_dir: str | Path, *, vllm_version: str = EMULATED_VERSION,
) -> Path:
    """Write vllm-<version>+testdouble-py3-none-any.whl into out_dir and return its path."""
    version = wheel_version(vllm_version)
    files = _double_files(vllm_version)
    dist = f"vllm-{version}.dist-info"
    files |= {f"{dist}/{k}": v.encode() for k, v in _dist_info(version).items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"vllm-{version}-py3-none-any.whl"
    record = [_record_line(name, data) for name, data in files.items()] + [f"{dist}/RECORD,,"]
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return wheel


# ---------------------------------------------------------------- PEP 517 hooks (pip wheel .)


def get_requires_for_build_wheel(config_settings: dict[str, str] | None = None) -> list[str]:
    return []


def build_wheel(
    wheel_directory: str, config_settings: dict[str, str] | None = None,
    metadata_directory: str | None = None,
) -> str:
    return make_wheel(wheel_directory).name
