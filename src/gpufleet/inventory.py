"""The placement inventory: hosts -> GPU indices -> services, typed and validated.

Every value keeps its file:line:column so an error says exactly where to look. Unknown keys are
errors: a typo such as `gpu_memory_utilisation` must not silently fall back to vLLM's default.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gpufleet.errors import InputError, InputErrors
from gpufleet.gpus import GPU_MODELS
from gpufleet.yamlsource import Located, Path_, load_file, load_text

NAME_RE = r"^[a-z0-9][a-z0-9-]{0,62}$"  # becomes part of a systemd unit name
ENV_RE = r"^[A-Z_][A-Z0-9_]*$"
SETTING_RE = r"^gpufleet_[a-z0-9_]+$"  # the prefixed knobs of group_data/all.py


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretSource(_Strict):
    """Where the controller reads a secret at deploy time; the value never enters the inventory."""

    env: str | None = Field(
        None, pattern=ENV_RE, description="environment variable on the controller"
    )
    file: str | None = Field(None, description="file on the controller holding the value")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret needs exactly one of `env:` or `file:`")
        return self


class RolloutPolicy(_Strict):
    batch_size: int = Field(1, ge=1, description="hosts changed at a time")
    health_timeout_s: float = Field(900, gt=0, description="how long a restarted service may take")
    max_failed_hosts: int = Field(1, ge=1, description="halt the rollout after this many failures")
    health_check: Literal["health", "request"] = Field(
        "request", description="'health': /health only; 'request': /health and a real request"
    )


class Fleet(_Strict):
    name: str = Field(pattern=NAME_RE)
    gpu: str = "mi300x"
    rocm_version: str = "6.4.1"
    vllm_version: str = "0.11.0"
    runtime: Literal["container", "venv"] = "container"
    container_engine: Literal["docker", "podman"] = "docker"
    image: str | None = None
    model_cache: str = "/var/lib/gpufleet/models"
    ssh_key: str | None = Field(None, description="private key for every host (default: agent)")
    ssh_known_hosts: str | None = Field(
        None, description="known_hosts file to check host keys against (default ~/.ssh/known_hosts)"
    )
    secrets: dict[str, SecretSource] = Field(default_factory=dict)
    settings: dict[Annotated[str, Field(pattern=SETTING_RE)], Any] = Field(
        default_factory=dict, description="deploy knobs (group_data/all.py), e.g. mirror URLs"
    )
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)  # type: ignore[arg-type]

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str) -> str:
        if v.lower() not in GPU_MODELS:
            raise ValueError(f"unknown GPU model {v!r}; known: {', '.join(GPU_MODELS)}")
        return v.lower()


PositiveInt = Annotated[int, Field(ge=1)]


class Service(_Strict):
    name: str = Field(pattern=NAME_RE)
    kind: Kind
    model: str | None = None
    revision: str | None = None
    model_path: str | None = Field(None, description="local folder with config.json (planning)")
    gpus: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    kv_cache_memory_bytes: int | None = Field(None, ge=1)
    memory_gib: float | None = Field(None, gt=0)
    max_model_len: PositiveInt | None = None
    tensor_parallel_size: PositiveInt = 1
    pipeline_parallel_size: PositiveInt = 1
    dtype: Literal["auto", "bfloat16", "float16", "half", "float32"] = "auto"
    quantization: str | None = None
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    max_num_seqs: PositiveInt | None = None
    max_num_batched_tokens: PositiveInt | None = None
    enforce_eager: bool = False
    command: list[str] | None = Field(None, description="custom kind: the program and its args")
    image: str | None = Field(None, description="container image (docling, custom)")
    health_path: str = "/health"
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(
        default_factory=dict, description="ENV_VAR: secret name from fleet.secrets"
    )

    @field_validator("env", "secrets")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.match(ENV_RE, key):
                raise ValueError(f"{key!r} is not an environment variable name (A-Z, 0-9, _)")
        return v


class Host(_Strict):
    address: str
    ssh_user: str = "root"
    ssh_port: int = Field(22, ge=1, le=65535)
    gpu: str | None = None
    gpu_count: int = Field(8, ge=1, le=64)
    gpu_memory_gib: dict[int, float] = Field(
        default_factory=dict, description="per-GPU override of the total memory, in GiB"
    )
    settings: dict[Annotated[str, Field(pattern=SETTING_RE)], Any] = Field(default_factory=dict)
    services: list[Service] = Field(default_factory=list)


class InventoryModel(_Strict):
    fleet: Fleet
    hosts: dict[str, Host] = Field(min_length=1)


class Inventory:
    """A validated inventory and where each of its values came from."""

    def __init__(self, model: InventoryModel, source: Located):
        self.model = model
        self.source = source
        self.fleet = model.fleet
        self.hosts = model.hosts
        self.path = Path(source.filename)

    def where(self, *path: str | int) -> str:
        return self.source.where(tuple(path))

    def service_where(self, host: str, index: int, key: str | None = None) -> str:
        path: Path_ = ("hosts", host, "services", index) + ((key,) if key else ())
        return self.source.where(path)


# ---------------------------------------------------------------- loading


def load(path: str | Path) -> Inventory:
    """Read, validate and cross-check an inventory file. Raises InputError(s) with locations."""
    return _build(load_file(path))


def loads(text: str, filename: str = "<inventory>") -> Inventory:
    return _build(load_text(text, filename))


def _build(source: Located) -> Inventory:
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
    problems = check_consistency(inventory)
    if problems:
        raise InputErrors(problems)
    return inventory


def _explain(err: Any, source: Located) -> InputError:
    """Turn one pydantic error into a located, human message."""
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        where = source.where((*loc, "<key>"))
        parent = _describe(loc[:-1], source.data)
        return InputError(
            f"unknown key {loc[-1]!r} in {parent}",
            where=where,
            hint=f"allowed keys: {', '.join(_allowed_keys(loc))}",
        )
    if kind == "missing":
        return InputError(f"missing required key {dotted}", where=source.where(loc[:-1]))
    value = err.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict | list) else ""
    return InputError(f"{dotted}: {err['msg']}{shown}", where=source.where(loc))


def _describe(loc: tuple[Any, ...], data: Any) -> str:
    """Name the mapping at `loc` as an operator would: 'service llama-8b', 'host gpu-01'."""
    if not loc:
        return "the top level"
    if len(loc) >= 4 and loc[-2] == "services" and isinstance(loc[-1], int):
        try:
            return f"service {data['hosts'][loc[-3]]['services'][loc[-1]]['name']}"
        except (KeyError, IndexError, TypeError):
            return f"service #{loc[-1] + 1}"
    if len(loc) == 2 and loc[0] == "hosts":
        return f"host {loc[1]}"
    return ".".join(str(p) for p in loc)


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


def check_consistency(inv: Inventory) -> list[InputError]:
    """What the schema alone cannot see: GPU indices, ports, names, kinds vs memory keys."""
    problems: list[InputError] = []
    for host_name, host in inv.hosts.items():
        ports: dict[int, str] = {}
        names: set[str] = set()
        gpu = (host.gpu or inv.fleet.gpu).lower()
        if gpu not in GPU_MODELS:
            problems.append(
                InputError(
                    f"host {host_name}: unknown GPU model {gpu!r}",
                    where=inv.where("hosts", host_name, "gpu"),
                    hint=f"known: {', '.join(GPU_MODELS)}",
                )
            )
        for index in host.gpu_memory_gib:
            if index >= host.gpu_count:
                problems.append(
                    InputError(
                        f"host {host_name}: gpu_memory_gib names GPU {index}, but the host has "
                        f"{host.gpu_count} GPUs (0-{host.gpu_count - 1})",
                        where=inv.where("hosts", host_name, "gpu_memory_gib", index),
                    )
                )
        for i, svc in enumerate(host.services):
            problems += _check_service(inv, host_name, host, i, svc)
            if svc.port in ports:
                problems.append(
                    InputError(
                        f"host {host_name}: port {svc.port} of service {svc.name} is already "
                        f"used by {ports[svc.port]}",
                        where=inv.service_where(host_name, i, "port"),
                        hint="every service on a host needs its own port",
                    )
                )
            ports[svc.port] = svc.name
            if svc.name in names:  # identical hosts may reuse names: units are per host
                problems.append(
                    InputError(
                        f"host {host_name}: service name {svc.name!r} is used twice",
                        where=inv.service_where(host_name, i, "name"),
                        hint="names identify systemd units and must be unique on a host",
                    )
                )
            names.add(svc.name)
    return problems


def _check_service(
    inv: Inventory, host_name: str, host: Host, i: int, svc: Service
) -> list[InputError]:
    problems: list[InputError] = []

    def bad(what: str, key: str | None, hint: str | None = None) -> None:
        problems.append(
            InputError(
                f"host {host_name}, service {svc.name}: {what}",
                where=inv.service_where(host_name, i, key),
                hint=hint,
            )
        )

    for gpu in svc.gpus:
        if gpu >= host.gpu_count:
            bad(
                f"GPU index {gpu} is out of range: the host has {host.gpu_count} GPUs "
                f"(0-{host.gpu_count - 1})",
                "gpus",
            )
    if len(set(svc.gpus)) != len(svc.gpus):
        bad(f"GPU list {svc.gpus} names a GPU twice", "gpus")
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
        if ranks != len(svc.gpus):
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
        for key in ("gpu_memory_utilization", "kv_cache_memory_bytes", "max_model_len"):
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
    return problems
