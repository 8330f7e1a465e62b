"""`gpufleet render INVENTORY --out DIR [--host H] [--force]`: the files a deploy would install.

Writes DIR/<host>/etc/systemd/system/... and DIR/<host>/etc/gpufleet/... with every secret value
replaced by `<secret:NAME>`: it never reads a secret, so its output is safe to review and diff.
Every destination is checked to lie inside DIR/<host> before anything is written; the units and
env files of services the plan no longer has are removed from that folder.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path, PurePosixPath

from gpufleet import inventory
from gpufleet.commands import SUMMARIES
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.host.layout import CONFIG_DIR, PREFIX, SUFFIX, UNIT_DIR
from gpufleet.plan import Plan, build_plan
from gpufleet.render import RenderedFile, render_plan
from gpufleet.views import finding_line

# What render owns in a host folder: only these names are ever removed as stale.
_OWNED = ((UNIT_DIR, re.compile(rf"{PREFIX}[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\{SUFFIX}")),
          (CONFIG_DIR, re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.env")))


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser("render", help=SUMMARIES["render"],
                       description=__doc__)
    p.add_argument("inventory", metavar="INVENTORY", help="placement inventory YAML")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write <host>/etc/... in")
    p.add_argument("--host", help="render only this host")
    p.add_argument("--force", action="store_true", help="render even when the plan has errors")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, env: Environment) -> int:
    plan = build_plan(inventory.load(args.inventory), only_host=args.host)
    if plan.has_errors:
        _show_errors(plan, env, forced=args.force)
        if not args.force:
            return ExitStatus.FINDINGS
    out = Path(args.out)
    rendered = render_plan(plan)
    writes = destinations(out, rendered)  # all checked before the first byte is written
    for host, files in rendered.items():
        stale = stale_files(out / host, files)
        for path, f in writes[host]:
            write_file(path, f)
        for path in stale:
            path.unlink()
        env.out.print(f"{host}: {len(files)} files under {out / host}")
        for f in files:
            env.out.print(f"  {f.mode} {f.path}", highlight=False)
        for path in stale:
            env.out.print(f"  removed {path.relative_to(out / host)} (no longer planned)",
                          highlight=False)
    return ExitStatus.OK


def _show_errors(plan: Plan, env: Environment, *, forced: bool) -> None:
    for finding in plan.findings:
        if finding.severity == "error":
            env.err.print(finding_line(finding))
    verdict = "rendering anyway (--force)" if forced else "not rendering: fix them or pass --force"
    env.warn(f"the plan has errors; {verdict}")


def destinations(
    out: Path, rendered: dict[str, list[RenderedFile]]
) -> dict[str, list[tuple[Path, RenderedFile]]]:
    """Where each file goes: out/<host>/<path on the host>. A host name that is not one plain
    folder name, a file path that is not absolute and normalised, or a destination that
    resolves (symlinks followed) outside out/<host> is an InputError: nothing is written."""
    root = out.resolve()
    found: dict[str, list[tuple[Path, RenderedFile]]] = {}
    for host, files in rendered.items():
        if not _plain_component(host):
            raise InputError(f"host name {host!r} is not a plain folder name",
                             where=str(out), hint="host names are RFC 1123 names")
        base = root / host
        found[host] = []
        for f in files:
            rel = PurePosixPath(f.path)
            if not rel.is_absolute() or str(rel) != f.path or ".." in rel.parts:
                raise InputError(f"host {host}: {f.path!r} is not a plain absolute path",
                                 where=str(out))
            path = base.joinpath(*rel.parts[1:])
            if not path.resolve().is_relative_to(base.resolve()) \
                    or not base.resolve().is_relative_to(root):
                raise InputError(f"host {host}: {f.path} would be written outside {out / host}",
                                 where=str(path), hint="a symlink in --out points elsewhere?")
            found[host].append((path, f))
    return found


def _plain_component(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0") \
        and name.isprintable()


def stale_files(host_dir: Path, files: list[RenderedFile]) -> list[Path]:
    """gpufleet's own units and env files in `host_dir` that this render does not produce."""
    produced = {f.path for f in files}
    stale = []
    for folder, owned in _OWNED:
        where = host_dir / folder.lstrip("/")
        if not where.is_dir():
            continue
        for path in sorted(where.iterdir()):
            if owned.fullmatch(path.name) and f"{folder}/{path.name}" not in produced \
                    and (path.is_file() or path.is_symlink()):
                stale.append(path)
    return stale


def write_file(path: Path, f: RenderedFile) -> Path:
    """Write one rendered file with its mode (0600 env files stay private here too)."""
    mode = int(f.mode, 8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created with its mode (no moment of 0644 for an env file); never through a symlink.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            os.fchmod(stream.fileno(), mode)
            stream.write(f.content)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}", where=str(path),
                         hint="pick an --out folder you can write to") from None
    return path
