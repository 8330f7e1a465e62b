"""The fleet plan: every instance's memory, every GPU's sum, start order, findings.

The plan is the single source of truth downstream: render, deploy and validate read the flags,
GPU indices, ports, start order and memory numbers decided here and never recompute them.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from gpufleet.bulk import paused_gc
from gpufleet.errors import GpufleetError, InputError
from gpufleet.gpu import Serving, vendor_rules
from gpufleet.gpu.models import GIB, gpu_model
from gpufleet.inventory import Host, Inventory, Kind, Service
from gpufleet.vllm import flags as vllm_flags
from gpufleet.vllm import knobs, versions
from gpufleet.vllm.memory import (
    Estimate,
    InstanceSpec,
    baseline_bytes,
    estimate,
    has,
    with_free_memory,
)
from gpufleet.vllm.models import ModelFacts, find_model, load_model_dir
from gpufleet.vllm.releases import parse_version
from gpufleet.vocabulary import image_parts

TIGHT_FREE_BYTES = 2 * GIB  # less free than this on a GPU leaves no room for driver growth
LOOPBACK = "127.0.0.1"
ANY_ADDRESS = "0.0.0.0"
MOVING_TAGS = frozenset({"latest", "main", "master", "nightly"})  # tags that are re-pushed


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | info
    code: str
    message: str
    host: str | None = None
    gpu: int | None = None
    service: str | None = None
    hint: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "code": self.code,
            "host": self.host,
            "gpu": self.gpu,
            "service": self.service,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class PlannedService:
    """One service as it will run: where, in which order, with which flags and memory."""

    host: str
    service: Service
    start_index: int  # position in the host's start order (0 first)
    start_after: tuple[str, ...]  # earlier services sharing a GPU: must be ready first
    footprint_bytes: int  # memory held on each of its GPUs once running
    estimate: Estimate | None  # vLLM kinds only
    vllm_args: tuple[str, ...]  # `vllm serve` arguments, vLLM kinds only
    model_len: int | None
    bind: str = LOOPBACK  # the address it listens on (vLLM and docling `--host`); see bind_address

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def probe_host(self) -> str:
        """Where a check on the host itself reaches the service: loopback when it listens on
        every address or on loopback, else the one address it listens on (URL form)."""
        address = ipaddress.ip_address(self.bind)
        if address.is_unspecified or address.is_loopback:
            return "[::1]" if address.version == 6 else LOOPBACK
        return f"[{self.bind}]" if address.version == 6 else self.bind

    @property
    def gpus(self) -> tuple[int, ...]:
        return tuple(self.service.on_gpus)

    def to_dict(self) -> dict[str, object]:
        svc, est = self.service, self.estimate
        return {
            "name": svc.name,
            "kind": svc.kind.value,
            "model": svc.model,
            "revision": svc.revision,
            "gpus": list(svc.on_gpus),
            "port": svc.port,
            "bind": self.bind,
            "start_index": self.start_index,
            "start_after": list(self.start_after),
            "footprint_gib": _gib(self.footprint_bytes),
            "gpu_memory_utilization": est.utilization if est else None,
            "max_model_len": self.model_len,
            "starts": est.starts if est else True,
            "error_kind": est.error_kind if est else None,
            "kv_cache_gib": _gib(est.kv_cache_bytes) if est else None,
            "kv_tokens": est.kv_tokens if est else None,
            "max_concurrency": est.max_concurrency if est else None,
            "vllm_args": list(self.vllm_args),
        }


@dataclass
class PlannedGpu:
    index: int
    total_bytes: int
    segments: list[tuple[str, int]] = field(default_factory=list)  # (service, bytes) in start order
    utilization_sum: float = 0.0

    @property
    def used_bytes(self) -> int:
        return sum(b for _, b in self.segments)

    @property
    def free_bytes(self) -> int:
        return self.total_bytes - self.used_bytes

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "total_gib": _gib(self.total_bytes),
            "planned_gib": _gib(self.used_bytes),
            "free_gib": _gib(self.free_bytes),
            "utilization_sum": round(self.utilization_sum, 4),
            "services": [{"name": n, "gib": _gib(b)} for n, b in self.segments],
        }


@dataclass
class PlannedHost:
    name: str
    host: Host
    gpu_model: str
    gpus: list[PlannedGpu]
    services: list[PlannedService]  # in start order

    def service(self, name: str) -> PlannedService:
        return next(s for s in self.services if s.name == name)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "address": self.host.address,
            "gpu_model": self.gpu_model,
            "gpus": [g.to_dict() for g in self.gpus],
            "services": [s.to_dict() for s in self.services],
        }


@dataclass
class Plan:
    inventory: Inventory
    hosts: list[PlannedHost]
    findings: list[Finding]

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    def host(self, name: str) -> PlannedHost:
        return next(h for h in self.hosts if h.name == name)

    def to_dict(self) -> dict[str, object]:
        return {
            "fleet": self.inventory.fleet.name,
            "vllm_version": self.inventory.fleet.vllm_version,
            "ok": not self.has_errors,
            "hosts": [h.to_dict() for h in self.hosts],
            "findings": [f.to_dict() for f in self.findings],
        }


def _gib(value: int) -> float:
    return round(value / GIB, 2)


# ---------------------------------------------------------------- building the plan

# Model facts already read in this run, by (model, revision, model_path): read once per plan,
# never across plans (a model folder or the HF cache may change between runs).
ModelMemo = dict[tuple[str | None, str | None, str | None], ModelFacts]



def build_plan(inventory: Inventory, *, only_hosts: Collection[str] | None = None) -> Plan:
    """Plan every host (or those `--host`/`--limit` chose, see gpufleet.commands.hosts): pure,
    apart from reading model configs from disk/catalog."""
    wanted = None if only_hosts is None else set(only_hosts)
    hosts, findings = [], []
    models: ModelMemo = {}  # a fleet names a few dozen models, 1,000s of times
    with paused_gc():
        for name, host in inventory.hosts.items():
            if wanted is None or name in wanted:
                planned, found = plan_host(inventory, name, host, models)
                hosts.append(planned)
                findings += found
    return Plan(inventory, hosts, release_findings(inventory) + findings)


def plan_host(
    inv: Inventory, name: str, host: Host, models: ModelMemo | None = None
) -> tuple[PlannedHost, list[Finding]]:
    """Simulate the host's start order GPU by GPU, as the instances would really start."""
    model_name = (host.gpu or inv.fleet.gpu).lower()
    total = gpu_model(model_name).total_bytes
    gpus = [
        PlannedGpu(i, int(host.gpu_memory_gib[i] * GIB) if i in host.gpu_memory_gib else total)
        for i in range(host.gpu_count)
    ]
    findings: list[Finding] = []
    services: list[PlannedService] = []
    for index, svc in enumerate(host.services):
        planned, found = _plan_service(inv, name, index, svc, gpus, services,
                                       {} if models is None else models)
        services.append(planned)
        findings += found
        for g in svc.on_gpus:
            gpus[g].segments.append((svc.name, planned.footprint_bytes))
            if planned.estimate:
                gpus[g].utilization_sum += planned.estimate.utilization
    findings += _gpu_findings(name, gpus) + _placement_findings(name, host, gpus, services)
    return PlannedHost(name, host, model_name, gpus, services), findings


def _plan_service(
    inv: Inventory,
    host: str,
    index: int,
    svc: Service,
    gpus: list[PlannedGpu],
    earlier: list[PlannedService],
    models: ModelMemo,
) -> tuple[PlannedService, list[Finding]]:
    after = tuple(p.name for p in earlier if set(p.gpus) & set(svc.on_gpus))
    bind = bind_address(inv, host, svc)
    exposure = _exposure_findings(inv, host, svc, bind)
    if not svc.kind.runs_vllm:
        footprint = int((svc.memory_gib or 0) * GIB)
        planned = PlannedService(host, svc, index, after, footprint, None, (), None, bind)
        return planned, exposure
    key = (svc.model, svc.revision, svc.model_path)
    facts = models.get(key) or models.setdefault(key, resolve_model(inv, host, index, svc))
    spec = instance_spec(inv, host, svc, facts, gpus)
    est = estimate(spec)
    args = vllm_args(inv, svc, spec, bind)
    planned = PlannedService(
        host, svc, index, after, est.used_bytes, est, args, spec.model_len, bind
    )
    found = _service_findings(inv, host, svc, spec, est) + _flag_findings(inv, host, svc, args)
    return planned, found + exposure


def _flag_findings(inv: Inventory, host: str, svc: Service, args: tuple[str, ...]
                   ) -> list[Finding]:
    """The unit's `vllm serve` words against the fleet's release: every flag must be one its
    parser has, with a value among its choices (vLLM would refuse to start otherwise)."""
    version = inv.fleet.vllm_version
    if not versions.known(version):
        return []
    words = list(args[2:])  # after `serve MODEL`
    gpu = svc.on_gpus[0] if len(svc.on_gpus) == 1 else None
    own = len(words) - len(svc.extra_args)
    return [Finding("error", "flag_not_in_release", p.message, host, gpu, svc.name,
                    p.hint if p.index >= own else f"{p.hint} (a flag gpufleet renders for "
                    f"kind {svc.kind.value}: use a release that has it)")
            for p in _release_problems(tuple(words), version)]


@functools.lru_cache(maxsize=4096)  # a fleet repeats the same command lines host after host
def _release_problems(words: tuple[str, ...], version: str
                      ) -> tuple[vllm_flags.FlagProblem, ...]:
    return tuple(vllm_flags.release_problems(words, versions.release(version)))


def bind_address(inv: Inventory, host: str, svc: Service) -> str:
    """The address a service listens on: its own `bind`, else its host's, else the fleet's.

    Unset everywhere, a service that requires an API key (VLLM_API_KEY, or
    DOCLING_SERVE_API_KEY for docling, in its `secrets` or `env`) listens on every address, so the
    fleet's load balancer reaches it; one without a key listens on loopback only: an
    unauthenticated model server is never exposed unless the inventory says so (and then the
    plan warns: exposed_without_api_key)."""
    explicit = svc.bind or inv.hosts[host].bind or inv.fleet.bind
    if explicit is not None:
        return explicit
    return ANY_ADDRESS if _has_api_key(svc) else LOOPBACK


def _has_api_key(svc: Service) -> bool:
    key = svc.kind.api_key_env
    return key is not None and (key in svc.secrets or key in svc.env)


def resolve_model(inv: Inventory, host: str, index: int, svc: Service) -> ModelFacts:
    """Model facts from the service's local folder, the HF cache or the bundled catalog."""
    return model_facts(inv, svc, inv.service_where(host, index, model_key(svc)))


def model_key(svc: Service) -> str:
    """The key that names a service's model: where a model error points."""
    return "model_path" if svc.model_path else "model"


def model_facts(inv: Inventory, svc: Service, where: str) -> ModelFacts:
    """resolve_model for a service anywhere in the file (`where`: its model key)."""
    try:
        if svc.model_path:
            folder = (inv.path.parent / svc.model_path).resolve()
            return load_model_dir(Path(folder), svc.model)
        return find_model(svc.model or "", svc.revision)
    except GpufleetError as exc:
        hint = _in_inventory_terms(getattr(exc, "hint", None))
        raise InputError(
            f"service {svc.name}: {getattr(exc, 'what', exc)}", where=where, hint=hint
        ) from None


def _in_inventory_terms(hint: str | None) -> str | None:
    """The models stage speaks `estimate`'s flags; in an inventory the same is a key."""
    if hint is None:
        return None
    hint = hint.replace("point --config at", "set the service's model_path: to")
    hint = hint.replace("point at its folder with --config DIR", "set the service's "
                        "model_path: to its folder")
    return hint.replace("use --config DIR (or model_path: in the inventory)",
                        "set the service's model_path:")


def instance_spec(
    inv: Inventory, host: str, svc: Service, facts: ModelFacts, gpus: list[PlannedGpu]
) -> InstanceSpec:
    """The instance as it will start: its GPUs' total and what earlier services left free."""
    mine = [gpus[g] for g in svc.on_gpus]
    total = min(g.total_bytes for g in mine)
    free_before = min(g.free_bytes for g in mine)  # the tightest rank decides
    vendor = gpu_model(_host_gpu(inv, host)).vendor
    spec = InstanceSpec(
        facts=facts,
        gpu_total_bytes=total,
        **knobs.spec_values(svc),
        vllm_version=inv.fleet.vllm_version,
        platform="rocm" if vendor == "amd" else "cuda",
    )
    return with_free_memory(spec, free_before - baseline_bytes(spec))


# ---------------------------------------------------------------- the flags the plan decides


def vllm_args(
    inv: Inventory, svc: Service, spec: InstanceSpec, bind: str = LOOPBACK
) -> tuple[str, ...]:
    """`vllm serve` arguments: always explicit utilization and max_model_len, because vLLM's
    defaults depend on its version and on the device (and would claim 92 % of an MI300X).
    `extra_args` come last; the inventory's load has checked them (gpufleet.vllm.flags): known
    flags only, none that the plan decides here."""
    args = ["serve", svc.model or "", "--host", bind, "--port", str(svc.port)]
    args += ["--served-model-name", svc.model or svc.name]
    if svc.revision:
        args += ["--revision", svc.revision]
    args += knobs.to_argv({**knobs.spec_values(svc), "gpu_memory_utilization": spec.utilization,
                           "max_model_len": spec.model_len})
    args += _runner_args(svc.kind, inv.fleet.vllm_version)
    return (*args, *svc.extra_args)


def _runner_args(kind: Kind, version: str) -> list[str]:
    """Pooling and transcription models: `--runner/--convert` since 0.10.1, `--task` before."""
    new = has(version, "runner_convert_flags")
    if kind is Kind.EMBED:
        return ["--runner", "pooling", "--convert", "embed"] if new else ["--task", "embed"]
    if kind is Kind.RERANK:
        return ["--runner", "pooling", "--convert", "classify"] if new else ["--task", "score"]
    if kind is Kind.WHISPER and not new:
        return ["--task", "transcription"]
    return []


# ---------------------------------------------------------------- findings


def _service_findings(
    inv: Inventory, host: str, svc: Service, spec: InstanceSpec, est: Estimate
) -> list[Finding]:
    out: list[Finding] = []

    def add(severity: str, code: str, message: str, hint: str | None = None) -> None:
        gpu = svc.on_gpus[0] if len(svc.on_gpus) == 1 else None
        out.append(Finding(severity, code, message, host, gpu, svc.name, hint))

    if not est.starts and est.error_kind:
        add("error", est.error_kind, est.error or "",
            _fix_hint(svc, spec, est, inv.hosts[host].gpu_count))
    limit = spec.facts.max_position_embeddings
    if svc.max_model_len and limit and svc.max_model_len > limit:
        add(
            "error",
            "max_model_len_above_model",
            f"max_model_len {svc.max_model_len} is above the model's limit {limit}; vLLM refuses "
            "a user-specified max_model_len greater than the derived one",
            f"use max_model_len <= {limit}",
        )
    if svc.gpu_memory_utilization is None and svc.kv_cache_memory_bytes is None:
        add(
            "warning",
            "default_utilization",
            f"gpu_memory_utilization not set: vLLM {inv.fleet.vllm_version} takes its default "
            f"{est.utilization} = {est.budget_bytes / GIB:.1f} GiB per GPU",
            "set gpu_memory_utilization explicitly",
        )
    if svc.max_model_len is None:
        add(
            "warning",
            "default_max_model_len",
            f"max_model_len not set: vLLM uses the model's {spec.model_len} tokens",
            "set max_model_len to what clients need",
        )
    if est.starts and svc.max_num_seqs is None and est.activation_bytes > 0.25 * est.budget_bytes:
        add(
            "warning",
            "default_batching",
            f"profiling with vLLM's default batch ({spec.batching[0]} tokens, "
            f"{spec.batching[1]} seqs for a {spec.gpu_total_bytes / GIB:.0f} GiB GPU) takes "
            f"{est.activation_bytes / GIB:.1f} GiB of a {est.budget_bytes / GIB:.1f} GiB budget",
            "set max_num_seqs and max_num_batched_tokens for small co-located models",
        )
    for code, message, hint in _scheduler_problems(svc, spec):
        add("error", code, message, hint)
    for message in _requirement_problems(svc, est):
        add("error", "requirement_unmet", message,
            "raise gpu_memory_utilization, or let `gpufleet place` size it (leave it unset)")
    out += _parallel_findings(host, svc, spec)
    out += _vendor_findings(inv, host, svc)
    if not (svc.revision and _COMMIT.fullmatch(svc.revision)):
        pinned = f"revision {svc.revision!r} is a branch or tag" if svc.revision else "no revision"
        add(
            "warning",
            "unpinned_revision",
            f"{pinned}: the weights downloaded and served can change under the same inventory",
            "set revision to the 40-hex commit hash of the model's files on the hub",
        )
    return out


_COMMIT = re.compile(r"[0-9a-f]{40}")


# ---------------------------------------------------------------- the fleet's vLLM and ROCm


def release_findings(inv: Inventory) -> list[Finding]:
    """Whether the fleet's vLLM release is one gpufleet has read, matches its images, has a
    ROCm build for the venv runtime and supports the hosts' ROCm."""
    version = inv.fleet.vllm_version
    release = versions.release(version)
    out = _version_known_findings(inv, version, release)
    out += _image_version_findings(inv, version)
    amd = any(gpu_model(_host_gpu(inv, h)).vendor == "amd" for h in inv.hosts)
    if amd and inv.fleet.runtime == "venv" and versions.known(version) and \
            not release.wheel_variant:
        out.append(Finding(
            "error", "venv_without_rocm_wheel",
            f"vLLM {version} publishes no ROCm wheel (its installation page names none): the "
            "venv would get PyPI's CUDA build, which does not run on AMD GPUs",
            hint="use runtime: container with vllm/vllm-openai-rocm, or vLLM >= 0.16"))
    minimum = release.host_rocm_min if versions.known(version) else None
    if amd and minimum and parse_version(inv.fleet.rocm_version) < parse_version(minimum):
        out.append(Finding(
            "warning", "rocm_pairing",
            f"vLLM {release.version} supports ROCm {minimum} or above (its installation page); "
            f"the hosts get ROCm {inv.fleet.rocm_version}",
            hint=f"set fleet.rocm_version to {minimum} or later"))
    return out


def _version_known_findings(inv: Inventory, version: str,
                            release: versions.Release) -> list[Finding]:
    out = []
    if not inv.vllm_version_set:
        image = inv.fleet.image and versions.vllm_version_of_image(inv.fleet.image)
        why = f"the tag of {inv.fleet.image}" if image else "the newest release gpufleet has read"
        out.append(Finding(
            "warning", "vllm_version_unset",
            f"fleet.vllm_version is not set: planned for vLLM {version}, {why}",
            hint="set fleet.vllm_version to the vLLM release the hosts run"))
    if not versions.known(version):
        out.append(Finding(
            "warning", "vllm_version_unread",
            f"vLLM {version} is older than the releases gpufleet has read from source "
            f"({versions.supported()[0]}-{versions.newest()}): planned from its rows for old "
            "releases, serve flags unchecked",
            hint=f"use vLLM {versions.newest()} or another release gpufleet knows"))
    elif not release.exact:
        out.append(Finding(
            "warning", "vllm_version_unread",
            f"vLLM {version} is not among the releases gpufleet has read from source: planned "
            f"as {release.version}, the nearest",
            hint=f"read it: python tools/read_vllm_source.py --versions {version}, or use "
            f"{release.version}"))
    return out


def _image_version_findings(inv: Inventory, version: str) -> list[Finding]:
    """A vLLM image whose tag names another release than the plan's: its flags and memory
    arithmetic would not be the ones planned."""
    if inv.fleet.runtime != "container":
        return []
    out, seen = [], set()
    images = [inv.fleet.image] + [s.image for h in inv.hosts.values() for s in h.services
                                  if s.kind.runs_vllm]
    for image in images:
        tagged = image and versions.vllm_version_of_image(image)
        if not tagged or image in seen or parse_version(tagged) == parse_version(version):
            continue
        seen.add(image)
        out.append(Finding(
            "error", "vllm_version_image",
            f"the image {image} is vLLM {tagged} but the plan is for vLLM {version} "
            "(fleet.vllm_version): flags and memory would not be the ones planned",
            hint=f"set fleet.vllm_version: \"{tagged}\", or use the image of "
            f"vLLM {version}"))
    return out


def _exposure_findings(inv: Inventory, host: str, svc: Service, bind: str) -> list[Finding]:
    """Network warnings: an unauthenticated service beyond loopback, a moving image tag."""
    out: list[Finding] = []
    gpu = svc.on_gpus[0] if len(svc.on_gpus) == 1 else None
    key = svc.kind.api_key_env
    if key is not None and not _has_api_key(svc) and not ipaddress.ip_address(bind).is_loopback:
        out.append(Finding(
            "warning", "exposed_without_api_key",
            f"listens on {bind}:{svc.port} without an API key: anyone who reaches the host can "
            "use it", host, gpu, svc.name,
            f"add secrets: {{{key}: <fleet secret>}}, or bind: 127.0.0.1 when only the host "
            "itself (or a proxy on it) serves clients",
        ))  # fmt: skip
    image = _image_of(inv, svc)
    if image is not None:
        tag, digest = image_parts(image)
        if digest is None and (tag is None or tag in MOVING_TAGS):
            shown = f"tag {tag!r}" if tag else "no tag (docker pulls 'latest')"
            out.append(Finding(
                "warning", "mutable_image_tag",
                f"image {image} has {shown}: hosts can run different builds of the same "
                "inventory", host, gpu, svc.name,
                "pin a release tag, ideally with its digest: name:tag@sha256:...",
            ))  # fmt: skip
    return out


def _image_of(inv: Inventory, svc: Service) -> str | None:
    """The image a service runs in the container runtime (as render picks it)."""
    if inv.fleet.runtime != "container":
        return None
    return svc.image or (inv.fleet.image if svc.kind is not Kind.DOCLING else None)


def _scheduler_problems(svc: Service, spec: InstanceSpec) -> list[tuple[str, str, str]]:
    """What vLLM's scheduler config refuses at startup: fewer batched tokens than sequences,
    and, without chunked prefill (pooling models never chunk), fewer than one request's
    max_model_len tokens. Only explicit values: vLLM's defaults satisfy both."""
    problems = []
    tokens, seqs = svc.max_num_batched_tokens, svc.max_num_seqs
    if tokens is not None and seqs is not None and tokens < seqs:
        problems.append((
            "batched_tokens_below_seqs",
            f"max_num_batched_tokens ({tokens}) must be greater than or equal to max_num_seqs "
            f"({seqs}): vLLM's scheduler refuses it at startup",
            f"set max_num_batched_tokens >= {seqs} or max_num_seqs <= {tokens}"))
    pooling = svc.kind in (Kind.EMBED, Kind.RERANK)
    if pooling and tokens is not None and tokens < spec.model_len:
        problems.append((
            "batched_tokens_below_max_model_len",
            f"max_num_batched_tokens ({tokens}) is smaller than max_model_len "
            f"({spec.model_len}): a {svc.kind.value} model has no chunked prefill, so vLLM's "
            "scheduler refuses it at startup",
            f"set max_num_batched_tokens >= {spec.model_len} or max_model_len <= {tokens}"))
    return problems


def _vendor_findings(inv: Inventory, host: str, svc: Service) -> list[Finding]:
    """The GPU vendor's serving rules (gpufleet.gpu), given the release's behaviours."""
    rules = vendor_rules(_host_gpu(inv, host))
    if rules is None:
        return []
    version = inv.fleet.vllm_version
    serving = Serving(
        kind=svc.kind.value, vllm_version=version,
        behaviours=frozenset(b for b in rules.release_behaviours if has(version, b)),
        env=dict(svc.env), attention_backend=vllm_flags.value_of(svc.extra_args,
                                                                 "--attention-backend"))
    gpu = svc.on_gpus[0] if len(svc.on_gpus) == 1 else None
    return [Finding(a.severity, a.code, a.message, host, gpu, svc.name, a.hint)
            for a in rules.serving_advice(serving)]


def _host_gpu(inv: Inventory, host: str) -> str:
    return (inv.hosts[host].gpu or inv.fleet.gpu).lower()


def _fix_hint(svc: Service, spec: InstanceSpec, est: Estimate, gpu_count: int) -> str:
    """What to change, in inventory keys; only suggestions that pass every check themselves
    (a divisible TP size, no more GPUs than the host has, a utilization that is free)."""
    if est.error_kind == "parallelism":
        heavy = est.weights_bytes >= est.budget_bytes
        return "; ".join([_parallel_hint(svc, spec.facts),
                          *([_too_big_hint(svc, spec, est, gpu_count)] if heavy else [])])
    if est.weights_bytes >= est.budget_bytes:
        return _too_big_hint(svc, spec, est, gpu_count)
    most = _most_free_util(spec)
    parts = []
    enough = est.min_util_for_max_model_len
    if enough is not None and enough <= most:
        parts.append(f"gpu_memory_utilization >= {enough:.2f} fits max_model_len "
                     f"{spec.model_len}")
    if est.max_model_len_fit:
        parts.append(f"max_model_len <= {est.max_model_len_fit} fits utilization "
                     f"{est.utilization:g}")
    if svc.max_num_seqs is None and est.activation_bytes > 0.25 * est.budget_bytes:
        tokens, seqs = spec.batching
        parts.append(f"vLLM's default batch ({tokens} tokens, {seqs} seqs) profiles "
                     f"{est.activation_bytes / GIB:.1f} GiB of activations: set max_num_seqs "
                     "and max_num_batched_tokens")
    if est.error_kind == "free_memory":
        parts = [f"only {most:.2f} of the GPU is free when it starts: set gpu_memory_utilization "
                 f"<= {most:.2f}" + (f" (>= {enough:.2f} holds max_model_len {spec.model_len})"
                                     if enough is not None and enough <= most else ""),
                 "or lower the utilization of a service started before it on this GPU"]
    return "; ".join(parts) or _too_big_hint(svc, spec, est, gpu_count)


def _most_free_util(spec: InstanceSpec) -> float:
    """The largest utilization (two decimals) that the free-memory check still passes."""
    free = (spec.free_bytes_at_start if spec.free_bytes_at_start is not None
            else spec.gpu_total_bytes - baseline_bytes(spec))
    return max(int(free / spec.gpu_total_bytes * 100) / 100, 0.0)


def _too_big_hint(svc: Service, spec: InstanceSpec, est: Estimate, gpu_count: int) -> str:
    """When the model does not fit its GPUs: the smallest valid split of the host's GPUs
    that would hold it, or a quantized checkpoint when none does."""
    ranks = svc.tensor_parallel_size * svc.pipeline_parallel_size
    room = est.budget_bytes * 0.8  # leave a fifth of each budget for activations and KV
    need = max(ranks + 1, -(-(est.weights_bytes * ranks) // int(room)))
    what = (f"the weights take {est.weights_bytes / GIB:.0f} GiB per GPU of a "
            f"{est.budget_bytes / GIB:.0f} GiB budget")
    for n in range(need, gpu_count + 1):
        split = valid_split(spec.facts, n)
        if split is not None:
            tp, pp = split
            shape = f"tensor_parallel_size {tp}" + (f" x pipeline_parallel_size {pp}"
                                                     if pp > 1 else "")
            return f"{what}: give it {n} GPUs ({shape}) or use a quantized checkpoint"
    return (f"{what}: no split of this host's {gpu_count} GPUs holds it; use a quantized "
            "checkpoint (or a host with more GPUs)")


def valid_split(facts: ModelFacts, n: int) -> tuple[int, int] | None:
    """The widest tensor-parallel split of n GPUs vLLM accepts (heads and KV heads divide),
    the rest as pipeline stages; None when none fits the layer count."""
    for tp in range(n, 0, -1):
        if n % tp or not _tp_ok(facts, tp) or n // tp > max(facts.num_layers, 1):
            continue
        return tp, n // tp
    return None


def _tp_ok(facts: ModelFacts, tp: int) -> bool:
    heads, kv = facts.num_attention_heads, facts.num_kv_heads
    return heads % tp == 0 and (kv % tp == 0 if kv >= tp else tp % kv == 0)


def _parallel_hint(svc: Service, facts: ModelFacts) -> str:
    n = len(svc.on_gpus)
    split = valid_split(facts, n) or (1, n)
    best = split[0]
    return (
        f"{facts.num_attention_heads} attention heads split over tensor_parallel_size {best} x "
        f"pipeline_parallel_size {n // best} on these {n} GPUs"
        + (" (pipeline parallelism splits layers, not heads)" if best < n else "")
    )


def _requirement_problems(svc: Service, est: Estimate) -> list[str]:
    """The service's own `kv_tokens` / `concurrency` against what its KV cache holds."""
    if not est.starts:  # the failed start is the finding already
        return []
    out = []
    if svc.kv_tokens is not None and est.kv_tokens < svc.kv_tokens:
        out.append(f"asks for kv_tokens {svc.kv_tokens:,}; its KV cache holds {est.kv_tokens:,}")
    if svc.concurrency is not None and est.max_concurrency < svc.concurrency:
        out.append(f"asks for concurrency {svc.concurrency} at max_model_len "
                   f"{est.max_model_len}; its KV cache holds {est.max_concurrency:g}")
    return out


def _placement_findings(host: str, spec: Host, gpus: list[PlannedGpu],
                        services: list[PlannedService]) -> list[Finding]:
    """`dedicated` services alone on their GPUs; `reserved` memory left free."""
    out = []
    for p in services:
        if p.service.dedicated:
            for g in p.gpus:
                others = [n for n, _ in gpus[g].segments if n != p.name]
                if others:
                    out.append(Finding("error", "dedicated_shared",
                                       f"{p.name} is dedicated but GPU {g} also runs "
                                       f"{', '.join(others)}", host, g, p.name,
                                       "move the others, or drop `dedicated`"))
    shares = spec.reserved if isinstance(spec.reserved, dict) else {}
    for gpu in gpus:
        keep = 1.0 if spec.reserved is True else shares.get(gpu.index, 0.0)
        if keep and gpu.segments and gpu.free_bytes < keep * gpu.total_bytes:
            out.append(Finding("warning", "reserved_used",
                               f"GPU {gpu.index} keeps {keep:.0%} reserved but only "
                               f"{gpu.free_bytes / GIB:.1f} GiB of {gpu.total_bytes / GIB:.0f} "
                               "GiB are free", host, gpu.index, None,
                               "move a service off it, or change `reserved`"))
    return out


def _parallel_findings(host: str, svc: Service, spec: InstanceSpec) -> list[Finding]:
    facts, tp = spec.facts, svc.tensor_parallel_size
    if tp > 1 and facts.num_kv_heads and tp > facts.num_kv_heads and not facts.is_mla:
        return [
            Finding(
                "info",
                "kv_heads_replicated",
                f"tensor_parallel_size {tp} exceeds the {facts.num_kv_heads} KV heads: each rank "
                "stores replicated heads, so KV capacity per GPU does not grow with TP",
                host,
                None,
                svc.name,
            )
        ]
    return []


def _gpu_findings(host: str, gpus: list[PlannedGpu]) -> list[Finding]:
    out = []
    for gpu in gpus:
        if gpu.free_bytes < 0:
            names = ", ".join(n for n, _ in gpu.segments)
            out.append(
                Finding(
                    "error",
                    "gpu_overcommitted",
                    f"GPU {gpu.index} is over-committed by {-gpu.free_bytes / GIB:.1f} GiB: "
                    f"{names} need {gpu.used_bytes / GIB:.1f} of {gpu.total_bytes / GIB:.1f} GiB",
                    host,
                    gpu.index,
                    None,
                    "lower gpu_memory_utilization of a service here or move one to another GPU",
                )
            )
        elif gpu.segments and gpu.free_bytes < TIGHT_FREE_BYTES:
            out.append(
                Finding(
                    "warning",
                    "gpu_tight",
                    f"GPU {gpu.index} keeps only {gpu.free_bytes / GIB:.2f} GiB free",
                    host,
                    gpu.index,
                    None,
                    "leave a couple of GiB for the driver and fragmentation",
                )
            )
    return out


def start_order_groups(host: PlannedHost) -> list[list[str]]:
    """Services in waves: each wave may start together (no GPU in common with a pending one)."""
    done: set[str] = set()
    waves: list[list[str]] = []
    pending = list(host.services)
    while pending:
        wave = [s for s in pending if set(s.start_after) <= done]
        waves.append([s.name for s in wave])
        done |= {s.name for s in wave}
        pending = [s for s in pending if s.name not in done]
        if not wave:  # pragma: no cover - start_after only names earlier services
            raise RuntimeError("start order has a cycle")
    return waves
