"""The import-layer contract of src/gpufleet, checked on every CI run (and by tests/test_layers.py).

    python .ci/layers.py            # prints each violation, exit 1 if any

Data flows one way: the CLI's commands drive the stages (inventory -> models -> memory -> plan
-> render -> deploys -> rollout -> validate), and the stages reach outside systems only through
the packages that know them (`host/` for a host: its names and paths, SSH, systemd readers).
Rules (imports under `if TYPE_CHECKING:` are types only and do not count):

1. `vllm/` knows vLLM, `gpu/` the GPU vendors, `host/` the hosts — not gpufleet's stages: each
   imports only itself and `errors`.
2. `host/scripts/` run on hosts (the host's python3, or a venv gpufleet installs there): they
   import no gpufleet module, and nothing imports them (read as text and sent over SSH).
3. The pure stages never touch a host or the deploy engine: no paramiko, pyinfra, `host.ssh`.
4. Only the CLI layer (`cli`, `commands/`) imports `commands/`; nothing imports `cli` (but
   `__main__`, which is `python -m gpufleet`).
5. The product never imports the lab (`gpufleet_lab`, its own distribution in lab/: the test
   hosts and the vLLM double); `gpufleet lab` reaches it through an entry point.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gpufleet"
PURE = ("errors", "bulk", "vocabulary", "yamlsource", "inventory", "plan", "render",
        "settings", "secrets", "host.layout", "host.systemctl", "gpu", "gpu.amd", "gpu.models",
        "vllm", "vllm.knobs", "vllm.releases", "vllm.messages", "vllm.memory", "vllm.models",
        "vllm.flags", "place", "place.demand", "place.solve", "place.write", "page")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(tree: ast.AST) -> Iterator[str]:
    """Every module imported anywhere in the file (functions too), outside TYPE_CHECKING."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            yield from (name for child in node.orelse for name in imports(child))
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        yield from imports(node)


def local(name: str) -> str | None:
    """`gpufleet.host.ssh` -> `host.ssh`; None for anything outside the package."""
    if name == "gpufleet" or not name.startswith("gpufleet."):
        return None
    return name.removeprefix("gpufleet.")


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(package: Path = PACKAGE) -> list[str]:
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        me = module_name(path, package)
        names = sorted(set(imports(ast.parse(path.read_text(), str(path)))))
        ours = [n for n in (local(n) for n in names) if n]
        where = f"src/gpufleet/{path.relative_to(package)}"
        found += [f"{where}: {why}" for why in _check(me, names, ours)]
    return found


def _check(me: str, names: list[str], ours: list[str]) -> Iterator[str]:
    if within(me, "host.scripts"):
        if ours:
            yield (f"a host script imports gpufleet.{ours[0]} (it runs on the host, where "
                   "gpufleet is not installed)")
    elif within(me, "host") or within(me, "gpu") or within(me, "vllm"):
        pkg = me.split(".")[0]
        for n in ours:
            if not (within(n, pkg) or within(n, "errors")):
                yield f"{pkg}/ imports gpufleet.{n} ({pkg}/ may use only {pkg}/ and errors)"
    for n in ours:
        if within(n, "host.scripts"):
            yield f"imports gpufleet.{n} (host scripts are read as text, never imported)"
        if within(n, "cli") and me != "__main__":  # `python -m gpufleet` is the CLI itself
            yield f"imports gpufleet.{n} (nothing imports the CLI)"
        if within(n, "commands") and not (within(me, "commands") or me == "cli"):
            yield f"imports gpufleet.{n} (only the CLI layer uses commands/)"
    for n in names:
        if within(n, "gpufleet_lab"):
            yield f"imports {n} (the product never uses the lab)"
            break
    if me in PURE:
        for n in names:
            if n.split(".")[0] in ("paramiko", "pyinfra") or local(n) in ("host.ssh",):
                yield f"the pure stage {me} imports {n} (stages touch no host)"


def main() -> int:
    found = violations()
    for line in found:
        print(line)
    print(f"import layers: {len(found)} violation(s)" if found else "import layers: ok")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
