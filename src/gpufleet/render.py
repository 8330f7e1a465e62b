"""Render: the plan -> systemd units, env files and plan.json for each host.

A pure function of the plan (and, at deploy time, of the secret values handed in): no disk beyond
the templates, no network, no clock. Same inventory -> byte-identical files, so a deploy uploads
and restarts only what really changed. Every flag, GPU index, port and start order comes from the
plan; nothing here recomputes them.

Nothing reaches a template as raw text: command lines, list settings, env lines and one-line
values go through gpufleet.systemd's writers (the templates' filters), and every name, path and
account is checked here again (defence in depth beside the inventory's schema), so a hostile
inventory gives an InputError, never a unit that says more than the plan.
"""

from __future__ import annotations

import ipaddress
import json
import math
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from gpufleet import systemd
from gpufleet.errors import InputError, InputErrors
from gpufleet.gpu import Accelerator, accelerator
from gpufleet.host.layout import (
    CACHE_DIR,
    PLAN_FILE,
    TARGET,
    UNIT_DIR,
    container_name,
    env_file_path,
    unit_name,
)
from gpufleet.inventory import Fleet, Inventory, Kind
from gpufleet.plan import Finding, Plan, PlannedHost, PlannedService, start_order_groups
from gpufleet.settings import host_setting, setting_origin

ENGINES = {"docker": "/usr/bin/docker", "podman": "/usr/bin/podman"}
# GPU pinning (the accelerator's device variables) and the weights cache belong to the plan; a
# service's `env:` must not override them.
PLAN_ENV = ("HF_HOME", "HF_HUB_OFFLINE")

SERVICE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # in unit and file names
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")  # RFC 1123: a folder name
ACCOUNT = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # useradd's user and group names
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_./-]*")  # a host path: unquoted in unit text
_URL_PATH = re.compile(r"/[A-Za-z0-9_./~-]*")  # a health path: plain in a URL and in sh
_PLAIN_URL = re.compile(r"http://[0-9A-Za-z.:\[\]-]+:[0-9]{1,5}/[A-Za-z0-9_./~-]*")


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


def secret_marker(name: str) -> str:
    """What `gpufleet render` writes instead of a secret's value."""
    return f"<secret:{name}>"


# ---------------------------------------------------------------- the public entry points


def render_plan(
    plan: Plan, secrets: Mapping[str, str] | None = None
) -> dict[str, list[RenderedFile]]:
    """Every planned host's files, by host name."""
    return {host.name: render_host(plan, host.name, secrets) for host in plan.hosts}


def render_findings(plan: Plan) -> list[Finding]:
    """What render would refuse, as plan errors: `plan` runs every check `render` runs, so a
    plan that passes renders (secrets are not read here: their markers stand in)."""
    out: list[Finding] = []
    rendered: set[str] = set()  # hosts alike but for name and address render alike
    for planned in plan.hosts:
        alike = repr(planned.host.model_dump(exclude={"address"}, warnings=False))
        try:
            if alike in rendered:
                _check_fleet(plan.inventory, planned.name)  # the name is the host's own
                continue
            render_host(plan, planned.name)
            rendered.add(alike)
        except InputErrors as many:
            out += [_refused(planned.name, e) for e in many.errors]
        except InputError as exc:
            out.append(_refused(planned.name, exc))
    return out


def _refused(host: str, exc: InputError) -> Finding:
    where = f" ({exc.where})" if exc.where else ""
    return Finding("error", "render_refuses", f"{exc.what}{where}", host, None, None, exc.hint)


def render_host(
    plan: Plan, host: str, secrets: Mapping[str, str] | None = None
) -> list[RenderedFile]:
    """The host's units, env files, target and plan.json, sorted by path.

    `secrets` maps secret names (fleet.secrets) to values; None writes `<secret:NAME>` markers.
    Raises InputError for any value that systemd or the env file could not carry as it is.
    """
    planned = _planned_host(plan, host)
    inv = plan.inventory
    _check_fleet(inv, planned.name)
    try:
        files = [_target_file(inv.fleet, planned), _plan_file(plan, planned)]
        for ps in planned.services:
            _check_service(inv, planned.name, ps)
            files.append(_unit_file(inv, planned.name, ps))
            files.append(_env_file(inv, planned.name, ps, secrets))
    except ValueError as exc:  # a writer refused what a check above should have caught
        raise InputError(f"host {planned.name}: {exc}", where=str(inv.path)) from None
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
        args = ("run", "--host", ps.bind, "--port", str(svc.port), *svc.extra_args)
    else:
        command = svc.command or []
        program, args = command[0], (*command[1:], *svc.extra_args)
    return Launch(program, tuple(args), _image(inv, host, ps) if container else None)


def exec_start(inv: Inventory, host: str, ps: PlannedService) -> list[list[str]]:
    """The ExecStart= command line, one list of words per line of the unit (readability only):
    the program itself (venv), or the container engine running it (container)."""
    run, fleet, svc = launch(inv, host, ps), inv.fleet, ps.service
    gpu = host_accelerator(inv, host)
    if run.image is None:
        return [[run.program], *flag_lines(run.args)]
    cache, gpus = fleet.model_cache, ",".join(str(g) for g in ps.gpus)
    lines = [
        [ENGINES[fleet.container_engine], "run", "--rm", "--name", container_name(svc.name),
         "--pull=never"],
        ["--network=host", "--ipc=host"],
        *gpu.container_device_args(),
        [f"--env-file={env_file_path(svc.name)}"],
        ["-e", f"{gpu.visible_devices_env}={gpus}"],
        ["-v", f"{cache}:{cache}", "-e", f"HF_HOME={cache}"],
    ]
    if svc.kind.runs_vllm:
        lines.append(["-e", "HF_HUB_OFFLINE=1"])
    lines.append([f"--entrypoint={run.program}", run.image])
    return lines + flag_lines(run.args)


def exec_start_argv(inv: Inventory, host: str, ps: PlannedService) -> tuple[str, ...]:
    """What systemd executes for ExecStart=: the words of `exec_start`, in order."""
    return tuple(word for line in exec_start(inv, host, ps) for word in line)


def flag_lines(args: Sequence[str]) -> list[list[str]]:
    """Arguments grouped one `--flag value` per line, so a unit diff shows one flag."""
    lines: list[list[str]] = [[]]
    for arg in args:
        if arg.startswith("-") and lines[-1]:
            lines.append([])
        lines[-1].append(arg)
    return [line for line in lines if line]


def health_url(ps: PlannedService) -> str:
    """Where a check on the host reaches the service's health endpoint."""
    return f"http://{ps.probe_host}:{ps.service.port}{ps.service.health_path}"


def readiness_wait(url: str) -> list[str]:
    """ExecStartPost=: poll the health URL until it answers 200; give up when the service's own
    process ($MAINPID) is gone. The URL is built from checked parts: it sits in a shell script.
    Every 0.5 s: a rolling restart waits on this loop host after host, and one curl on loopback
    twice a second is nothing next to a model load."""
    if not _PLAIN_URL.fullmatch(url):
        raise ValueError(f"the health URL {url!r} is not plain")
    shell_url = f'"{url}"' if "[" in url else url  # an IPv6 literal: no glob for sh
    script = (f'until [ "$(/usr/bin/curl -s -o /dev/null -w %{{http_code}} --max-time 5 '
              f'{shell_url})"'
              " = 200 ]; do kill -0 $MAINPID 2>/dev/null || exit 1; sleep 0.5; done")
    return ["/bin/sh", "-c", script]


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


# ---------------------------------------------------------------- checks beyond the schema


def _where(inv: Inventory, host: str, service: str, key: str | None = None) -> str:
    """file:line of a service (or one of its keys) in the inventory."""
    index = [s.name for s in inv.hosts[host].services].index(service)
    return inv.service_where(host, index, key)


@contextmanager
def _syntax(what: str, where: str, hint: str | None = None) -> Iterator[None]:
    """A writer's refusal (ValueError) as an InputError about `what`, located at `where`."""
    try:
        yield
    except ValueError as exc:
        raise InputError(f"{what}: {exc}", where=where, hint=hint) from None


def _check_service(inv: Inventory, host: str, ps: PlannedService) -> None:
    """What unit text needs beyond the schema: plain names, words and values systemd reads back
    as written, env keys it owns, a plain health path."""
    svc, venv = ps.service, inv.fleet.runtime == "venv"

    def bad(what: str, key: str | None, hint: str) -> InputError:
        return InputError(f"service {svc.name}: {what}", where=_where(inv, host, svc.name, key),
                          hint=hint)

    def at(key: str) -> str:
        return _where(inv, host, svc.name, key)

    if not isinstance(svc.name, str) or not SERVICE_NAME.fullmatch(svc.name):
        raise bad(f"name {svc.name!r} is not a plain name", "name",
                  "lower-case letters, digits and dashes: it names the unit and the env file")
    reserved = {*host_accelerator(inv, host).device_env, *PLAN_ENV}
    clash = sorted(set(svc.env) & reserved) + sorted(set(svc.env) & set(svc.secrets))
    if clash:
        raise bad(f"env sets {', '.join(clash)}, which the plan or `secrets:` already decide",
                  "env", "GPUs come from `gpus:`, the weights cache from fleet.model_cache; "
                  "remove the key")
    for key, value in (*svc.env.items(), *((k, "x") for k in svc.secrets)):
        with _syntax(f"service {svc.name}: env {key}", at("env"),
                     "an env file holds one line per variable, named A-Z, 0-9, _"):
            systemd.env_file_line(key, value, literal=not venv)
    if not isinstance(svc.health_path, str) or not _URL_PATH.fullmatch(svc.health_path):
        raise bad(f"health_path {svc.health_path!r} is not a plain URL path", "health_path",
                  "use letters, digits and / . _ - ~ only, starting with /")
    if not isinstance(svc.port, int) or isinstance(svc.port, bool) or not 0 < svc.port < 65536:
        raise bad(f"port {svc.port!r} is not a TCP port", "port", "a number from 1 to 65535")
    if svc.model is not None:
        with _syntax(f"service {svc.name}: model", at("model"), "a Hugging Face id: org/name"):
            systemd.directive_value(svc.model)
    fields: dict[str, Sequence[str]] = {
        "extra_args": svc.extra_args, "command": svc.command or [],
        **{key: [value] for key in ("model", "revision", "quantization", "image")
           if isinstance(value := getattr(svc, key), str)},
    }
    for key, words in fields.items():  # the writers' own rules, with the key in the message
        with _syntax(f"service {svc.name}: {key}", at(key)):
            systemd.word_list(words)
    if svc.kind is Kind.CUSTOM and svc.command and venv:  # the unit's program (else an arg)
        with _syntax(f"service {svc.name}: command", at("command"),
                     "the first word is the program: an absolute path (or a plain name)"):
            systemd.exec_command(svc.command[:1])


def _check_fleet(inv: Inventory, host: str) -> None:
    fleet = inv.fleet
    if not _host_name(host):
        raise InputError(f"host name {host!r} is not an RFC 1123 host name or IP address",
                         where=inv.where("hosts", host),
                         hint="letters, digits, dashes and dots: it names the host's folder "
                              "and appears in its units")
    if not isinstance(fleet.name, str) or not SERVICE_NAME.fullmatch(fleet.name):
        raise InputError(f"fleet.name {fleet.name!r} is not a plain name",
                         where=inv.where("fleet", "name"),
                         hint="lower-case letters, digits and dashes")
    if not _host_path(fleet.model_cache):
        raise InputError(f"fleet.model_cache {fleet.model_cache!r} is not a plain path",
                         where=inv.where("fleet", "model_cache"), hint=_PATH_HINT)
    start_timeout_s(fleet)
    host_accelerator(inv, host)


def host_accelerator(inv: Inventory, host: str) -> Accelerator:
    """The accelerator of the host's GPUs (the host's `gpu`, else the fleet's)."""
    own = inv.hosts[host].gpu
    where = inv.where("hosts", host, "gpu") if own else inv.where("fleet", "gpu")
    return accelerator(own or inv.fleet.gpu, where=where)


def _host_name(name: object) -> bool:
    """An RFC 1123 host name or a plain IP address (no zone: `%` is a systemd specifier)."""
    if not isinstance(name, str) or "%" in name or "/" in name:
        return False
    if HOST_NAME.fullmatch(name):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


_PATH_HINT = "an absolute, normalised path of letters, digits and / . _ - only"


def _host_path(value: object) -> bool:
    """An absolute path that is plain (no blanks, quotes, `%`, `$`) and normalised (no `..`)."""
    return (isinstance(value, str) and bool(_PLAIN_PATH.fullmatch(value))
            and value == posixpath.normpath(value) and not value.startswith("//"))


def _setting(inv: Inventory, host: str, key: str, ok: Any, what: str) -> Any:
    """A deploy knob for the host, refused (naming the knob and where it is set) unless `ok`."""
    value = host_setting(inv, host, key)
    if ok(value):
        return value
    raise InputError(f"setting {key}: {value!r} is not {what}",
                     where=setting_origin(inv, host, key),
                     hint=f"{key} goes into the units of host {host}")


def _account(value: object) -> bool:
    return isinstance(value, str) and bool(ACCOUNT.fullmatch(value))


def _accounts(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(_account(v) for v in value)


def _paths(value: object) -> bool:
    return isinstance(value, list) and all(_host_path(v) for v in value)


def service_user(inv: Inventory, host: str) -> str:
    """User= (and Group=) of the venv units: never empty (that would run them as root)."""
    return str(_setting(inv, host, "gpufleet_service_user", _account,
                        "a user name (useradd: lower-case letters, digits, _ and -)"))


def gpu_groups(inv: Inventory, host: str) -> list[str]:
    """SupplementaryGroups= of the venv units: the groups that open /dev/kfd and /dev/dri."""
    return list(_setting(inv, host, "gpufleet_gpu_groups", _accounts,
                         "a non-empty list of group names"))


def extra_write_paths(inv: Inventory, host: str) -> list[str]:
    """Paths the sandboxed venv units may write besides the model cache (setting
    gpufleet_unit_read_write_paths, fleet-wide or per host): the lab's emulated GPU state."""
    return list(_setting(inv, host, "gpufleet_unit_read_write_paths", _paths,
                         f"a list of paths ({_PATH_HINT})"))


def _check_venv_dirs(inv: Inventory, host: str, ps: PlannedService) -> None:
    kind = ps.service.kind
    if kind.runs_vllm or kind is Kind.DOCLING:
        key = "gpufleet_venv_dir" if kind.runs_vllm else "gpufleet_docling_venv_dir"
        _setting(inv, host, key, _host_path, f"a plain path ({_PATH_HINT})")


# ---------------------------------------------------------------- the files


def start_timeout_s(fleet: Fleet) -> int:
    """TimeoutStartSec= is the rollout's health gate: a start (load + readiness wait) that takes
    longer has failed, systemd stops it, and the rollout rolls the host back. Rounded up: 0
    would mean no timeout at all."""
    seconds = fleet.rollout.health_timeout_s
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
            or not math.isfinite(seconds) or not 0 < seconds <= 10**9:
        raise InputError(f"fleet.rollout.health_timeout_s {seconds!r} is not a number of seconds",
                         where="fleet.rollout.health_timeout_s", hint="a positive number")
    return math.ceil(seconds)


def _unit_file(inv: Inventory, host: str, ps: PlannedService) -> RenderedFile:
    fleet, svc, venv = inv.fleet, ps.service, inv.fleet.runtime == "venv"
    gpus = ",".join(str(g) for g in ps.gpus)
    model = f" {svc.model}" if svc.model else ""
    context: dict[str, Any] = {
        "fleet": fleet.name, "target": TARGET, "after": [unit_name(n) for n in ps.start_after],
        "description": f"gpufleet {svc.name}: {svc.kind.value}{model} on GPU {gpus}, "
                       f"port {svc.port}",
        "exec_start": exec_start(inv, host, ps),
        "exec_start_post": [readiness_wait(health_url(ps))],
        "start_timeout_s": start_timeout_s(fleet),
    }
    if venv:
        _check_venv_dirs(inv, host, ps)
        context.update({
            "user": service_user(inv, host), "groups": gpu_groups(inv, host),
            "env_file": env_file_path(svc.name), "gpus": gpus, "model_cache": fleet.model_cache,
            "gpu_env": host_accelerator(inv, host).visible_devices_env,
            "offline": svc.kind.runs_vllm, "cache_dir": CACHE_DIR,
            "read_write_paths": [fleet.model_cache, *extra_write_paths(inv, host)],
        })
    else:
        engine, container = ENGINES[fleet.container_engine], container_name(svc.name)
        context.update({
            "docker": fleet.container_engine == "docker",
            "exec_start_pre": [[engine, "rm", "--force", container]],
            "exec_stop": [[engine, "stop", "--time=60", container]],
        })
    content = _template(f"{fleet.runtime}.service.j2").render(context)
    return RenderedFile(f"{UNIT_DIR}/{unit_name(svc.name)}", content)


def _env_file(
    inv: Inventory, host: str, ps: PlannedService, secrets: Mapping[str, str] | None
) -> RenderedFile:
    svc = ps.service
    # docker/podman read the file literally; systemd's EnvironmentFile= unquotes it.
    literal = inv.fleet.runtime != "venv"
    lines: dict[str, _Quoted] = {}
    for key, value in svc.env.items():
        with _syntax(f"service {svc.name}: env {key}", _where(inv, host, svc.name, "env")):
            lines[key] = _Quoted(systemd.env_file_line(key, value, literal=literal))
    for key, secret in svc.secrets.items():
        value = secret_marker(secret) if secrets is None else _secret(secrets, secret)
        # The message names the variable and the problem, never the value.
        with _syntax(f"secret {secret}", f"fleet.secrets.{secret}",
                     "a secret value is one line of text without NUL bytes"):
            lines[key] = _Quoted(systemd.env_file_line(key, value, literal=literal))
    content = _template("service.env.j2").render(
        name=svc.name, lines=[lines[key] for key in sorted(lines)])
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
    return RenderedFile(PLAN_FILE, content)


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
        "health_url": health_url(ps),
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
        finalize=_only_typed,
    )
    for name, writer in (("exec_command", command_line), ("words", systemd.word_list),
                         ("environment", systemd.environment_assignment),
                         ("text", systemd.directive_value)):
        env.filters[name] = _quoted(writer)
    return env


class _Quoted(str):
    """Text that a writer of gpufleet.systemd produced: the only text a template may print."""


def _quoted(writer: Any) -> Any:
    return lambda *args, **kwargs: _Quoted(writer(*args, **kwargs))


def _only_typed(value: object) -> object:
    """jinja's finalize: a template prints writer output and integers, never raw text."""
    if isinstance(value, _Quoted | int):
        return value
    raise TypeError(f"a template printed {value!r} without a systemd filter")


def _template(name: str) -> jinja2.Template:
    return _environment().get_template(name)


def command_line(lines: Sequence[Sequence[str]]) -> str:
    """The words of `lines` as one Exec*= command line, continued at each line start."""
    words = [word for line in lines for word in line]
    starts, count = set(), 0
    for line in lines[:-1]:
        count += len(line)
        starts.add(count)
    return systemd.exec_command(words, wrap=starts)


def exec_quote(word: str) -> str:
    """One argument word of an Exec*= line (systemd.exec_command's quoting)."""
    return systemd.exec_command(["true", word])[len("true "):]


def exec_lines(args: tuple[str, ...]) -> str:
    """Arguments quoted, one `--flag value` per continued line."""
    return command_line([["true"], *flag_lines(args)])[len("true \\\n    "):]
