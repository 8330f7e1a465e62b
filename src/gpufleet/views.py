"""Rich views of the pure results. Only views (and cli) print.

Text that comes from the input (names, models, messages) is always passed as `Text`, never as a
markup string: a value such as `[/x]` or `[red]` must print as written, not crash or restyle.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from gpufleet.gpu.models import GIB
from gpufleet.plan import Finding, Plan, PlannedGpu, PlannedHost, PlannedService
from gpufleet.vllm.memory import Estimate

BAR_WIDTH = 30
# Service colours. Red is never one of them: it means an error (SEVERITY_STYLE, overcommit).
PALETTE = ["cyan", "magenta", "green", "yellow", "blue", "bright_green", "bright_cyan",
           "bright_magenta"]
# Each service on a host also has a letter, drawn in its bar segment and named in the legend, so
# a shared GPU reads the same without colour (NO_COLOR, a pipe, a CI log).
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
POOLING = ("embed", "rerank")  # no KV cache worth showing for encoder-only pooling models
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}
SEVERITIES = ("error", "warning", "info")
DETAIL_HOSTS = 10  # hosts shown table by table; a host's tables fill about half a screen
SUMMARY_GROUPS = 20  # kinds of finding listed in a fleet summary
WIDE = 110  # from this many columns the services table also says which service each follows


def gib(value: int | float) -> str:
    return f"{value / GIB:.1f}"


@dataclass(frozen=True)
class Key:
    """How one service is told apart on its host: a colour and a letter."""

    color: str
    letter: str

    def style(self) -> Style:
        return Style(color=self.color, reverse=True)  # the letter, on the service's colour


def service_keys(host: PlannedHost) -> dict[str, Key]:
    """Colour and letter per service, in start order (a host past 62 services repeats '+')."""
    return {s.name: Key(PALETTE[i % len(PALETTE)], LETTERS[i] if i < len(LETTERS) else "+")
            for i, s in enumerate(host.services)}


def memory_bar(gpu: PlannedGpu, keys: dict[str, Key], width: int = BAR_WIDTH) -> Text:
    """One segment per service, proportional to its footprint, drawn with its letter, then the
    free remainder (·), or `!` when the GPU is overcommitted."""
    bar = Text()
    scale = width / max(gpu.total_bytes, gpu.used_bytes, 1)
    used_cells = 0
    for name, size in gpu.segments:
        cells = max(1, round(size * scale)) if size else 0
        cells = min(cells, width - used_cells)
        bar.append(keys[name].letter * cells, style=keys[name].style())
        used_cells += cells
    if gpu.free_bytes < 0:
        bar.append("!", style="bold red")
    else:
        bar.append("·" * (width - used_cells), style="dim")
    return bar


def legend(names: list[str], keys: dict[str, Key]) -> Text:
    """`A=llama-8b, B=kb-whisper`: which letter (and colour) is which service."""
    if not names:
        return Text("—")
    # `A=name` is one word, so a narrow column wraps between entries, never inside one
    return Text(", ").join(Text.assemble((keys[n].letter, keys[n].style()), "=",
                                         (n, keys[n].color)) for n in names)


def host_table(host: PlannedHost, width: int = WIDE) -> Table:
    """One row per GPU: its bar, utilization sum, GiB and the legend of its services (a
    narrower bar below WIDE columns leaves the legend room)."""
    keys = service_keys(host)
    cells = BAR_WIDTH if width >= WIDE else 20
    table = Table(
        title=Text(f"{host.name}  ({len(host.gpus)} × {host.gpu_model})"),
        title_justify="left",
        expand=False,
        pad_edge=False,
        box=None,
        header_style="bold",
    )
    table.add_column("GPU", justify="right", no_wrap=True)
    table.add_column("planned (· free)", no_wrap=True, min_width=cells)
    table.add_column("util Σ", justify="right", no_wrap=True)
    table.add_column("GiB", justify="right", no_wrap=True)
    table.add_column("free", justify="right", no_wrap=True)
    table.add_column("services", overflow="fold")
    for gpu in host.gpus:
        free_style = "bold red" if gpu.free_bytes < 0 else ""
        table.add_row(
            str(gpu.index),
            memory_bar(gpu, keys, cells),
            f"{gpu.utilization_sum:.2f}",
            f"{gib(gpu.used_bytes)}/{gib(gpu.total_bytes)}",
            Text(gib(gpu.free_bytes), style=free_style),
            legend([n for n, _ in gpu.segments], keys),
        )
    return table


def gpu_list(gpus: tuple[int, ...] | list[int]) -> str:
    """`0`, `4-7`, `0,2`: runs of consecutive GPUs written as ranges (they fit narrow tables)."""
    runs: list[list[int]] = []
    for g in gpus:
        if runs and g == runs[-1][-1] + 1:
            runs[-1].append(g)
        else:
            runs.append([g])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ",".join(map(str, r)) for r in runs)


def services_table(host: PlannedHost, width: int = WIDE) -> Table:
    """Every service of a host in start order. Numbers are never cut: below WIDE columns the
    headers are short and the `after` column (implied by `#`) is left out; long names fold."""
    keys = service_keys(host)
    wide = width >= WIDE
    table = Table(expand=False, pad_edge=False, box=None, header_style="bold",
                  collapse_padding=not wide)
    names = ("#", "service", "kind", "GPUs", "port", "util", "GiB/GPU" if wide else "GiB",
             "max len" if wide else "ctx", "KV GiB", "KV tokens" if wide else "KV tok",
             "conc." if wide else "conc")
    rows = [_service_row(s, keys) for s in host.services]
    for i, name in enumerate(names):
        values = [name] + [_plain(r[i]) for r in rows]
        if name == "service":
            table.add_column(name, overflow="fold", min_width=8)
        else:
            table.add_column(name, justify="left" if name in ("kind", "GPUs") else "right",
                             no_wrap=True, min_width=max(map(len, values)))
    if wide:
        table.add_column("after", no_wrap=True)
    for s, row in zip(host.services, rows, strict=True):
        after = Text(s.start_after[-1]) if s.start_after else "—"
        table.add_row(*row, *([after] if wide else []))
    return table


def _plain(cell: Text | str) -> str:
    return cell.plain if isinstance(cell, Text) else cell


def _service_row(s: PlannedService, keys: dict[str, Key]) -> list[Text | str]:
    est = s.estimate if s.estimate and s.service.kind.value not in POOLING else None
    status = "" if s.estimate is None or s.estimate.starts else " ✗"
    key = keys[s.name]
    return [
        Text.assemble((key.letter, key.style()), " ", str(s.start_index + 1)),
        Text(s.name + status, style=key.color),
        Text(s.service.kind.value),
        gpu_list(s.gpus),
        str(s.service.port),
        f"{s.estimate.utilization:g}" if s.estimate else "—",
        gib(s.footprint_bytes),
        str(s.model_len) if s.model_len else "—",
        gib(est.kv_cache_bytes) if est else "—",
        f"{est.kv_tokens:,}" if est else "—",
        f"{est.max_concurrency:.1f}×" if est else "—",
    ]


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
            console.print(host_table(host, console.width))
            console.print(services_table(host, console.width))
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
