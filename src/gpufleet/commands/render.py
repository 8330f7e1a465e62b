"""`gpufleet render INVENTORY --out DIR [--host H] [--force]`: the files a deploy would install.

Writes DIR/<host>/etc/systemd/system/... and DIR/<host>/etc/gpufleet/... with every secret value
replaced by `<secret:NAME>`: it never reads a secret, so its output is safe to review and diff.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gpufleet import inventory
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.plan import Plan, build_plan
from gpufleet.render import RenderedFile, render_plan
from gpufleet.views import finding_line


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser("render", help="write the systemd units and env files each host gets",
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
    for host, files in render_plan(plan).items():
        for f in files:
            write_file(out / host, f)
        env.out.print(f"{host}: {len(files)} files under {out / host}")
        for f in files:
            env.out.print(f"  {f.mode} {f.path}", highlight=False)
    return ExitStatus.OK


def _show_errors(plan: Plan, env: Environment, *, forced: bool) -> None:
    for finding in plan.findings:
        if finding.severity == "error":
            env.err.print(finding_line(finding))
    verdict = "rendering anyway (--force)" if forced else "not rendering: fix them or pass --force"
    env.warn(f"the plan has errors; {verdict}")


def write_file(root: Path, f: RenderedFile) -> Path:
    """Write one rendered file under `root` with its mode (0600 env files stay private here too)."""
    path = root / f.path.lstrip("/")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.content, encoding="utf-8")
        path.chmod(int(f.mode, 8))
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}", where=str(path),
                         hint="pick an --out folder you can write to") from None
    return path
