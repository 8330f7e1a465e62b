"""Custom pyinfra facts gpufleet reads from its hosts (pyinfra style: example value in the doc)."""

from __future__ import annotations

import re
import shlex
from typing import Any, TypeVar

from pyinfra.api import FactBase

from gpufleet.host.layout import PREFIX, UNIT_DIR, service_of
from gpufleet.host.systemctl import parse_show

T = TypeVar("T")

_GPU_LINE = re.compile(r"^GPU\[(\d+)\]")


class GpufleetUnits(FactBase[list[str]]):
    """
    Service names of the gpufleet units installed on the host:

    .. code:: python

        ["kb-whisper", "llama-8b"]
    """

    default = list

    def command(self) -> str:
        return f"ls -1 {UNIT_DIR} 2>/dev/null | grep -E '^{PREFIX}.+[.]service$' || true"

    def process(self, output: list[str]) -> list[str]:
        return sorted(svc for line in output if (svc := service_of(line.strip())))


class AmdgpuInitstate(FactBase[str | None]):
    """
    The amdgpu module's state: ``"live"`` once loaded, None when not loaded.
    """

    def command(self) -> str:
        return "cat /sys/module/amdgpu/initstate 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() if output and output[0].strip() else None


class RocmSmiGpuCount(FactBase[int]):
    """
    How many GPUs ``rocm-smi --showid`` lists (0 without rocm-smi or without a driver; rocm-smi
    exits 0 either way, so its output is what counts):

    .. code:: python

        8
    """

    default = int

    def requires_command(self) -> str:
        return "rocm-smi"

    def command(self) -> str:
        return "rocm-smi --showid 2>&1 || true"

    def process(self, output: list[str]) -> int:
        return len({m.group(1) for m in map(_GPU_LINE.match, output) if m})


class AptCandidate(FactBase[str | None]):
    """
    The version apt would install for a package, None when it is not installable:

    .. code:: python

        "6.8.0-45.45"
    """

    def command(self, package: str) -> str:
        return f"apt-cache policy {shlex.quote(package)} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        for line in output:
            key, _, value = line.strip().partition(":")
            if key == "Candidate":
                value = value.strip()
                return None if value in ("", "(none)") else value
        return None


class VenvDistVersion(FactBase[str | None]):
    """
    The installed version of a distribution in a venv, None when it is absent. One metadata
    read: `pip freeze` imports all of pip and costs seconds of CPU per host on every run.

    .. code:: python

        "0.19.1+rocm700"
    """

    def command(self, python: str, dist: str) -> str:
        code = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
        quoted = " ".join(shlex.quote(w) for w in (python, "-c", code, dist))
        return f"{quoted} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return output[-1].strip() if output and output[-1].strip() else None


class ContainerImages(FactBase[list[str]]):
    """
    Images present in the container engine, as ``repository:tag`` without ``docker.io/``:

    .. code:: python

        ["rocm/vllm:rocm6.4.1_vllm_0.11.0"]
    """

    default = list

    def requires_command(self, engine: str) -> str:
        return engine

    def command(self, engine: str) -> str:
        return f"{engine} images --format '{{{{.Repository}}}}:{{{{.Tag}}}}'"

    def process(self, output: list[str]) -> list[str]:
        return sorted({normalize_image(line.strip()) for line in output if line.strip()})


class KernelCmdline(FactBase[list[str]]):
    """
    The running kernel's command line, split into words:

    .. code:: python

        ["BOOT_IMAGE=/vmlinuz-6.8.0-45-generic", "ro", "iommu=pt"]
    """

    default = list

    def command(self) -> str:
        return "cat /proc/cmdline"

    def process(self, output: list[str]) -> list[str]:
        return " ".join(output).split()


def normalize_image(ref: str) -> str:
    """`docker.io/library/x` and `x:latest` name the same image as `x` does."""
    for prefix in ("docker.io/", "library/"):
        ref = ref.removeprefix(prefix)
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last or "@" in last else f"{ref}:latest"


class FileStates(FactBase[dict[str, tuple[str, str, str, str]]]):
    """
    Mode, owner, group and SHA-256 of several files in one command (absent files are left out),
    so a deploy reads all the files it manages in one round trip, not two per file:

    .. code:: python

        {"/etc/gpufleet/chat.env": ("600", "root", "root", "9f86d08…")}
    """

    default = dict

    def command(self, paths: tuple[str, ...]) -> str:
        quoted = " ".join(shlex.quote(p) for p in paths)
        return (f"for p in {quoted}; do [ -f \"$p\" ] && [ ! -L \"$p\" ] && "
                "printf '%s %s\\n' \"$(stat -c '%a %U %G' -- \"$p\")\" \"$(sha256sum -- \"$p\")\"; "
                "done; true")

    def process(self, output: list[str]) -> dict[str, tuple[str, str, str, str]]:
        states = {}
        for line in output:
            parts = line.split(maxsplit=4)
            if len(parts) == 5:
                mode, user, group, digest, path = parts
                states[path.lstrip("*")] = (mode_text(mode), user, group, digest)
        return states


class UnitStates(FactBase[dict[str, dict[str, str]]]):
    """
    ActiveState, SubState and UnitFileState of several units in one `systemctl show`:

    .. code:: python

        {"gpufleet.target": {"ActiveState": "active", "UnitFileState": "enabled", …}}
    """

    default = dict

    def command(self, units: tuple[str, ...]) -> str:
        names = " ".join(shlex.quote(u) for u in units)
        return ("systemctl show -p Id,LoadState,ActiveState,SubState,UnitFileState "
                f"{names} 2>/dev/null || true")

    def process(self, output: list[str]) -> dict[str, dict[str, str]]:
        return parse_show(output)


def host_state_fact(host: Any, fact: type[FactBase[T]], **kwargs: Any) -> T:
    """A batched fact (FileStates, UnitStates) read once per host and run, not once per operation.

    pyinfra 3 re-reads a fact each time an operation asks, and each operation runs twice (when
    the deploy is built and when it executes): the deploy's ~20 file and unit operations would
    re-list the same files ~40 times per host. The pre-run state is the right input for both
    passes: the run holds the host's lock, and each managed path or unit is decided by one
    operation, which the earlier operations of the run do not write.
    """
    real = host._get_module() if hasattr(host, "_get_module") else host  # pyinfra's proxy
    memo: dict[tuple[Any, ...], Any] = real.__dict__.setdefault("_gpufleet_fact_memo", {})
    key = (fact, tuple(sorted(kwargs.items())))
    if key not in memo:
        memo[key] = real.get_fact(fact, **kwargs)
    return memo[key]  # type: ignore[no-any-return]


def mode_text(mode: str | int) -> str:
    """'0644', '644' and 644 are one mode: compare them as '644'."""
    return str(mode).lstrip("0") or "0"
