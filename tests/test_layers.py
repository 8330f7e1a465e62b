"""The import-layer contract (.ci/layers.py) holds for the package, and catches what it forbids."""

from __future__ import annotations

import runpy
from pathlib import Path

from support import REPO

LAYERS = runpy.run_path(str(REPO / ".ci" / "layers.py"))


def test_the_package_keeps_its_layers() -> None:
    assert LAYERS["violations"]() == []


def test_each_rule_catches_a_violation(tmp_path: Path) -> None:
    pkg = tmp_path / "gpufleet"
    (pkg / "host" / "scripts").mkdir(parents=True)
    (pkg / "commands").mkdir()
    (pkg / "gpu").mkdir()
    (pkg / "vllm").mkdir()
    files = {
        "host/ssh.py": "from gpufleet.plan import Plan\n",
        "gpu/amd.py": "from gpufleet.host.ssh import Session\nfrom gpufleet.gpu.smi import parse\n",
        "vllm/memory.py": "from gpufleet.plan import Plan\nfrom gpufleet.vllm import releases\n",
        "host/scripts/probe.py": "import json\nfrom gpufleet.errors import InputError\n",
        "probe.py": "def f():\n    from gpufleet.host.scripts import probe\n",
        "plan.py": "import paramiko\nfrom typing import TYPE_CHECKING\n"
                   "if TYPE_CHECKING:\n    from gpufleet.cli import main\n",
        "render.py": "from gpufleet.commands import deploy\n",
        "rollout.py": "from gpufleet_lab import up\n",
        "commands/deploy.py": "from gpufleet.commands import validate\nfrom gpufleet import plan\n",
        "commands/plan.py": "from gpufleet.commands import deploy\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    found = "\n".join(LAYERS["violations"](pkg))
    assert "host/ssh.py: host/ imports gpufleet.plan" in found
    assert "gpu/amd.py: gpu/ imports gpufleet.host.ssh" in found
    assert "gpu/amd.py: gpu/ imports gpufleet.gpu.smi" not in found
    assert "vllm/memory.py: vllm/ imports gpufleet.plan" in found
    assert "vllm/memory.py: vllm/ imports gpufleet.vllm.releases" not in found
    assert "host/scripts/probe.py: a host script imports gpufleet.errors" in found
    assert "probe.py: imports gpufleet.host.scripts" in found
    assert "plan.py: the pure stage plan imports paramiko" in found
    assert "gpufleet.cli" not in found  # under TYPE_CHECKING: a type, not an import
    assert "render.py: imports gpufleet.commands" in found
    assert "rollout.py: imports gpufleet_lab (the product never uses the lab)" in found
    assert "src/gpufleet/commands/" not in found  # the CLI layer may use commands/ and the lab


def test_the_product_wheel_holds_no_lab() -> None:
    """The wheel packs src/gpufleet only, and no lab code lives there (the lab is lab/)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/gpufleet"]
    package = REPO / "src" / "gpufleet"
    assert not (package / "lab").exists()
    assert not [p for p in package.rglob("*") if "vllm_double" in p.parts or p.name == "fakegpu.py"]
    lab = tomllib.loads((REPO / "lab" / "pyproject.toml").read_text())
    assert lab["project"]["entry-points"]["gpufleet.commands"] == {"lab": "gpufleet_lab.command"}


def test_the_built_wheel_holds_the_product_and_no_lab(tmp_path: Path) -> None:
    """Built for real by the project's own build backend (what `pip wheel .` runs): the wheel
    carries the package and its data, and nothing of the lab distribution."""
    import subprocess
    import sys
    import zipfile

    build = "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", build, str(tmp_path)], cwd=REPO, check=True,
                          capture_output=True, text=True)
    with zipfile.ZipFile(tmp_path / done.stdout.strip().splitlines()[-1]) as wheel:
        names = wheel.namelist()
    assert "gpufleet/cli.py" in names and "gpufleet/vllm/data/releases/0.19.1.json" in names
    assert not [n for n in names if "gpufleet_lab" in n or "vllm_double" in n
                or n.endswith("fakegpu.py") or n.startswith(("lab/", "tests/"))]
