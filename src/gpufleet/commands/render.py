"""`gpufleet render INVENTORY --out DIR [--host H] [--force]`: the files a deploy would install.

Writes DIR/<host>/etc/systemd/system/... and DIR/<host>/etc/gpufleet/... with every secret value
replaced by `<secret:NAME>`: it never reads a secret, so its output is safe to review and diff.
Every destination is checked to lie inside DIR/<host> before anything is written; each file is
written atomically (a temporary name beside it, fsynced, renamed over it). The units and env
files of services the plan no longer has are removed from that folder, and a folder an earlier
render of this fleet wrote for a host the inventory no longer has loses gpufleet's files too.
Only gpufleet's own names are ever removed (host/layout.py); anything else there stays.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
from pathlib import Path, PurePosixPath

from gpufleet import inventory
from gpufleet.commands import SUMMARIES
from gpufleet.commands.hosts import add_host_options, chosen_hosts
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.host.layout import CONFIG_DIR, PLAN_FILE, PREFIX, SUFFIX, TARGET, UNIT_DIR
from gpufleet.plan import Plan, build_plan
from gpufleet.render import RenderedFile, render_plan
from gpufleet.views import finding_line

# What render owns in a host folder: only these names are ever removed as stale.
_OWNED = ((UNIT_DIR, re.compile(rf"{PREFIX}[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\{SUFFIX}")),
          (CONFIG_DIR, re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.env")))
# A retired host's folder also loses its target and plan.json.
_HOST_FILES = (f"{UNIT_DIR}/{TARGET}", PLAN_FILE)
# The temporary name beside a file while it is written, as the deploys name theirs
# (deploys/operations.temp_name): one left by an interrupted render is stale too.
TEMP_SUFFIX = ".gpufleet-new"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser("render", help=SUMMARIES["render"],
                       description=__doc__)
    p.add_argument("inventory", metavar="INVENTORY", help="placement inventory YAML")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write <host>/etc/... in")
    add_host_options(p, "render")
    p.add_argument("--force", action="store_true", help="render even when the plan has errors")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, env: Environment) -> int:
    inv = inventory.load(args.inventory)
    plan = build_plan(inv, only_hosts=chosen_hosts(args, inv))
    if plan.has_errors:
        _show_errors(plan, env, forced=args.force)
        if not args.force:
            return ExitStatus.FINDINGS
    out = Path(args.out)
    rendered = render_plan(plan)
    writes = destinations(out, rendered)  # all checked before the first byte is written
    # --host/--limit: the other hosts' files are not ours to remove
    retired = [] if args.host or args.limit else retired_hosts(out, plan)
    for host, files in rendered.items():
        stale = stale_files(out / host, files)
        for path, f in writes[host]:
            write_file(path, f)
        remove_files(stale)
        env.out.print(f"{host}: {len(files)} files under {out / host}")
        for f in files:
            env.out.print(f"  {f.mode} {f.path}", highlight=False)
        _show_removed(env, out / host, stale, "no longer planned")
    for folder in retired:
        stale = stale_files(folder, [], retired=True)
        remove_files(stale)
        _prune(folder)
        env.out.print(f"{folder.name}: no longer in the inventory", highlight=False)
        _show_removed(env, folder, stale, f"host {folder.name} no longer planned")
    return ExitStatus.OK


def _show_removed(env: Environment, host_dir: Path, stale: list[Path], why: str) -> None:
    for path in stale:
        env.out.print(f"  removed {path.relative_to(host_dir)} ({why})", highlight=False)


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


def stale_files(host_dir: Path, files: list[RenderedFile], *, retired: bool = False) -> list[Path]:
    """gpufleet's own units and env files in `host_dir` that this render does not produce (for a
    `retired` host, its target and plan.json too), and temporaries an interrupted render left.
    A folder that resolves outside `host_dir` (a symlink) is never looked into."""
    produced = {f.path for f in files}
    stale = []
    for folder, owned in _OWNED:
        where = host_dir / folder.lstrip("/")
        if not where.is_dir() or not where.resolve().is_relative_to(host_dir.resolve()):
            continue
        for path in sorted(where.iterdir()):
            name = f"{folder}/{path.name}"
            ours = owned.fullmatch(path.name) or (retired and name in _HOST_FILES) \
                or _temporary(folder, path.name, owned)
            if ours and name not in produced and (path.is_file() or path.is_symlink()):
                stale.append(path)
    return stale


def _temporary(folder: str, name: str, owned: re.Pattern[str]) -> bool:
    """`.<file>.gpufleet-new` beside one of gpufleet's own files."""
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return False
    base = name[1:-len(TEMP_SUFFIX)]
    return bool(owned.fullmatch(base)) or f"{folder}/{base}" in _HOST_FILES


def retired_hosts(out: Path, plan: Plan) -> list[Path]:
    """Folders under `out` that a render of this fleet wrote for a host it no longer has: their
    plan.json names this fleet and the folder's own host. Any other folder is not ours."""
    if not out.is_dir():
        return []
    planned = {h.name for h in plan.hosts}
    fleet = plan.inventory.fleet.name
    return [folder for folder in sorted(out.iterdir())
            if folder.name not in planned and not folder.is_symlink() and folder.is_dir()
            and _rendered_for(folder, fleet)]


def _rendered_for(folder: Path, fleet: str) -> bool:
    try:
        data = json.loads((folder / PLAN_FILE.lstrip("/")).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("fleet") == fleet \
        and data.get("name") == folder.name


def remove_files(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise InputError(f"cannot remove {path}: {exc.strerror}", where=str(path)) from None


def _prune(host_dir: Path) -> None:
    """The folders render creates for a host, where they are now empty (rmdir keeps any other)."""
    for folder in (UNIT_DIR, "/etc/systemd", CONFIG_DIR, "/etc", "/"):
        with contextlib.suppress(OSError):
            (host_dir / folder.lstrip("/")).rmdir()


def write_file(path: Path, f: RenderedFile) -> Path:
    """Write one rendered file atomically, with its mode: the bytes go to a temporary name beside
    it (created with the file's mode, so a 0600 env file is never readable by others, and never
    through a symlink), are fsynced, then renamed over it, and the folder is fsynced, as the
    deploys write host files: an interrupted render leaves the old file or the new, never a mix."""
    mode = int(f.mode, 8)
    temp = path.with_name(f".{path.name}{TEMP_SUFFIX}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.unlink(missing_ok=True)  # an interrupted render's leftover
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            os.fchmod(stream.fileno(), mode)  # the umask may have narrowed it
            stream.write(f.content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror}", where=str(path),
                         hint="pick an --out folder you can write to") from None
    return path


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
