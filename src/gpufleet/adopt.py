"""Adopt a hand-built host: turn the vLLM processes running on it into inventory services.

`service_from_argv` is pure (a command line + environment → a service mapping);
`read_vllm_processes` reads the host over SSH. The result is YAML an operator reviews and
commits; planning it shows at once whether what runs today actually fits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gpufleet.errors import InputError
from gpufleet.gpu.amd import AMD
from gpufleet.host.layout import service_of
from gpufleet.host.ssh import Session
from gpufleet.host.systemctl import parse_show
from gpufleet.vllm import knobs
from gpufleet.vllm.models import catalog_entry

# vLLM flag -> (inventory key, type): the engine knobs' table, plus the service's own keys.
# Everything else is kept verbatim in extra_args.
FLAGS: dict[str, tuple[str, type]] = {
    **{name: (k.key, k.kind) for name, k in knobs.FLAGS.items() if k.kind is not bool},
    "--revision": ("revision", str),
    "--port": ("port", int),
}
IGNORED = {"--host", "--served-model-name", "--model", "--runner", "--convert", "--task"}
BOOLEANS = {k.flag: k.key for k in knobs.KNOBS if k.kind is bool}
KIND_BY_MODE = {
    "embed": "embed",
    "classify": "rerank",
    "score": "rerank",
    "transcription": "whisper",
}
GPU_ENV = AMD.device_env  # what pins a running vLLM's GPUs (import reads AMD hosts)
# set by gpufleet's own units (or meaningless to carry over): not part of a service's `env:`
UNIT_ENV = {*GPU_ENV, "HF_HOME", "HF_HUB_OFFLINE"}
# their values never leave the host: the FIND script blanks them, import references a secret
SECRET_ENV = ("VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


@dataclass(frozen=True)
class RunningVllm:
    """One vLLM server found on a host."""

    unit: str | None  # systemd unit without .service, or a container name
    argv: list[str]
    env: dict[str, str]
    cgroup: str = ""


def _split_flag(word: str) -> tuple[str, str | None]:
    flag, eq, value = word.partition("=")
    return (flag, value) if eq else (word, None)


def serve_args(argv: list[str]) -> tuple[str, list[str]]:
    """(model, remaining args) from `vllm serve MODEL …` or `… api_server --model MODEL …`."""
    if "serve" in argv:
        rest = argv[argv.index("serve") + 1 :]
        if rest and not rest[0].startswith("-"):
            return rest[0], rest[1:]
        argv = rest
    for i, word in enumerate(argv):
        flag, value = _split_flag(word)
        if flag == "--model":
            model = value if value is not None else argv[i + 1]
            drop = 1 if value is not None else 2
            return model, argv[:i] + argv[i + drop :]
    raise InputError(f"not a vLLM server command line: {' '.join(argv)[:120]}")


def service_from_argv(argv: list[str], env: dict[str, str], name: str) -> dict[str, Any]:
    """An inventory service that reproduces this vLLM command line."""
    model, args = serve_args(argv)
    svc: dict[str, Any] = {"name": name, "kind": "llm", "model": model}
    extra: list[str] = []
    mode = None
    i = 0
    while i < len(args):
        flag, value = _split_flag(args[i])
        takes_value = flag in FLAGS or flag in IGNORED
        if takes_value and value is None:
            value = args[i + 1] if i + 1 < len(args) else ""
            i += 1
        if flag in FLAGS:
            key, kind = FLAGS[flag]
            svc[key] = kind(value)
        elif flag in BOOLEANS:
            svc[BOOLEANS[flag]] = True
        elif flag in ("--convert", "--task"):
            mode = value
        elif flag not in IGNORED:
            extra.append(args[i])
        i += 1
    svc["kind"] = _kind(model, mode)
    svc["gpus"] = _gpus(env, svc)
    svc.setdefault("port", 8000)
    if extra:
        svc["extra_args"] = extra
    plain = {k: v for k, v in sorted(env.items()) if k not in UNIT_ENV and k not in SECRET_ENV}
    if plain:
        svc["env"] = plain
    secret_refs = {k: k.lower() for k in SECRET_ENV if k in env}
    if secret_refs:
        svc["secrets"] = secret_refs
    return svc


def _kind(model: str, mode: str | None) -> str:
    if mode in KIND_BY_MODE:
        return KIND_BY_MODE[mode]
    try:
        arch = str(catalog_entry(model).get("config", {}).get("architectures", [""])[0])
    except (InputError, IndexError, AttributeError):
        arch = ""
    return "whisper" if "Whisper" in arch else "llm"


def _gpus(env: dict[str, str], svc: dict[str, Any]) -> list[int]:
    for var in GPU_ENV:
        if env.get(var):
            return [int(g) for g in env[var].split(",") if g.strip().isdigit()]
    ranks = svc.get("tensor_parallel_size", 1) * svc.get("pipeline_parallel_size", 1)
    return list(range(ranks))


def service_name(unit: str | None, model: str) -> str:
    if unit and (service := service_of(unit)):
        return service
    base = unit or model.rsplit("/", 1)[-1]
    return re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")[:63] or "vllm"


# ---------------------------------------------------------------- reading a host


FIND = r"""for p in $(pgrep -f 'vllm serve|vllm.entrypoints.openai.api_server' | grep -vx $$); do
  [ "$(cat /proc/$p/comm 2>/dev/null)" = "docker" ] && continue
  ppid=$(awk '{print $4}' /proc/$p/stat 2>/dev/null)
  pgrep -f 'vllm serve|api_server' | grep -qx "$ppid" && continue
  echo "PID $p"; tr '\0' '\n' < /proc/$p/cmdline; echo "ENV"
  tr '\0' '\n' < /proc/$p/environ \
    | grep -E '^(HIP|ROCR|CUDA)_VISIBLE_DEVICES=|^(VLLM|HF|HSA|NCCL|RCCL|PYTORCH|TORCH|MIOPEN)_' \
    | sed -E 's/^(VLLM_API_KEY|HF_TOKEN|HUGGING_FACE_HUB_TOKEN)=.*/\1=<secret>/'
  echo "CGROUP $(tr '\n' ' ' < /proc/$p/cgroup)"; echo "END"
done"""


def _is_vllm(argv: list[str]) -> bool:
    if not argv or argv[0].rsplit("/", 1)[-1] in ("sh", "bash", "dash", "pgrep"):
        return False
    try:
        serve_args(argv)
    except (InputError, IndexError):
        return False
    return True


def parse_find_output(text: str) -> list[RunningVllm]:
    found = []
    for block in text.split("END\n"):
        lines = [ln for ln in block.splitlines() if ln]
        if not lines or not lines[0].startswith("PID "):
            continue
        env_at = lines.index("ENV") if "ENV" in lines else len(lines)
        argv = lines[1:env_at]
        if not _is_vllm(argv):  # the reading shell itself, or a process gone meanwhile
            continue
        env = dict(
            ln.split("=", 1)
            for ln in lines[env_at + 1 :]
            if "=" in ln and not ln.startswith("CGROUP")
        )
        cgroup = next((ln for ln in lines if ln.startswith("CGROUP ")), "")
        unit = re.search(r"/([^/\s]+)\.service", cgroup)
        found.append(RunningVllm(unit.group(1) if unit else None, argv, env, cgroup))
    return found


CONTAINER_SCOPE = re.compile(r"(?:docker|libpod)-([0-9a-f]{12,64})\.scope")


def with_container_units(found: list[RunningVllm], names: dict[str, str]) -> list[RunningVllm]:
    """Processes inside containers belong to the container's scope, not to the unit that ran
    `docker run`: name them after their container (gpufleet names it like the unit)."""
    out = []
    for proc in found:
        match = CONTAINER_SCOPE.search(proc.cgroup)
        if match and match.group(1)[:12] in names:
            proc = RunningVllm(names[match.group(1)[:12]], proc.argv, proc.env, proc.cgroup)
        out.append(proc)
    return out


def container_names(session: Session) -> dict[str, str]:
    """Short container id -> name, for docker and podman (units name containers gpufleet-<svc>)."""
    names: dict[str, str] = {}
    for engine in ("docker", "podman"):
        result = session.run(
            f"command -v {engine} >/dev/null && {engine} ps --no-trunc "
            "--format '{{.ID}} {{.Names}}'"
        )
        for line in result.stdout.splitlines():
            cid, _, name = line.partition(" ")
            if cid:
                names[cid[:12]] = name.strip()
    return names



def start_order(services: list[dict[str, Any]], after: dict[str, set[str]]) -> list[dict[str, Any]]:
    """Services in an order that keeps every systemd After= relation between them (the start
    order on shared GPUs); otherwise by lowest GPU, then port."""
    pending = sorted(services, key=lambda s: (min(s["gpus"], default=0), s["port"]))
    names = {s["name"] for s in services}
    ordered: list[dict[str, Any]] = []
    while pending:
        placed = {s["name"] for s in ordered}
        ready = next((s for s in pending
                      if (after.get(s["name"], set()) & names) <= placed), pending[0])
        ordered.append(ready)
        pending.remove(ready)
    return ordered


def read_after(session: Session, units: list[str]) -> dict[str, set[str]]:
    """unit (without .service) -> the units it is ordered after."""
    if not units:
        return {}
    out = session.run("systemctl show -p Id,After " + " ".join(f"{u}.service" for u in units))
    return {unit.removesuffix(".service"): {a.removesuffix(".service")
                                            for a in props.get("After", "").split()}
            for unit, props in parse_show(out.stdout).items()}


def read_vllm_processes(session: Session) -> list[RunningVllm]:
    found = parse_find_output(session.run(FIND).stdout)
    return with_container_units(found, container_names(session))
