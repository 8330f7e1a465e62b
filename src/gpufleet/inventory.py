"""The placement inventory: hosts -> GPU indices -> services, typed and validated.

Every value keeps its file:line:column so an error says exactly where to look. Unknown keys are
errors: a typo such as `gpu_memory_utilisation` must not silently fall back to vLLM's default.

Every value is hostile until the schema has typed it. Each one that reaches a host (a unit, an
env file, a path, a command line) has a declared type (gpufleet.vocabulary) with the characters
it allows: names are RFC 1123 labels, hosts RFC 1123 host names or IP literals, model ids and
revisions follow the Hugging Face grammar, env keys and secret names are POSIX names, users and
groups follow useradd, host paths are absolute and plain, numbers are strictly typed, finite and
bounded (`port: true` is no port), settings are typed per knob (gpufleet.settings). Only a
custom `command` and `extra_args` add behaviour to a unit, and a vLLM service's `extra_args` are
parsed against vLLM's flags (gpufleet.vllm.flags).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from gpufleet.bulk import paused_gc
from gpufleet.errors import InputError, InputErrors
from gpufleet.gpu.models import GPU_MODELS
from gpufleet.settings import SETTINGS, message, unknown_setting_hint
from gpufleet.vllm import flags as vllm_flags
from gpufleet.vllm import knobs, versions
from gpufleet.vllm.models import check_model_id, check_revision
from gpufleet.vocabulary import (
    ArgWord,
    ControllerFile,
    EnvValue,
    GroupName,
    HostName,
    HostPath,
    ImageRef,
    IpLiteral,
    Label,
    LocalDir,
    ModelId,
    Port,
    PosixName,
    Revision,
    RocmVersion,
    UnixName,
    UrlPath,
    VllmVersion,
    check_host_path,
    check_posix_name,
    shown,
)
from gpufleet.yamlsource import Located, Path_, load_file, load_text

NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"  # an RFC 1123 label: part of a unit name
ENV_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"  # a POSIX name
SETTING_RE = r"^gpufleet_[a-z0-9_]+$"  # the prefixed knobs of group_data/all.py

# Numbers: strictly typed (a YAML `true` is no count), finite and within sane bounds.
Count = Annotated[StrictInt, Field(ge=1, le=10_000)]
Parallel = Annotated[StrictInt, Field(ge=1, le=64)]
GpuIndex = Annotated[StrictInt, Field(ge=0, le=63)]
GiB = Annotated[float, Strict(), Field(gt=0, le=4096, allow_inf_nan=False)]
FreeGiB = Annotated[float, Strict(), Field(ge=0, le=4096, allow_inf_nan=False)]
Share = Annotated[float, Strict(), Field(gt=0, le=1, allow_inf_nan=False)]
Tokens = Annotated[StrictInt, Field(ge=1, le=1 << 40)]
Seconds = Annotated[float, Strict(), Field(gt=0, le=86_400, allow_inf_nan=False)]


class Kind(StrEnum):
    LLM = "llm"
    EMBED = "embed"
    RERANK = "rerank"
    WHISPER = "whisper"
    DOCLING = "docling"
    CUSTOM = "custom"

    @property
    def runs_vllm(self) -> bool:
        return self in (Kind.LLM, Kind.EMBED, Kind.RERANK, Kind.WHISPER)

    @property
    def api_key_env(self) -> str | None:
        """The variable that makes the server require an API key (None: unknown, custom)."""
        if self.runs_vllm:
            return "VLLM_API_KEY"
        return "DOCLING_SERVE_API_KEY" if self is Kind.DOCLING else None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretSource(_Strict):
    """Where the controller reads a secret at deploy time; the value never enters the inventory."""

    env: PosixName | None = Field(None, description="environment variable on the controller")
    file: ControllerFile | None = Field(None, description="file on the controller holding it")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret needs exactly one of `env:` or `file:`")
        return self


class RolloutPolicy(_Strict):
    batch_size: Count = Field(1, description="hosts changed at a time")
    health_timeout_s: Seconds = Field(900, description="how long a restarted service may take")
    max_failed_hosts: Count = Field(1, description="halt the rollout after this many failures")
    health_check: Literal["health", "request"] = Field(
        "request", description="'health': /health only; 'request': /health and a real request"
    )


class Placement(_Strict):
    """How `gpufleet place` chooses: see gpufleet.place."""

    objective: Literal["pack", "spread"] = Field(
        "pack", description="pack: fewest GPUs, whole GPUs left free; spread: balance free memory")
    margin: Annotated[float, Strict(), Field(ge=0, le=0.5, allow_inf_nan=False)] = Field(
        0.05, description="share of each budget kept over the predicted minimum KV need")
    headroom_gib: FreeGiB = Field(0.0, description="memory kept free on every GPU")


class Fleet(_Strict):
    name: Label
    gpu: StrictStr = "mi300x"
    rocm_version: RocmVersion = "6.4.1"
    # Unset: the version the image's tag names, else the newest release gpufleet has read
    # (the plan says which: vllm_version_unset).
    vllm_version: VllmVersion = Field(default_factory=lambda: versions.newest())
    runtime: Literal["container", "venv"] = "container"
    container_engine: Literal["docker", "podman"] = "docker"
    image: ImageRef | None = None
    model_cache: HostPath = "/var/lib/gpufleet/models"
    bind: IpLiteral | None = Field(
        None, description="address the services listen on (default: see PlannedService.bind)"
    )
    ssh_key: ControllerFile | None = Field(
        None, description="private key for every host (default: agent)"
    )
    ssh_known_hosts: ControllerFile | None = Field(
        None, description="known_hosts file to check host keys against (default ~/.ssh/known_hosts)"
    )
    secrets: dict[PosixName, SecretSource] = Field(default_factory=dict)
    settings: Annotated[dict[str, Any], SETTINGS] = Field(
        default_factory=dict, description="deploy knobs (group_data/all.py), e.g. mirror URLs"
    )
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)  # type: ignore[arg-type]
    placement: Placement = Field(default_factory=Placement)  # type: ignore[arg-type]

    @model_validator(mode="before")
    @classmethod
    def _version_from_image(cls, data: Any) -> Any:
        """A fleet that names a vLLM image but no vllm_version is planned as the image's."""
        if isinstance(data, dict) and data.get("vllm_version") is None:
            image = data.get("image")
            found = versions.vllm_version_of_image(image) if isinstance(image, str) else None
            if found is not None:
                data = {**data, "vllm_version": found}
        return data

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str) -> str:
        if v.lower() not in GPU_MODELS:
            raise ValueError(f"unknown GPU model {shown(v)}; known: {', '.join(GPU_MODELS)}")
        return v.lower()


# The vLLM engine knobs of a service (gpu_memory_utilization, max_model_len, parallelism, dtype,
# quantization, kv_cache_dtype, batching, block_size, ...): one row each in gpufleet.vllm.knobs,
# which gives each its type, bounds and default. For the type checker they are attributes of
# Service typed Any (__getattr__ below); at run time pydantic validates them as the table says.
if TYPE_CHECKING:
    _Knobs = _Strict
else:
    _Knobs = create_model("_Knobs", __base__=_Strict, **knobs.schema_fields())


class Service(_Knobs):
    name: Label
    kind: Kind
    model: ModelId | None = None
    revision: Revision | None = None
    model_path: LocalDir | None = Field(None, description="folder with config.json (planning)")
    # Unset (with gpu_memory_utilization, parallelism): `gpufleet place` chooses them.
    gpus: list[GpuIndex] | None = Field(None, min_length=1, max_length=64)
    port: Port
    bind: IpLiteral | None = Field(None, description="address it listens on (over host, fleet)")
    memory_gib: GiB | None = None
    command: list[ArgWord] | None = Field(
        None, min_length=1, max_length=1024, description="custom kind: the program and its args"
    )
    image: ImageRef | None = Field(None, description="container image (docling, custom)")
    health_path: UrlPath = "/health"
    extra_args: list[ArgWord] = Field(default_factory=list, max_length=1024)
    env: dict[PosixName, EnvValue] = Field(default_factory=dict)
    secrets: dict[PosixName, PosixName] = Field(
        default_factory=dict, description="ENV_VAR: secret name from fleet.secrets"
    )
    # Requirements (gpufleet place sizes and places from them; gpufleet plan checks them).
    concurrency: Count | None = Field(
        None, description="requests of max_model_len tokens the KV cache holds at once")
    kv_tokens: Tokens | None = Field(None, description="tokens the KV cache holds at least")
    replicas: Annotated[StrictInt, Field(ge=1, le=64)] = Field(
        1, description="copies `place` puts in different failure domains (spread)")
    spread: Literal["gpu", "host"] = Field("gpu", description="what replicas never share")
    dedicated: StrictBool = Field(False, description="nothing else on this service's GPUs")
    host: HostName | None = Field(None, description="top-level services: the host to place on")

    @property
    def on_gpus(self) -> list[int]:
        """The GPUs of a placed service: plan, render and deploy read placed inventories only
        (load() refuses a service without `gpus` unless it reads `place`'s input)."""
        if self.gpus is None:
            raise RuntimeError(f"service {self.name} has no GPUs yet: run gpufleet place")
        return self.gpus

    if TYPE_CHECKING:
        def __getattr__(self, name: str) -> Any: ...  # the knobs (see _Knobs)


class Host(_Strict):
    address: HostName
    ssh_user: UnixName = "root"
    ssh_port: Port = 22
    gpu: StrictStr | None = None
    gpu_count: Parallel = 8
    gpu_memory_gib: dict[GpuIndex, GiB] = Field(
        default_factory=dict, description="per-GPU override of the total memory, in GiB"
    )
    bind: IpLiteral | None = Field(None, description="address its services listen on")
    settings: Annotated[dict[str, Any], SETTINGS] = Field(default_factory=dict)
    reserved: StrictBool | dict[GpuIndex, Share] = Field(
        False, description="true: `place` puts nothing here; {gpu: share}: keep that share free")
    headroom_gib: FreeGiB | None = Field(None, description="over fleet.placement.headroom_gib")
    groups: list[GroupName] = Field(
        default_factory=list, max_length=64,
        description="host groups, as Ansible's: `--limit GROUP` selects their hosts")
    services: list[Service] = Field(default_factory=list)


class InventoryModel(_Strict):
    fleet: Fleet
    hosts: dict[HostName, Host] = Field(min_length=1)
    services: list[Service] = Field(
        default_factory=list, description="services with no host yet: `gpufleet place` puts them")


class Inventory:
    """A validated inventory and where each of its values came from."""

    def __init__(self, model: InventoryModel, source: Located,
                 overrides: dict[str, Any] | None = None):
        self.model = model
        self.source = source
        self.fleet = model.fleet
        self.hosts = model.hosts
        self.path = Path(source.filename)
        # Settings of this run over the inventory's own (`--set`, pyinfra data), already
        # type-checked by their caller: see gpufleet.settings.resolve.
        self.overrides: dict[str, Any] = dict(overrides or {})

    def with_overrides(self, overrides: dict[str, Any]) -> Inventory:
        """The same inventory with settings that beat its own, for every host."""
        return Inventory(self.model, self.source, {**self.overrides, **overrides})

    def where(self, *path: str | int) -> str:
        return self.source.where(tuple(path))

    @property
    def vllm_version_set(self) -> bool:
        """Whether the inventory itself names fleet.vllm_version (else it was derived)."""
        fleet = self.source.data.get("fleet") if isinstance(self.source.data, dict) else None
        return isinstance(fleet, dict) and fleet.get("vllm_version") is not None

    def service_where(self, host: str, index: int, key: str | int | None = None) -> str:
        path: Path_ = ("hosts", host, "services", index) + ((key,) if key is not None else ())
        return self.source.where(path)


# ---------------------------------------------------------------- loading


def load(path: str | Path, *, placing: bool = False) -> Inventory:
    """Read, validate and cross-check an inventory file. Raises InputError(s) with locations.

    `placing`: the inventory is `gpufleet place`'s input, so services may still lack `gpus`
    and the top-level `services:` list may hold services with no host yet."""
    with paused_gc():
        return _build(load_file(path), placing)


def loads(text: str, filename: str = "<inventory>", *, placing: bool = False) -> Inventory:
    with paused_gc():
        return _build(load_text(text, filename), placing)


def _build(source: Located, placing: bool = False) -> Inventory:
    if not isinstance(source.data, dict):
        raise InputError(
            "the inventory must be a mapping with `fleet:` and `hosts:`",
            where=source.where(()),
            hint="see the README's inventory example",
        )
    try:
        model = InventoryModel.model_validate(source.data)
    except ValidationError as exc:
        raise InputErrors([_explain(err, source) for err in exc.errors()]) from None
    inventory = Inventory(model, source)
    problems = check_consistency(inventory, placing=placing)
    if problems:
        raise InputErrors(problems)
    return inventory


def _explain(err: Any, source: Located) -> InputError:
    """Turn one pydantic error into a located, human message."""
    loc = tuple(err["loc"])
    kind = err["type"]
    if loc and loc[-1] == "[key]":  # a bad mapping key (host name, env name, secret name)
        loc = loc[:-1]
        return InputError(
            f"key {shown(loc[-1])} of {_describe(loc[:-1], source.data)}: "
            f"{message({**err, 'loc': ()})}",
            where=source.where((*loc, "<key>")),
        )
    if kind == "extra_forbidden":
        where = source.where((*loc, "<key>"))
        parent = _describe(loc[:-1], source.data)
        if loc[-2:-1] == ("settings",):
            return InputError(f"unknown setting {shown(loc[-1])} in {parent}", where=where,
                              hint=unknown_setting_hint(loc[-1]))  # fmt: skip
        return InputError(
            f"unknown key {shown(loc[-1])} in {parent}",
            where=where,
            hint=f"allowed keys: {', '.join(_allowed_keys(loc))}",
        )
    if kind == "missing":
        return InputError(f"missing required key {_dotted(loc)}", where=source.where(loc[:-1]))
    text = message({**err, "loc": ()})
    subject, rest = _subject(loc, source.data)
    field = _dotted(rest)
    if rest and not text.startswith(str(rest[0]).replace("_", " ")):
        text = f"{field}: {text}"
    return InputError(f"{subject}: {text}" if subject else text, where=source.where(loc))


def _subject(loc: tuple[Any, ...], data: Any) -> tuple[str, tuple[Any, ...]]:
    """Split a location into what an operator calls it ('service chat', 'host gpu-01') and the
    key path inside it."""
    for cut in range(len(loc), 3, -1):
        if loc[cut - 2] == "services" and isinstance(loc[cut - 1], int):
            return _describe(loc[:cut], data), loc[cut:]
    if len(loc) >= 2 and loc[0] == "hosts":
        return _describe(loc[:2], data), loc[2:]
    return "", loc


def _dotted(loc: tuple[Any, ...]) -> str:
    """A location as dotted keys; a key with odd characters is shown as its repr()."""
    return ".".join(str(p) if re.fullmatch(r"[A-Za-z0-9_.@:-]+", str(p)) else shown(p)
                    for p in loc)  # fmt: skip


def _describe(loc: tuple[Any, ...], data: Any) -> str:
    """Name the mapping at `loc` as an operator would: 'service llama-8b', 'host gpu-01'."""
    if not loc:
        return "the top level"
    if len(loc) >= 4 and loc[-2] == "services" and isinstance(loc[-1], int):
        try:
            name = data["hosts"][loc[-3]]["services"][loc[-1]]["name"]
        except (KeyError, IndexError, TypeError):
            return f"service #{loc[-1] + 1}"
        return f"service {_dotted((name,))}"
    if len(loc) == 2 and loc[0] == "hosts":
        return f"host {_dotted((loc[1],))}"
    return _dotted(loc)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the schema class at `loc`'s parent, for the 'did you mean' hint."""
    cls: type[BaseModel] = InventoryModel
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(str(part))
        if field is None:  # a dict key such as a host name: the value type is already set
            continue
        nested = _model_in(field.annotation)
        if nested is not None:
            cls = nested
    return sorted(cls.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------- cross-field checks


def check_consistency(inv: Inventory, *, placing: bool = False) -> list[InputError]:
    """What the schema alone cannot see: GPU indices, ports, names, kinds vs memory keys."""
    problems: list[InputError] = []
    for host_name, host in inv.hosts.items():
        problems += _check_host(inv, host_name, host)
        problems += [InputError(
            f"host {host_name}: group {group!r} has the name of a host", hint="rename the "
            "group: `--limit NAME` must mean one thing", where=inv.where("hosts", host_name,
                                                                        "groups", i))
            for i, group in enumerate(host.groups) if group in inv.hosts]
        ports: dict[int, str] = {}
        names: set[str] = set()
        for i, svc in enumerate(host.services):
            where = functools.partial(_located, inv, ("hosts", host_name, "services", i))
            problems += _check_service(inv, f"host {host_name}, service {svc.name}", host,
                                       where, svc, placing)
            if svc.replicas > 1 and svc.spread == "host":
                problems.append(InputError(
                    f"host {host_name}, service {svc.name}: replicas with `spread: host` cannot "
                    "sit under one host", where=where("spread"),
                    hint="move the service to the top-level `services:` list"))
            if svc.host is not None:
                problems.append(InputError(
                    f"host {host_name}, service {svc.name}: `host:` is for the top-level "
                    "`services:` list; this service already sits under a host",
                    where=where("host"), hint="remove `host:`"))
            if svc.port in ports:
                problems.append(
                    InputError(
                        f"host {host_name}: port {svc.port} of service {svc.name} is already "
                        f"used by {ports[svc.port]}",
                        where=where("port"),
                        hint="every service on a host needs its own port",
                    )
                )
            ports[svc.port] = svc.name
            if svc.name in names:  # identical hosts may reuse names: units are per host
                problems.append(
                    InputError(
                        f"host {host_name}: service name {svc.name!r} is used twice",
                        where=where("name"),
                        hint="names identify systemd units and must be unique on a host",
                    )
                )
            names.add(svc.name)
    return problems + _check_unplaced(inv, placing)


def _check_host(inv: Inventory, host_name: str, host: Host) -> list[InputError]:
    problems = []
    gpu = (host.gpu or inv.fleet.gpu).lower()
    if gpu not in GPU_MODELS:
        problems.append(
            InputError(
                f"host {host_name}: unknown GPU model {gpu!r}",
                where=inv.where("hosts", host_name, "gpu"),
                hint=f"known: {', '.join(GPU_MODELS)}",
            )
        )
    keyed = [("gpu_memory_gib", i) for i in host.gpu_memory_gib]
    if isinstance(host.reserved, dict):
        keyed += [("reserved", i) for i in host.reserved]
    for key, index in keyed:
        if index >= host.gpu_count:
            problems.append(
                InputError(
                    f"host {host_name}: {key} names GPU {index}, but the host has "
                    f"{host.gpu_count} GPUs (0-{host.gpu_count - 1})",
                    where=inv.where("hosts", host_name, key, index),
                )
            )
    return problems


PLACE_HINT = "run `gpufleet place INVENTORY --out placed.yml` and plan or deploy placed.yml"


def _check_unplaced(inv: Inventory, placing: bool) -> list[InputError]:
    """The top-level `services:` list: services `gpufleet place` still has to put on a host."""
    problems: list[InputError] = []
    names: set[str] = set()
    for i, svc in enumerate(inv.model.services):
        where = functools.partial(_located, inv, ("services", i))
        label = f"service {svc.name} (top-level services)"
        if not placing:
            problems.append(InputError(
                f"{label} has no host yet: `gpufleet plan` and `deploy` read placed inventories",
                where=where(None), hint=PLACE_HINT))
            continue
        host = None
        if svc.host is not None:
            host = inv.hosts.get(svc.host)
            if host is None:
                problems.append(InputError(
                    f"{label}: host {svc.host!r} is not in the inventory", where=where("host"),
                    hint=f"hosts: {', '.join(inv.hosts)}"))
        elif svc.gpus is not None:
            problems.append(InputError(
                f"{label}: `gpus` pins GPUs of a host, but no `host:` is given",
                where=where("gpus"), hint="add `host:` or remove `gpus`"))
        problems += _check_service(inv, label, host, where, svc, placing)
        if svc.name in names:
            problems.append(InputError(f"{label}: the name is used twice in `services:`",
                                       where=where("name"), hint="give each its own name"))
        names.add(svc.name)
    return problems


def _located(inv: Inventory, at: Path_, *keys: str | int | None) -> str:
    """Where a service (`at`) or one of its keys is: file:line:column."""
    return inv.source.where(at + tuple(k for k in keys if k is not None))


def _check_service(
    inv: Inventory, label: str, host: Host | None, where: Callable[..., str],
    svc: Service, placing: bool,
) -> list[InputError]:
    problems: list[InputError] = []

    def bad(what: str, key: str | None, hint: str | None = None) -> None:
        problems.append(InputError(f"{label}: {what}", where=where(key), hint=hint))

    if svc.gpus is None and not placing:
        bad("no `gpus`: gpufleet plan and deploy need every service on its GPUs", None,
            PLACE_HINT)
    for gpu in svc.gpus or []:
        if host is not None and gpu >= host.gpu_count:
            bad(
                f"GPU index {gpu} is out of range: the host has {host.gpu_count} GPUs "
                f"(0-{host.gpu_count - 1})",
                "gpus",
            )
    if svc.gpus is not None and len(set(svc.gpus)) != len(svc.gpus):
        bad(f"GPU list {svc.gpus} names a GPU twice", "gpus")
    problems += _check_requirements(svc, bad, placing)
    if svc.kind.runs_vllm:
        if not svc.model:
            bad(f"kind {svc.kind.value} runs vLLM and needs `model`", None)
        if svc.memory_gib is not None:
            bad(
                "memory_gib is for non-vLLM kinds (docling, custom); a vLLM service's memory "
                "is its gpu_memory_utilization budget",
                "memory_gib",
                "remove memory_gib and set gpu_memory_utilization",
            )
        ranks = svc.tensor_parallel_size * svc.pipeline_parallel_size
        if svc.gpus is not None and ranks != len(svc.gpus):
            bad(
                f"tensor_parallel_size x pipeline_parallel_size = {ranks}, but {len(svc.gpus)} "
                f"GPU(s) are listed {svc.gpus}",
                "gpus",
                "list exactly one GPU per rank, or change the parallel sizes",
            )
    else:
        if svc.memory_gib is None:
            bad(
                f"kind {svc.kind.value} does not run vLLM: declare its footprint with memory_gib",
                None,
            )
        for key in ("gpu_memory_utilization", "kv_cache_memory_bytes", "max_model_len",
                    "concurrency", "kv_tokens"):
            if getattr(svc, key) is not None:
                bad(f"{key} only applies to vLLM kinds (llm, embed, rerank, whisper)", key)
        if svc.kind is Kind.CUSTOM and not svc.command:
            bad("kind custom needs `command` (the program and its arguments)", None)
    for env_name, secret in svc.secrets.items():
        if secret not in inv.fleet.secrets:
            bad(
                f"secret {secret!r} (for {env_name}) is not defined under fleet.secrets",
                "secrets",
                f"defined: {', '.join(inv.fleet.secrets) or 'none'}",
            )
    if svc.kind.runs_vllm:
        for problem in vllm_flags.check(svc.extra_args):
            problems.append(
                InputError(
                    f"{label}: {problem.message}",
                    where=where("extra_args", problem.index),
                    hint=problem.hint,
                )
            )
    if svc.kind is Kind.CUSTOM:
        if svc.bind is not None:
            bad(
                "bind does not apply to kind custom: its command decides where it listens",
                "bind",
                "remove bind and pass the address in `command`",
            )
        if svc.command and (not svc.command[0] or svc.command[0].startswith("-")):
            bad(
                f"command starts with {svc.command[0]!r}: the first word is the program",
                "command",
                "give the program's path first, then its arguments",
            )
    return problems


def _check_requirements(svc: Service, bad: Callable[..., None], placing: bool) -> list[InputError]:
    """Replicas are copies `place` puts on GPUs it chooses; a placed inventory has none left."""
    if svc.replicas > 1:
        if svc.gpus is not None:
            bad(f"replicas: {svc.replicas} with pinned `gpus`: copies cannot share the same "
                "GPUs", "replicas", "remove `gpus` (place chooses them) or `replicas`")
        elif not placing:
            bad(f"replicas: {svc.replicas} is a requirement for `gpufleet place`", "replicas",
                PLACE_HINT)
    return []


# ---------------------------------------------------------------- paths on hosts


def marker_file(cache: str, model: str, revision: str | None) -> str:
    """The completion marker of a model download in the model cache, built only from validated
    names: a readable slug of the model id plus a short hash of id and revision, so neither
    value can add a path component or traverse (`..`)."""
    check_host_path(cache)
    check_model_id(model)
    if revision is not None:
        check_revision(revision)
    digest = hashlib.sha256(f"{model}\0{revision or 'main'}".encode()).hexdigest()[:16]
    return f"{cache}/.gpufleet/{model.replace('/', '--')}-{digest}.complete"


def token_file(state_dir: str, secret: str) -> str:
    """The root-only file holding a hub token on a host: `<state_dir>/<secret>.token`, where the
    secret name is a POSIX name (no '/', no '.')."""
    check_host_path(state_dir)
    check_posix_name(secret)
    return f"{state_dir}/{secret}.token"


# ---------------------------------------------------------------- --limit


LIMIT_HELP = ("only the hosts PATTERN names, as Ansible's --limit: host names, groups and globs "
              "(gpu-0*), comma-separated; !X leaves X out, &X keeps only what X also names")


def select_hosts(inv: Inventory, pattern: str) -> list[str]:
    """The hosts `--limit PATTERN` names, in inventory order: the union of the plain terms (all
    hosts when there are only `!`/`&` terms), narrowed by each `&` term, minus each `!` term.
    A term naming nothing is an error: a typo must not quietly shrink (or empty) a rollout."""
    terms = [t.strip() for t in re.split(r"[,:]", pattern) if t.strip()]
    if not terms:
        raise InputError("--limit: empty pattern", hint=LIMIT_HELP)
    plain = [t for t in terms if t[0] not in "!&"]
    chosen = set().union(*(_matching(inv, t) for t in plain)) if plain else set(inv.hosts)
    for term in terms:
        if term[0] == "&":
            chosen &= _matching(inv, term[1:])
        elif term[0] == "!":
            chosen -= _matching(inv, term[1:])
    if not chosen:
        raise InputError(f"--limit {pattern!r} leaves no host", hint=LIMIT_HELP)
    return [name for name in inv.hosts if name in chosen]


def _matching(inv: Inventory, term: str) -> set[str]:
    """Hosts a term names: a host, a group, or a glob over both (fnmatch, case-sensitive)."""
    found = {name for name, host in inv.hosts.items()
             if fnmatch.fnmatchcase(name, term)
             or any(fnmatch.fnmatchcase(g, term) for g in host.groups)}
    if not found:
        groups = sorted({g for h in inv.hosts.values() for g in h.groups})
        raise InputError(
            f"--limit: {term!r} names no host or group",
            hint=f"hosts: {', '.join(list(inv.hosts)[:10])}"
            f"{' …' if len(inv.hosts) > 10 else ''}; groups: {', '.join(groups) or 'none'}")
    return found
