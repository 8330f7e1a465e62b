"""Rich views of the pure results. Only views (and cli) print.

Text that comes from the input (names, models, messages) is always passed as `Text`, never as a
markup string: a value such as `[/x]` or `[red]` must print as written, not crash or restyle.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpufleet.gpu.models import GIB
from gpufleet.plan import Finding, Plan, PlannedGpu, PlannedHost
from gpufleet.vllm.memory import Estimate

BAR_WIDTH = 30
PALETTE = ["cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta"]
POOLING = ("embed", "rerank")  # no KV cache worth showing for encoder-only pooling models
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}
SEVERITIES = ("error", "warning", "info")
DETAIL_HOSTS = 10  # hosts shown table by table; a host's tables fill about half a screen
SUMMARY_GROUPS = 20  # kinds of finding listed in a fleet summary


def gib(value: int | float) -> str:
    return f"{value / GIB:.1f}"


def memory_bar(gpu: PlannedGpu, colors: dict[str, str], width: int = BAR_WIDTH) -> Text:
    """One segment per service, proportional to its footprint, then the free remainder."""
    bar = Text()
    scale = width / max(gpu.total_bytes, gpu.used_bytes, 1)
    used_cells = 0
    for name, size in gpu.segments:
        cells = max(1, round(size * scale)) if size else 0
        cells = min(cells, width - used_cells)
        bar.append("█" * cells, style=colors[name])
        used_cells += cells
    if gpu.free_bytes < 0:
        bar.append("!", style="bold red")
    else:
        bar.append("·" * (width - used_cells), style="dim")
    return bar


def service_colors(host: PlannedHost) -> dict[str, str]:
    return {s.name: PALETTE[i % len(PALETTE)] for i, s in enumerate(host.services)}


def host_table(host: PlannedHost) -> Table:
    colors = service_colors(host)
    table = Table(
        title=Text(f"{host.name}  ({len(host.gpus)} × {host.gpu_model})"),
        title_justify="left",
        expand=False,
        pad_edge=False,
        box=None,
        header_style="bold",
    )
    table.add_column("GPU", justify="right")
    table.add_column("memory (█ planned  · free)", no_wrap=True)
    table.add_column("util Σ", justify="right")
    table.add_column("GiB", justify="right", no_wrap=True)
    table.add_column("free", justify="right")
    table.add_column("services")
    for gpu in host.gpus:
        names = Text(", ").join(Text(n, style=colors[n]) for n, _ in gpu.segments) or Text("—")
        free_style = "bold red" if gpu.free_bytes < 0 else ""
        table.add_row(
            str(gpu.index),
            memory_bar(gpu, colors),
            f"{gpu.utilization_sum:.2f}",
            f"{gib(gpu.used_bytes)}/{gib(gpu.total_bytes)}",
            Text(gib(gpu.free_bytes), style=free_style),
            names,
        )
    return table


def services_table(host: PlannedHost) -> Table:
    colors = service_colors(host)
    table = Table(expand=False, pad_edge=False, box=None, header_style="bold")
    for col, justify in [
        ("#", "right"),
        ("service", "left"),
        ("kind", "left"),
        ("GPUs", "left"),
        ("port", "right"),
        ("util", "right"),
        ("GiB/GPU", "right"),
        ("max len", "right"),
        ("KV GiB", "right"),
        ("KV tokens", "right"),
        ("conc.", "right"),
        ("after", "left"),
    ]:
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for s in host.services:
        est = s.estimate if s.estimate and s.service.kind.value not in POOLING else None
        status = "" if s.estimate is None or s.estimate.starts else " ✗"
        table.add_row(
            str(s.start_index + 1),
            Text(s.name + status, style=colors[s.name]),
            Text(s.service.kind.value),
            ",".join(map(str, s.gpus)),
            str(s.service.port),
            f"{s.estimate.utilization:g}" if s.estimate else "—",
            gib(s.footprint_bytes),
            str(s.model_len) if s.model_len else "—",
            gib(est.kv_cache_bytes) if est else "—",
            f"{est.kv_tokens:,}" if est else "—",
            f"{est.max_concurrency:.1f}×" if est else "—",
            Text(s.start_after[-1]) if s.start_after else "—",
        )
    return table


def finding_line(f: Finding) -> Text:
    where = "/".join(
        p for p in (f.host, f"gpu{f.gpu}" if f.gpu is not None else None, f.service) if p
    )
    line = Text(f"{f.severity:<7} ", style=SEVERITY_STYLE[f.severity])
    line.append(f"[{f.code}] ", style="bold")
    line.append(f"{where}: " if where else "")
    line.append(f.message)
    if f.hint:
        line.append(f"\n        fix: {f.hint}", style="green")
    return line


def show_plan(plan: Plan, console: Console, *, full: bool = False) -> None:
    """Each host's tables and every finding; past DETAIL_HOSTS hosts (more than a few
    screens) a fleet summary instead, with the findings grouped across hosts."""
    ordered = sorted(plan.findings, key=lambda f: SEVERITIES.index(f.severity))
    if full or len(plan.hosts) <= DETAIL_HOSTS:
        for host in plan.hosts:
            console.print(host_table(host))
            console.print(services_table(host))
            console.print()
        for f in ordered:
            console.print(finding_line(f))
    else:
        show_fleet_summary(plan, ordered, console)
    errors = [f for f in plan.findings if f.severity == "error"]
    warnings = [f for f in plan.findings if f.severity == "warning"]
    verdict = (
        Text("plan has errors: fix them before deploying", style="bold red")
        if errors
        else Text("plan OK: every instance fits and starts", style="bold green")
    )
    console.print(verdict, Text(f"  ({len(errors)} errors, {len(warnings)} warnings)"))


def show_fleet_summary(plan: Plan, ordered: list[Finding], console: Console) -> None:
    gpus = [g for h in plan.hosts for g in h.gpus]
    services = sum(len(h.services) for h in plan.hosts)
    used = sum(g.used_bytes for g in gpus)
    total = sum(g.total_bytes for g in gpus)
    console.print(Text(f"{len(plan.hosts):,} hosts, {len(gpus):,} GPUs, {services:,} services: "
                       f"{gib(used)} of {gib(total)} GiB planned ({used / max(total, 1):.0%})"))
    by_host = Counter(f.host for f in ordered if f.severity != "info")
    if by_host:
        console.print(Text(f"{len(by_host):,} hosts have errors or warnings", style="bold"))
    groups = _grouped(ordered)
    for (f, hosts) in groups[:SUMMARY_GROUPS]:
        line = finding_line(replace(f, host=None))
        shown = ", ".join(h for h in hosts[:3] if h)
        more = f" and {len(hosts) - 3:,} more" if len(hosts) > 3 else ""
        line.append(f"\n        on {len(hosts):,} host{'s' if len(hosts) != 1 else ''}: "
                    f"{shown}{more}", style="dim")
        console.print(line)
    if len(groups) > SUMMARY_GROUPS:
        console.print(Text(f"… and {len(groups) - SUMMARY_GROUPS:,} more kinds of finding"))
    console.print(Text("a host's tables: gpufleet plan INVENTORY --host NAME; every host: --full;"
                       " everything as data: --json", style="dim"))


def _grouped(findings: list[Finding]) -> list[tuple[Finding, list[str]]]:
    """Findings that differ only in their host, once each with the hosts they are on."""
    groups: dict[Finding, list[str]] = {}
    for f in findings:
        groups.setdefault(replace(f, host=None), []).append(f.host or "")
    return list(groups.items())


def show_estimate(est: Estimate, console: Console, model: str) -> None:
    table = Table(title=Text(model), title_justify="left", box=None, pad_edge=False)
    table.add_column("per rank", style="bold")
    table.add_column("GiB", justify="right")
    rows = [
        ("budget (util × total)", est.budget_bytes),
        ("baseline outside budget", est.baseline_bytes),
        ("weights", est.weights_bytes),
        ("activation peak", est.activation_bytes),
        ("non-torch", est.non_torch_bytes),
        ("graphs", est.cudagraph_bytes),
        ("KV cache", est.kv_cache_bytes),
        ("held on the GPU", est.used_bytes),
    ]
    for label, value in rows:
        table.add_row(label, f"{value / GIB:.2f}")
    console.print(table)
    console.print(
        Text(
            f"KV tokens {est.kv_tokens:,}  max concurrency {est.max_concurrency:.2f}× at "
            f"max_model_len {est.max_model_len}"
        )
    )
    if est.starts:
        console.print(Text("starts", style="bold green"))
    else:
        console.print(Text(f"fails ({est.error_kind}): {est.error}", style="bold red"))
    if est.max_model_len_fit is not None:
        console.print(Text(f"largest max_model_len at this utilization: {est.max_model_len_fit}"))
    if est.min_util_for_max_model_len is not None:
        console.print(
            Text(
                f"smallest utilization for max_model_len {est.max_model_len}: "
                f"{est.min_util_for_max_model_len:.2f}"
            )
        )
