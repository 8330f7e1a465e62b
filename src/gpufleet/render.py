"""Render: the plan -> systemd units, env files and plan.json for each host.

A pure function of the plan (and, at deploy time, of the secret values handed in): no disk beyond
the templates, no network, no clock. Same inventory -> byte-identical files, so a deploy uploads
and restarts only what really changed. Every flag, GPU index, port and start order comes from the
plan; nothing here recomputes them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2

from gpufleet.errors import InputError
from gpufleet.inventory import Fleet, Inventory, Kind
from gpufleet.plan import Plan, PlannedHost, PlannedService, start_order_groups
from gpufleet.settings import host_setting

# ---------------------------------------------------------------- where things live on a host

UNIT_DIR = "/etc/systemd/system"
CONFIG_DIR = "/etc/gpufleet"
TARGET = "gpufleet.target"
CACHE_DIR = "/var/cache/gpufleet"  # HOME of the venv services: torch, triton and vLLM caches
ENGINES = {"docker": "/usr/bin/docker", "podman": "/usr/bin/podman"}
# GPU pinning and the weights cache belong to the plan; a service's `env:` must not override them.
RESERVED_ENV = ("HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                "HF_HOME", "HF_HUB_OFFLINE")

_SAFE_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_./-]*")  # unquoted in unit text and the readiness URL


@dataclass(frozen=True)
class RenderedFile:
    """One file as it must exist on the host."""

    path: str  # absolute on the host
    content: str
    mode: str = "0644"
    owner: str = "root"
    group: str = "root"
    secret: bool = False  # holds secret values (or their markers): never log or diff it


@dataclass(frozen=True)
class Launch:
    """What a unit runs: a program (an image's entrypoint, or a host path) and its arguments."""

    program: str
    args: tuple[str, ...]
    image: str | None  # container runtime only


def unit_name(service_name: str) -> str:
    return f"gpufleet-{service_name}.service"


def env_file_path(service_name: str) -> str:
    return f"{CONFIG_DIR}/{service_name}.env"


def secret_marker(name: str) -> str:
    """What `gpufleet render` writes instead of a secret's value."""
    return f"<secret:{name}>"


# ---------------------------------------------------------------- the public entry points


def render_plan(
    plan: Plan, secrets: Mapping[str, str] | None = None
) -> dict[str, list[RenderedFile]]:
    """Every planned host's files, by host name."""
    return {host.name: render_host(plan, host.name, secrets) for host in plan.hosts}


def render_host(
    plan: Plan, host: str, secrets: Mapping[str, str] | None = None
) -> list[RenderedFile]:
    """The host's units, env files, target and plan.json, sorted by path.

    `secrets` maps secret names (fleet.secrets) to values; None writes `<secret:NAME>` markers.
    """
    planned = _planned_host(plan, host)
    inv = plan.inventory
    _check_fleet(inv)
    files = [_target_file(inv.fleet, planned), _plan_file(plan, planned)]
    for ps in planned.services:
        _check_service(inv, planned.name, ps)
        files.append(_unit_file(inv, planned.name, ps))
        files.append(_env_file(inv.fleet, ps, secrets))
    return sorted(files, key=lambda f: f.path)


def _planned_host(plan: Plan, host: str) -> PlannedHost:
    for planned in plan.hosts:
        if planned.name == host:
            return planned
    raise InputError(f"host {host!r} is not in the plan", where=str(plan.inventory.path),
                     hint=f"planned hosts: {', '.join(h.name for h in plan.hosts) or 'none'}")


# ---------------------------------------------------------------- what each kind runs


def launch(inv: Inventory, host: str, ps: PlannedService) -> Launch:
    """The program and arguments of a service, for the fleet's runtime."""
    svc, container = ps.service, inv.fleet.runtime == "container"
    if svc.kind.runs_vllm:
        venv = host_setting(inv, host, "gpufleet_venv_dir")
        program, args = ("vllm" if container else f"{venv}/bin/vllm"), ps.vllm_args
    elif svc.kind is Kind.DOCLING:
        venv = host_setting(inv, host, "gpufleet_docling_venv_dir")
        program = "docling-serve" if container else f"{venv}/bin/docling-serve"
        args = ("run", "--host", "0.0.0.0", "--port", str(svc.port), *svc.extra_args)
    else:
        command = svc.command or []
        program, args = command[0], (*command[1:], *svc.extra_args)
    return Launch(program, tuple(args), _image(inv, host, ps) if container else None)


def _image(inv: Inventory, host: str, ps: PlannedService) -> str:
    """The service's own image, else the fleet's vLLM image (never for docling: it has its own)."""
    svc = ps.service
    image = svc.image or (inv.fleet.image if svc.kind is not Kind.DOCLING else None)
    if image:
        return image
    hint = ("set the service's `image` (docling-serve-rocm is built, not published: rocm.md §3.6)"
            if svc.kind is Kind.DOCLING else "set fleet.image or the service's `image`")
    raise InputError(f"service {svc.name}: the container runtime needs an image",
                     where=_where(inv, host, svc.name), hint=hint)


def _where(inv: Inventory, host: str, service: str, key: str | None = None) -> str:
    """file:line of a service (or one of its keys) in the inventory."""
    index = [s.name for s in inv.hosts[host].services].index(service)
    return inv.service_where(host, index, key)


def _check_service(inv: Inventory, host: str, ps: PlannedService) -> None:
    """What unit text needs beyond the schema: env keys it owns, one-line values, plain paths."""
    svc = ps.service

    def bad(what: str, key: str, hint: str) -> InputError:
        return InputError(f"service {svc.name}: {what}", where=_where(inv, host, svc.name, key),
                          hint=hint)

    clash = sorted(set(svc.env) & set(RESERVED_ENV)) + sorted(set(svc.env) & set(svc.secrets))
    if clash:
        raise bad(f"env sets {', '.join(clash)}, which the plan or `secrets:` already decide",
                  "env", "GPUs come from `gpus:`, the weights cache from fleet.model_cache; "
                  "remove the key")
    if any("\n" in value for value in svc.env.values()):
        raise bad("an env value spans several lines", "env", "an env file holds one line each")
    if not _PLAIN_PATH.fullmatch(svc.health_path):
        raise bad(f"health_path {svc.health_path!r} is not a plain URL path", "health_path",
                  "use letters, digits and / . _ - only, starting with /")


def _check_fleet(inv: Inventory) -> None:
    if not _PLAIN_PATH.fullmatch(inv.fleet.model_cache):
        raise InputError(f"fleet.model_cache {inv.fleet.model_cache!r} is not a plain path",
                         where=inv.where("fleet", "model_cache"),
                         hint="use letters, digits and / . _ - only, starting with /")


# ---------------------------------------------------------------- the files


def start_timeout_s(fleet: Fleet) -> int:
    """TimeoutStartSec= is the rollout's health gate: a start (load + readiness wait) that takes
    longer has failed, systemd stops it, and the rollout rolls the host back."""
    return int(fleet.rollout.health_timeout_s)


def extra_write_paths(inv: Inventory, host: str) -> list[str]:
    """Paths the sandboxed venv units may write besides the model cache (setting
    gpufleet_unit_read_write_paths, fleet-wide or per host): the lab's emulated GPU state."""
    key = "gpufleet_unit_read_write_paths"
    paths = inv.hosts[host].settings.get(key, inv.fleet.settings.get(key, []))
    for path in paths:
        if not isinstance(path, str) or not _PLAIN_PATH.fullmatch(path):
            raise InputError(f"{key}: {path!r} is not a plain absolute path",
                             where=inv.where("fleet", "settings", key))
    return list(paths)


def _unit_file(inv: Inventory, host: str, ps: PlannedService) -> RenderedFile:
    fleet, svc = inv.fleet, ps.service
    run = launch(inv, host, ps)
    context = {
        "fleet": fleet.name, "name": svc.name, "kind": svc.kind.value, "model": svc.model or "",
        "unit": unit_name(svc.name), "target": TARGET,
        "gpus": ",".join(str(g) for g in ps.gpus), "port": svc.port,
        "health_url": f"http://127.0.0.1:{svc.port}{svc.health_path}",
        "after": [unit_name(n) for n in ps.start_after],
        "env_file": env_file_path(svc.name), "model_cache": fleet.model_cache,
        "offline": svc.kind.runs_vllm, "program": run.program, "args": run.args,
        "image": run.image, "engine": fleet.container_engine,
        "engine_bin": ENGINES[fleet.container_engine],
        "user": host_setting(inv, host, "gpufleet_service_user"),
        "cache_dir": CACHE_DIR, "start_timeout_s": start_timeout_s(fleet),
        "read_write_paths": " ".join([fleet.model_cache, *extra_write_paths(inv, host)]),
    }
    content = _template(f"{fleet.runtime}.service.j2").render(context)
    return RenderedFile(f"{UNIT_DIR}/{unit_name(svc.name)}", content)


def _env_file(fleet: Fleet, ps: PlannedService, secrets: Mapping[str, str] | None) -> RenderedFile:
    svc = ps.service
    values = dict(svc.env)
    for var, secret in svc.secrets.items():
        values[var] = secret_marker(secret) if secrets is None else _secret(secrets, secret)
    # docker/podman read the file literally; systemd's EnvironmentFile= unquotes it.
    quote = _env_file_quote if fleet.runtime == "venv" else (lambda v: v)
    lines = [f"{key}={quote(value)}" for key, value in sorted(values.items())]
    content = _template("service.env.j2").render(name=svc.name, lines=lines)
    # 0600 always; `secret` only when the content depends on secret values (drift, diffs).
    return RenderedFile(env_file_path(svc.name), content, mode="0600", secret=bool(svc.secrets))


def _secret(secrets: Mapping[str, str], name: str) -> str:
    if name not in secrets:
        raise InputError(f"secret {name!r} has no value", where=f"fleet.secrets.{name}",
                         hint="resolve the fleet's secrets (gpufleet.secrets) before rendering")
    return secrets[name]


def _target_file(fleet: Fleet, host: PlannedHost) -> RenderedFile:
    units = [unit_name(s.name) for s in host.services]
    content = _template("gpufleet.target.j2").render(fleet=fleet.name, host=host.name, units=units)
    return RenderedFile(f"{UNIT_DIR}/{TARGET}", content)


def _plan_file(plan: Plan, host: PlannedHost) -> RenderedFile:
    content = json.dumps(host_plan(plan, host), indent=2, sort_keys=True) + "\n"
    return RenderedFile(f"{CONFIG_DIR}/plan.json", content)


def host_plan(plan: Plan, host: PlannedHost) -> dict[str, object]:
    """The host's slice of the plan, as validate reads it from /etc/gpufleet/plan.json."""
    fleet = plan.inventory.fleet
    data = host.to_dict()
    data["services"] = [_service_entry(s) for s in host.services]
    findings = [f.to_dict() for f in plan.findings if f.host == host.name]
    data.update({
        "fleet": fleet.name, "runtime": fleet.runtime, "vllm_version": fleet.vllm_version,
        "model_cache": fleet.model_cache, "start_order": start_order_groups(host),
        "target": TARGET, "findings": findings,
        "ok": not any(f["severity"] == "error" for f in findings),
    })
    return data


def _service_entry(ps: PlannedService) -> dict[str, object]:
    entry = ps.to_dict()
    entry.update({
        "unit": unit_name(ps.name), "env_file": env_file_path(ps.name),
        "health_url": f"http://127.0.0.1:{ps.service.port}{ps.service.health_path}",
        "hip_visible_devices": ",".join(str(g) for g in ps.gpus),
        "secret_env": sorted(ps.service.secrets),  # names only: values never leave the env file
    })
    return entry


# ---------------------------------------------------------------- templates and quoting


def templates_dir() -> Path:
    """`gpufleet/_templates` inside an installed wheel, else `<repo>/templates` in a checkout."""
    packaged = Path(__file__).parent / "_templates"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "templates"


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False,
    )
    env.filters["exec_quote"] = exec_quote
    env.filters["exec_lines"] = exec_lines
    return env


def _template(name: str) -> jinja2.Template:
    return _environment().get_template(name)


def exec_quote(word: str) -> str:
    """One argv word for an Exec*= line: `%` and `$` doubled (systemd expands both), quoted
    when it holds anything but plain characters."""
    escaped = word.replace("%", "%%").replace("$", "$$")
    if _SAFE_WORD.fullmatch(word):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_lines(args: tuple[str, ...]) -> str:
    """Arguments quoted, one `--flag value` per continued line, so a unit diff shows one flag."""
    lines: list[list[str]] = [[]]
    for arg in args:
        if arg.startswith("-") and lines[-1]:
            lines.append([])
        lines[-1].append(exec_quote(arg))
    return " \\\n    ".join(" ".join(words) for words in lines)


def _env_file_quote(value: str) -> str:
    """A value as systemd's EnvironmentFile= reads it back unchanged (see systemd.exec(5))."""
    if _SAFE_WORD.fullmatch(value):
        return value
    if "'" not in value:
        return f"'{value}'"  # single quotes: every character verbatim
    return '"' + re.sub(r'([\\"`$])', r"\\\1", value) + '"'
