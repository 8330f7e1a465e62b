"""Builds the vllm-test-double wheel (stdlib only; also the PEP 517 backend of pyproject.toml).

The wheel is named `vllm` and holds:
  vllm/                 the double (this folder's vllm/ package and its startups.json, as is)
  vllm/_fakegpu.py      the lab's fakegpu.py (the claim API for emulated VRAM)
Nothing of gpufleet's planner is in it: the double's memory is its own (vllm/_startup.py).
  vllm/_build_info.py   the vLLM version the double emulates, and the release its flags are from
  vllm/_serve_flags.json  that release's `vllm serve` flags (vllm/args.py builds its parser from
                        them), read from gpufleet's data/releases/<version>.json at build time
No network and no build dependencies: lab hosts are offline. The build reads gpufleet's release
data, so gpufleet must be importable where the wheel is built (the lab's controller).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EMULATED_VERSION = "0.11.0"
LOCAL_TAG = "testdouble"


def wheel_version(vllm_version: str = EMULATED_VERSION) -> str:
    """A local version: pip and importlib see 0.11.0, and '+testdouble' says what it is."""
    return f"{vllm_version}+{LOCAL_TAG}"


# ---------------------------------------------------------------- the emulated release's flags

# What a release's data file does not record but its parser does (read in the sdists): the first
# release read that has each. Keyed on the release whose data is used, so flags and quirks agree.
MAX_MODEL_LEN_AUTO_SINCE = (0, 14, 1)  # human_readable_int_or_auto: 'auto'/-1 (not in 0.13.0)
TERA_SUFFIX_SINCE = (0, 13, 0)  # human_readable_int's t/T suffixes
DASH_O_DOT_TO_CC = ((0, 12, 0), (0, 13, 0))  # 0.12 alone rewrites -O.x to -cc.x
FLAG_KEYS = ("arity", "aliases", "choices", "type", "negatable", "value_optional", "repeatable",
             "known_values")


def _key(version: str) -> tuple[int, ...]:
    """'0.10.1.1' -> (0, 10, 1, 1); tolerant of suffixes ('0.28.1rc1' -> (0, 28, 1))."""
    return tuple(int(re.sub(r"\D.*", "", p) or 0) for p in version.split("+")[0].split("."))


def releases_dir() -> Any:
    """gpufleet's per-release data (generated from each vLLM release's source)."""
    try:
        return resources.files("gpufleet.vllm") / "data" / "releases"
    except ModuleNotFoundError as e:  # pip's isolated build env: no gpufleet in it
        raise RuntimeError("the vllm-test-double's flags come from gpufleet's release data: "
                           "build where gpufleet is installed (pip wheel --no-build-isolation)"
                           ) from e


def known_releases() -> list[str]:
    names = [f.name[: -len(".json")] for f in releases_dir().iterdir() if f.name.endswith(".json")]
    return sorted(names, key=_key)


def release_for(version: str) -> str:
    """The release whose data the double uses: the version itself, else the newest of its minor
    line (0.20.0 -> 0.20.2), else the nearest lower one, else the oldest (as gpufleet's planner)."""
    known = known_releases()
    if version in known:
        return version
    want = _key(version)
    same_line = [v for v in known if _key(v)[:2] == want[:2]]
    lower = [v for v in known if _key(v) < want]
    return (same_line or lower or known[:1])[-1]


def _parser_quirks(release: str) -> dict[str, bool]:
    at = _key(release)[:3]
    return {"max_model_len_auto": at >= MAX_MODEL_LEN_AUTO_SINCE,
            "tera_suffix": at >= TERA_SUFFIX_SINCE,
            "dash_o_dot_to_cc": DASH_O_DOT_TO_CC[0] <= at < DASH_O_DOT_TO_CC[1]}


def serve_spec(vllm_version: str = EMULATED_VERSION) -> dict[str, Any]:
    """What the double's parser needs of the release it emulates (vllm/_serve_flags.json)."""
    release = release_for(vllm_version)
    raw = json.loads((releases_dir() / f"{release}.json").read_text(encoding="utf-8"))
    flags = {name: {k: v for k, v in entry.items() if k in FLAG_KEYS}
             for name, entry in raw["serve_flags"].items()}
    return {"asked": vllm_version, "release": raw["version"], "serve_flags": flags,
            "defaults": raw["defaults"], "parser": _parser_quirks(raw["version"])}


# ---------------------------------------------------------------- the wheel


def _build_info(vllm_version: str, spec: dict[str, Any]) -> bytes:
    return (f'EMULATED_VERSION = "{vllm_version}"\n'
            f'FLAGS_RELEASE = "{spec["release"]}"  # the release data the parser is built from\n'
            f"FLAGS_EXACT = {spec['release'] == vllm_version}\n").encode()


def _double_files(vllm_version: str) -> dict[str, bytes]:
    files = {}
    for path in sorted((HERE / "vllm").rglob("*")):
        if path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
            files[f"vllm/{path.relative_to(HERE / 'vllm')}"] = path.read_bytes()
    files["vllm/_fakegpu.py"] = (HERE.parent / "fakegpu.py").read_bytes()
    spec = serve_spec(vllm_version)
    files["vllm/_serve_flags.json"] = json.dumps(spec, indent=1, sort_keys=True).encode()
    files["vllm/_build_info.py"] = _build_info(vllm_version, spec)
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
