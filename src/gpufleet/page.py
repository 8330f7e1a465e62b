"""The configurator page: the plan (and, for `status`, what the GPUs measured) as one HTML file.

A pure stage: a Plan (and readings) in, the text of one self-contained page out — inline CSS, one
inline script, the data as JSON; no network, no clock. Per host one stacked bar per GPU (a
segment per service, split into weights, KV cache, activation/graphs and baseline, then the free
remainder; the measured use drawn over it), hover details, the findings with their fixes and a
fleet summary. Past OPEN_HOSTS hosts every host starts collapsed to one row, and a filter finds
hosts by name.

Every value from the inventory is hostile: the template autoescapes everything, no event handler
is built from data, the JSON for the script has `<`, `>` and `&` escaped, and the page's
Content-Security-Policy allows nothing from the network and no script but its own (by hash).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from gpufleet.gpu.models import GIB
from gpufleet.plan import Finding, Plan, PlannedGpu, PlannedHost, PlannedService
from gpufleet.render import templates_dir
from gpufleet.validate import HostReading, compare, host_rows

TEMPLATE = "configurator.html.j2"
SCRIPT = "configurator.js"  # inlined, and allowed by the page's CSP by its hash alone
OPEN_HOSTS = 3  # hosts shown open; a host's bars and table fill about a screen
# One colour per service of a host, in start order; never red, which means an error here.
PALETTE = ("#0e7490", "#a21caf", "#15803d", "#b45309", "#1d4ed8", "#db2777", "#4d7c0f",
           "#7c3aed")
SEVERITIES = ("error", "warning", "info")
# The parts of a service's footprint, as drawn left to right (key, label).
PARTS = (("weights", "weights"), ("kv", "KV cache"), ("activation", "activation/graphs"),
         ("baseline", "baseline"), ("other", "rest of the budget"), ("memory", "declared memory"))
PART_LABELS = dict(PARTS)


def plan_page(plan: Plan) -> str:
    """`gpufleet plan --html`: the plan of every host."""
    return _page(plan, None)


def status_page(plan: Plan, readings: Mapping[str, HostReading]) -> str:
    """`gpufleet status --html`: the plan with each GPU's measured use drawn over it."""
    return _page(plan, readings)


def footprint_parts(svc: PlannedService) -> list[tuple[str, int]]:
    """The service's footprint on each of its GPUs as (part key, bytes), summing exactly to
    `footprint_bytes`. Parts are taken in the order vLLM allocates them (baseline, weights,
    activation/graphs, KV) and clipped at the footprint (an instance that fails); what the
    budget holds beyond them (the device-wide charge for memory in use at start) is `other`."""
    est = svc.estimate
    if est is None:
        return [("memory", svc.footprint_bytes)] if svc.footprint_bytes else []
    wanted = [("baseline", est.baseline_bytes), ("weights", est.weights_bytes),
              ("activation", est.activation_bytes + est.non_torch_bytes + est.cudagraph_bytes),
              ("kv", max(est.kv_cache_bytes, 0))]
    left, taken = svc.footprint_bytes, {}
    for key, size in wanted:
        taken[key] = min(max(size, 0), left)
        left -= taken[key]
    taken["other"] = left
    return [(key, taken[key]) for key, _ in PARTS if taken.get(key)]


def script_json(data: object) -> Markup:
    """JSON safe inside a <script> element: no `</script>`, `<!--` or entity can appear."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


# ---------------------------------------------------------------- the view of the plan


def _page(plan: Plan, readings: Mapping[str, HostReading] | None) -> str:
    by_host: dict[str, list[Finding]] = {h.name: [] for h in plan.hosts}
    for f in plan.findings:
        by_host.get(f.host or "", []).append(f)
    hosts = [_host(i, h, by_host[h.name], None if readings is None else readings.get(h.name))
             for i, h in enumerate(plan.hosts)]
    fleet_findings = [f for f in plan.findings if f.host not in by_host]
    host_findings = [f for h in hosts for f in h["finding_objects"]]
    script = Markup(_source(SCRIPT))
    return _environment().get_template(TEMPLATE).render(
        title=f"gpufleet {'status' if readings is not None else 'plan'}: "
              f"{plan.inventory.fleet.name}",
        mode="status" if readings is not None else "plan",
        fleet=plan.inventory.fleet.name,
        vllm_version=plan.inventory.fleet.vllm_version,
        summary=_summary(plan, hosts, fleet_findings, readings),
        hosts=hosts,
        open_all=len(hosts) <= OPEN_HOSTS,
        open_hosts=OPEN_HOSTS,
        fleet_findings=[_finding(f) for f in _ordered(fleet_findings)],
        grouped=_grouped_findings(host_findings) if len(hosts) > 1 else [],
        parts=[(k, label) for k, label in PARTS],
        palette=PALETTE,
        data=script_json({"hosts": [h["data"] for h in hosts], "openHosts": OPEN_HOSTS}),
        script=script,
        script_hash=_hash(str(script)),
    )


def _host(index: int, host: PlannedHost, planned: list[Finding],
          reading: HostReading | None) -> dict[str, Any]:
    colors = {s.name: PALETTE[i % len(PALETTE)] for i, s in enumerate(host.services)}
    measured = _measured(reading)
    rows = {r["service"]: r for r in host_rows(host, reading)} if reading else {}
    found = planned + (compare(host, reading) if reading else [])  # status: vs the reading
    services = [_service(index, i, s, colors[s.name], rows.get(s.name))
                for i, s in enumerate(host.services)]
    counts = Counter(f.severity for f in found)
    return {
        "index": index,
        "name": host.name,
        "address": host.host.address,
        "gpu_model": host.gpu_model,
        "gpus": [_gpu(index, host, g, colors,
                      _NO_READING if reading is None else measured.get(g.index))
                 for g in host.gpus],
        "services": services,
        "planned_gib": _gib(sum(g.used_bytes for g in host.gpus)),
        "total_gib": _gib(sum(g.total_bytes for g in host.gpus)),
        "errors": counts["error"],
        "warnings": counts["warning"],
        "error": reading.error if reading else None,
        "findings": [_finding(f) for f in _ordered(found)],
        "finding_objects": found,
        "data": {"name": host.name, "services": [s["data"] for s in services]},
    }


_NO_READING = object()  # the plan page: nothing measured, nothing to say about it


def _measured(reading: HostReading | None) -> dict[int, int | None]:
    """VRAM used per GPU as read; a GPU the reading lacks, or gives no figure for, is None."""
    if reading is None:
        return {}
    gpus = reading.snapshot.gpus if reading.snapshot else []
    return {g.index: g.vram_used_bytes for g in gpus}


def _gpu(host_index: int, host: PlannedHost, gpu: PlannedGpu, colors: dict[str, str],
         measured: object) -> dict[str, Any]:
    used = measured if isinstance(measured, int) else 0
    scale = max(gpu.total_bytes, gpu.used_bytes, used, 1)
    by_name = {s.name: (i, s) for i, s in enumerate(host.services)}
    segments, left = [], 0
    for name, size in gpu.segments:
        i, svc = by_name[name]
        parts, inner = [], 0
        for key, part in footprint_parts(svc):
            parts.append({"key": key, "label": PART_LABELS[key], "gib": _gib(part),
                          "left": _pct(inner, size), "width": _pct(part, size)})
            inner += part
        segments.append({"name": name, "ref": f"{host_index}:{i}", "color": colors[name],
                         "starts": svc.estimate.starts if svc.estimate else True,
                         "bytes": size, "gib": _gib(size), "left": _pct(left, scale),
                         "width": _pct(size, scale), "parts": parts})
        left += size
    free = max(gpu.free_bytes, 0)
    return {
        "index": gpu.index,
        "segments": segments,
        "total_gib": _gib(gpu.total_bytes),
        "planned_gib": _gib(gpu.used_bytes),
        "free_gib": _gib(gpu.free_bytes),
        "free_left": _pct(left, scale),
        "free_width": _pct(free, scale),
        "over": gpu.free_bytes < 0,
        "utilization_sum": f"{gpu.utilization_sum:.2f}",
        "fill": _pct(min(gpu.used_bytes, gpu.total_bytes), gpu.total_bytes or 1),
        "measured": None if measured is _NO_READING else measured,
        "read": measured is not _NO_READING,
        "measured_gib": _gib(used) if isinstance(measured, int) else None,
        "measured_width": _pct(used, scale),
    }


def _service(host_index: int, index: int, svc: PlannedService, color: str,
             row: dict[str, Any] | None) -> dict[str, Any]:
    est, kind = svc.estimate, svc.service.kind.value
    pooling = kind in ("embed", "rerank")  # no KV cache worth showing for pooling models
    view = {
        "start": svc.start_index + 1,
        "name": svc.name,
        "kind": kind,
        "model": svc.service.model,
        "revision": svc.service.revision,
        "gpus": ",".join(map(str, svc.gpus)),
        "port": svc.service.port,
        "util": f"{est.utilization:g}" if est else None,
        "gib": _gib(svc.footprint_bytes),
        "max_model_len": svc.model_len,
        "kv_gib": _gib(est.kv_cache_bytes) if est and not pooling else None,
        "kv_tokens": f"{est.kv_tokens:,}" if est and not pooling else None,
        "concurrency": f"{est.max_concurrency:.1f}×" if est and not pooling else None,
        "after": list(svc.start_after),
        "starts": est.starts if est else True,
        "error_kind": est.error_kind if est else None,
        "flags": shlex.join(["vllm", *svc.vllm_args]) if svc.vllm_args else None,
        "parts": [[PART_LABELS[k], _gib(b)] for k, b in footprint_parts(svc)],
        "color": color,
        "ref": f"{host_index}:{index}",
    }
    if row is not None:
        total = row["measured_gib"]  # summed over its GPUs, or None: not measured
        view.update(state=row["state"], uptime_s=row["uptime_s"], healthy=row["healthy"],
                    measured_gib=None if total is None else f"{total / len(svc.gpus):.1f}")
    return {**view, "data": {k: v for k, v in view.items() if k not in ("color", "ref")}}


def _summary(plan: Plan, hosts: list[dict[str, Any]], fleet_findings: list[Finding],
             readings: Mapping[str, HostReading] | None) -> dict[str, Any]:
    gpus = [g for h in plan.hosts for g in h.gpus]
    used = sum(g.used_bytes for g in gpus)
    total = sum(g.total_bytes for g in gpus)
    kinds = Counter(s.service.kind.value for h in plan.hosts for s in h.services)
    models = Counter(h.gpu_model for h in plan.hosts for _ in h.gpus)
    severities = Counter(f.severity for f in fleet_findings)
    summary: dict[str, Any] = {
        "hosts": len(plan.hosts),
        "gpus": len(gpus),
        "gpu_models": sorted(models.items()),
        "services": sum(kinds.values()),
        "kinds": sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])),
        "planned_gib": _gib(used),
        "free_gib": _gib(total - used),
        "total_gib": _gib(total),
        "planned_pct": f"{used / max(total, 1):.0%}",
        "errors": sum(h["errors"] for h in hosts) + severities["error"],
        "warnings": sum(h["warnings"] for h in hosts) + severities["warning"],
        "hosts_with_findings": sum(1 for h in hosts if h["errors"] or h["warnings"]),
    }
    summary["ok"] = not summary["errors"]
    if readings is not None:
        measured = [g["measured"] for h in hosts for g in h["gpus"]]
        states = [s.get("state") for h in hosts for s in h["services"]]
        summary.update(
            measured_gib=_gib(sum(m for m in measured if isinstance(m, int))),
            unmeasured_gpus=sum(1 for m in measured if not isinstance(m, int)),
            active=sum(1 for s in states if s == "active"),
            unreachable=sum(1 for h in hosts if h["error"]),
        )
    return summary


def _finding(f: Finding) -> dict[str, Any]:
    where = "/".join(p for p in (f.host, None if f.gpu is None else f"gpu{f.gpu}", f.service)
                     if p)
    return {"severity": f.severity, "code": f.code, "where": where, "message": f.message,
            "hint": f.hint}


def _ordered(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity)
                  if f.severity in SEVERITIES else len(SEVERITIES))


def _grouped_findings(findings: list[Finding]) -> list[dict[str, Any]]:
    """Findings that differ only in their host, once each with the hosts they are on."""
    groups: dict[Finding, list[str]] = {}
    for f in _ordered(findings):
        groups.setdefault(replace(f, host=None), []).append(f.host or "")
    return [{**_finding(f), "hosts": hosts[:3], "more": max(len(hosts) - 3, 0),
             "count": len(hosts)} for f, hosts in groups.items()]


def _pct(part: int, whole: int) -> str:
    """A CSS percentage precise to well under a pixel on any screen."""
    return f"{100 * part / whole:.5f}%" if whole else "0%"


def _gib(value: int) -> str:
    return f"{value / GIB:.1f}"


def _hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def _source(name: str) -> str:
    loader = _environment().loader
    assert loader is not None
    return loader.get_source(_environment(), name)[0]


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()), undefined=jinja2.StrictUndefined,
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
    )
