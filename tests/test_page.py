"""The configurator page (gpufleet.page): the pure HTML, `plan/status --html`, and the page in a
real headless Chromium (tests/browser.py) — bars per GPU, segment sizes against the plan within
1 px, the host filter, hover details, no console error, no network request, a screenshot.

Screenshots and pages go to $GPUFLEET_ARTIFACTS (default: pytest's tmp dir); the README's
images are made by `GPUFLEET_ARTIFACTS=docs .venv/bin/python -m pytest tests/test_page.py`.
Without Chromium the browser tests skip, except under CI (`CI` set), where they fail.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from browser import Chromium, chromium_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import FUZZ_FIXED, INVENTORIES, REPO, fuzz_examples

import gpufleet.commands.status as status_command
from gpufleet import inventory
from gpufleet.errors import ExitStatus
from gpufleet.gpu.smi import GpuReading, ProcessReading, Snapshot
from gpufleet.inventory import Inventory
from gpufleet.observe import reading_from_files
from gpufleet.page import footprint_parts, plan_page, script_json, status_page
from gpufleet.plan import Finding, Plan, PlannedGpu, PlannedHost, build_plan
from gpufleet.probe import Probe
from gpufleet.validate import IDLE_GPU_BYTES, HostReading, unit_of

BERGET = INVENTORIES / "berget.yml"
PUBLISHED = INVENTORIES / "examples" / "berget-as-published.yml"
SMI = REPO / "tests" / "fixtures" / "smi"
HOSTILE = '</script><img src=x onerror="window.__pwned=1">"\'><b>{{7*7}}</b>&amp;<!--'
FLEET_HOSTS = 100


@pytest.fixture(scope="module")
def berget() -> Plan:
    return build_plan(inventory.load(BERGET))


@pytest.fixture(scope="module")
def fleet() -> Plan:
    """100 hosts: the example host, every seventh one as first published (with errors)."""
    data = yaml.safe_load(BERGET.read_text())
    good = next(iter(data["hosts"].values()))
    bad = next(iter(yaml.safe_load(PUBLISHED.read_text())["hosts"].values()))
    data["hosts"] = {f"gpu-{i:03d}": {**copy.deepcopy(bad if i % 7 == 3 else good),
                                      "address": f"gpu-{i:03d}.example"}
                     for i in range(FLEET_HOSTS)}
    return build_plan(inventory.loads(yaml.safe_dump(data, sort_keys=False), "fleet.yml"))


# ---------------------------------------------------------------- test doubles


def running(host: PlannedHost, *, scale: dict[str, float] | None = None,
            failed: tuple[str, ...] = ()) -> HostReading:
    """A reading of a host that runs its plan: every service's process holds its footprint
    (times `scale`), on an idle GPU's baseline; `failed` units are down and hold nothing."""
    procs, pid_units, used = [], {}, {g.index: IDLE_GPU_BYTES for g in host.gpus}
    for pid, svc in enumerate(host.services, start=1000):
        if svc.name in failed or not svc.footprint_bytes:
            continue
        size = int(svc.footprint_bytes * (scale or {}).get(svc.name, 1.0))
        for gpu in svc.gpus:
            used[gpu] += size
        procs.append(ProcessReading(pid, "python3", list(svc.gpus), size * len(svc.gpus)))
        pid_units[pid] = unit_of(svc.name)
    gpus = [GpuReading(g.index, None, None, g.total_bytes, used[g.index]) for g in host.gpus]
    states = {unit_of(s.name): "failed" if s.name in failed else "active" for s in host.services}
    probes = {s.name: Probe(s.name, s.name not in failed, "ok") for s in host.services}
    uptimes = {unit_of(s.name): 3600.0 * (i + 1) for i, s in enumerate(host.services)}
    return HostReading(host.name, Snapshot(gpus, procs, "rocm-smi", "test"), pid_units, states,
                       probes, uptimes)


def hostile(plan: Plan, text: str) -> Plan:
    """The same plan with `text` in every name, model, address and finding, past the schema
    (objects nobody validated: the page must hold even where the inventory would refuse)."""
    model = plan.inventory.model
    fleet = model.fleet.model_copy(update={"name": text})
    inv = Inventory(model.model_copy(update={"fleet": fleet}), plan.inventory.source)
    hosts, names = [], {}
    for h, host in enumerate(plan.hosts):
        names.update({(host.name, s.name): f"{text}{h}.{i}" for i, s in enumerate(host.services)})
        new = {s.name: names[host.name, s.name] for s in host.services}
        services = [dataclasses.replace(
            s, host=f"{text}{h}", start_after=tuple(new[a] for a in s.start_after),
            service=s.service.model_copy(update={"name": new[s.name], "model": text,
                                                 "revision": text}))
            for s in host.services]
        gpus = [PlannedGpu(g.index, g.total_bytes, [(new[n], b) for n, b in g.segments],
                           g.utilization_sum) for g in host.gpus]
        hosts.append(PlannedHost(f"{text}{h}", host.host.model_copy(update={"address": text}),
                                 host.gpu_model, gpus, services))
    renamed = {old: f"{text}{h}" for h, old in enumerate(h.name for h in plan.hosts)}
    findings = [dataclasses.replace(
        f, host=renamed.get(f.host or ""), message=text + f.message, hint=text,
        service=names.get((f.host or "", f.service or ""), f.service)) for f in plan.findings]
    return Plan(inv, hosts, [*findings, Finding("warning", "fleet_note", text, hint=text)])


# ---------------------------------------------------------------- the pure page


class Skeleton(HTMLParser):
    """The page's markup without its text: each tag with its attribute names, the scripts'
    contents, and every attribute value by name."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, tuple[str, ...]]] = []
        self.values: list[tuple[str, str]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, tuple(name for name, _ in attrs)))
        self.values += [(name, value or "") for name, value in attrs]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._in_script else self.text).append(data)


def skeleton(html: str) -> Skeleton:
    parser = Skeleton()
    parser.feed(html)
    parser.close()
    return parser


def test_every_footprint_is_split_into_parts_that_sum_to_it(berget, fleet):
    for svc in [s for plan in (berget, fleet) for h in plan.hosts for s in h.services]:
        parts = footprint_parts(svc)
        assert sum(size for _, size in parts) == svc.footprint_bytes, svc.name
        assert all(size > 0 for _, size in parts)
        if svc.estimate and svc.estimate.starts:  # a service that starts shows what vLLM holds
            keys = {k for k, _ in parts}
            assert {"weights", "baseline", "activation"} <= keys, svc.name


def test_the_page_is_self_contained_with_a_strict_policy(berget):
    html = plan_page(berget)
    page = skeleton(html)
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", html)  # no URL of anything
    assert not [v for name, v in page.values if name in ("src", "href", "action")]
    assert {tag for tag, _ in page.tags} <= {
        "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "div", "b",
        "span", "main", "label", "input", "button", "i", "section", "details", "summary",
        "table", "thead", "tbody", "tr", "th", "td", "ul", "li", "script"}
    policy = next(v for n, v in page.values if n == "content" and "default-src" in v)
    assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1]
    assert not [name for _, names in page.tags for name in names if name.startswith("on")]


def test_the_data_block_cannot_close_its_script():
    text = script_json({"name": HOSTILE, "sep": "\u2028"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"name": HOSTILE, "sep": "\u2028"}


@settings(derandomize=FUZZ_FIXED, max_examples=fuzz_examples(40), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=40).filter(lambda t: t.strip() == t and "\x00" not in t)
       | st.sampled_from([HOSTILE, "</SCRIPT >", "<!--<script>", "]]>", "{% raw %}"]))
def test_hostile_text_never_changes_the_markup(berget, text):
    """Whatever the names say, the page has the same tags and attributes as the plain page:
    the text stays text, and the data for the script reads back exactly."""
    plain, page = skeleton(plan_page(hostile(berget, "x"))), skeleton(plan_page(hostile(berget,
                                                                                         text)))
    assert page.tags == plain.tags
    data = json.loads(page.scripts[0])
    assert data["hosts"][0]["name"] == f"{text}0"
    assert data["hosts"][0]["services"][0]["model"] == text
    assert f"{text}0" in "".join(page.text)
    assert ("data-host", f"{text}0") in page.values


# ---------------------------------------------------------------- the commands


def test_plan_html_writes_the_page_and_keeps_the_output(cli, tmp_path):
    out = tmp_path / "plan.html"
    with_page = cli("plan", str(BERGET), "--html", str(out))
    assert with_page.exit_status == ExitStatus.OK
    assert with_page.stdout == cli("plan", str(BERGET)).stdout
    assert out.read_text() == plan_page(build_plan(inventory.load(BERGET)))
    assert [p.name for p in tmp_path.iterdir()] == ["plan.html"]  # no temporary left beside it
    as_json = cli("plan", str(BERGET), "--json", "--html", str(out))
    assert json.loads(as_json.stdout)["fleet"] == "berget"


@pytest.mark.parametrize("where, why", [("missing/plan.html", "does not exist"), (".", "folder")])
def test_plan_html_to_a_bad_path_is_bad_input(cli, tmp_path, where, why):
    result = cli("plan", str(BERGET), "--html", str(tmp_path / where))
    assert result.exit_status == ExitStatus.BAD_INPUT
    assert why in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""  # refused before planning


def test_status_html_draws_what_the_fleet_read(cli, tmp_path, monkeypatch, berget):
    reading = running(berget.hosts[0], failed=("gemma-3",))
    monkeypatch.setattr(status_command, "read_fleet", lambda plan, **_: {"gpu-01": reading})
    out = tmp_path / "status.html"
    result = cli("status", str(BERGET), "--html", str(out))
    assert result.exit_status == ExitStatus.FINDINGS  # gemma-3 is down
    assert "gemma-3" in result.stdout
    assert out.read_text() == status_page(berget, {"gpu-01": reading})


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: CI must run the browser tests (.ci/setup)")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    with Chromium.launch() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """Where the screenshots go: $GPUFLEET_ARTIFACTS (docs/ for the README), else a tmp dir."""
    chosen = os.environ.get("GPUFLEET_ARTIFACTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("page-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pages")


def load(browser, pages: Path, name: str, html: str, viewport: tuple[int, int] = (1280, 900)):
    """The page written to a file and opened; the test fails on any console error or any
    request but the page itself."""
    path = pages / f"{name}.html"
    path.write_text(html, encoding="utf-8")
    page = browser.open(path, viewport)
    assert page.console_errors == []
    assert page.requests == [page.url]
    return page


MEASURE_BARS = """
[...document.querySelectorAll('details.host:not([hidden])[open]')].map(host => ({
  host: host.dataset.host,
  gpus: [...host.querySelectorAll('.gpu')].map(gpu => {
    const bar = gpu.querySelector('.bar'), box = bar.getBoundingClientRect();
    const size = el => el ? el.getBoundingClientRect().width : null;
    return {index: Number(gpu.dataset.gpu), width: box.width, height: box.height,
      segments: [...bar.querySelectorAll('.seg')].map(seg => ({
        service: seg.dataset.service, width: size(seg),
        left: seg.getBoundingClientRect().left - box.left,
        parts: [...seg.querySelectorAll('.part')].map(p => [p.dataset.part, size(p)])})),
      free: size(bar.querySelector('.free')), measured: size(bar.querySelector('.measured'))};
  })}))
"""


def check_bars(drawn: list[dict], plan: Plan, measured: dict[str, dict[int, int]] | None = None):
    """Every GPU of every drawn host has one bar, a segment per service in start order, each
    (and each part, and the free rest, and the measured use) as wide as the plan says, ±1 px."""
    assert drawn
    for host_view in drawn:
        host = plan.host(host_view["host"])
        assert [g["index"] for g in host_view["gpus"]] == [g.index for g in host.gpus]
        for gpu, view in zip(host.gpus, host_view["gpus"], strict=True):
            got = (measured or {}).get(host.name, {}).get(gpu.index)
            px = view["width"] / max(gpu.total_bytes, gpu.used_bytes, got or 0)
            assert [s["service"] for s in view["segments"]] == [n for n, _ in gpu.segments]
            left = 0
            for (name, size), seg in zip(gpu.segments, view["segments"], strict=True):
                assert seg["width"] == pytest.approx(size * px, abs=1), (host.name, gpu.index)
                assert seg["left"] == pytest.approx(left * px, abs=1)
                left += size
                parts = footprint_parts(host.service(name))
                assert [k for k, _ in parts] == [k for k, _ in seg["parts"]]
                for (_, part), (_, width) in zip(parts, seg["parts"], strict=True):
                    assert width == pytest.approx(part * px, abs=1)
            assert view["free"] == pytest.approx(max(gpu.free_bytes, 0) * px, abs=1)
            if measured is not None:
                assert (view["measured"] is None) == (got is None)
                if got is not None:
                    assert view["measured"] == pytest.approx(got * px, abs=1)


def test_plan_page_in_chromium(browser, artifacts, pages, berget):
    page = load(browser, pages, "configurator-plan", plan_page(berget))
    assert page.evaluate("document.querySelectorAll('.bar').length") == 8
    check_bars(page.evaluate(MEASURE_BARS), berget)
    assert page.evaluate("document.getElementById('sum-gpus').textContent") == "8"
    assert page.evaluate("document.querySelector('#tip').hidden") is True
    x, y = page.evaluate("""(() => { const b = document.querySelector('[data-service="llama-70b"]')
        .getBoundingClientRect(); return [b.left + b.width / 3, b.top + b.height / 2]; })()""")
    page.hover(x, y)
    tip = page.evaluate("document.querySelector('#tip').hidden ? null : "
                        "document.querySelector('#tip').textContent")
    llama = berget.hosts[0].service("llama-70b")
    assert tip is not None and "meta-llama/Llama-3.3-70B-Instruct" in tip
    assert f"{llama.estimate.kv_tokens:,} tokens" in tip and "concurrency" in tip
    assert "start order#6" in tip and "vllm serve meta-llama/Llama-3.3-70B-Instruct" in tip
    assert "--gpu-memory-utilization 0.97" in tip
    page.screenshot(artifacts / "configurator-plan.png")
    assert page.console_errors == [] and page.requests == [page.url]


def test_a_100_host_fleet_is_collapsed_and_filtered(browser, artifacts, pages, fleet):
    page = load(browser, pages, "configurator-100-hosts", plan_page(fleet))
    rows = page.evaluate("""[...document.querySelectorAll('details.host')].map(d =>
        [d.dataset.host, d.open, d.getBoundingClientRect().height])""")
    assert len(rows) == FLEET_HOSTS and not any(is_open for _, is_open, _ in rows)
    assert max(height for _, _, height in rows) < 45  # one row per host
    assert page.evaluate("document.querySelectorAll('.bar').length") == 8 * FLEET_HOSTS
    page.screenshot(artifacts / "configurator-100-hosts.png")

    def shown(query: str, only_findings: bool = False) -> list[str]:
        return page.evaluate(f"""(() => {{
            const f = document.getElementById('host-filter'); f.value = {json.dumps(query)};
            f.dispatchEvent(new Event('input'));
            const c = document.getElementById('only-findings');
            if (c.checked !== {json.dumps(only_findings)}) {{ c.click(); }}
            return [...document.querySelectorAll('details.host')].filter(d => !d.hidden)
                .map(d => d.dataset.host); }})()""")

    assert shown("gpu-07") == [f"gpu-07{i}" for i in range(10)]
    assert page.evaluate("document.getElementById('shown').textContent") == "10 of 100 hosts"
    assert page.evaluate("document.querySelectorAll('details.host[open]').length") == 0
    assert shown("GPU-042.EXAMPLE") == ["gpu-042"]  # by address too, any case
    check_bars(page.evaluate(MEASURE_BARS), fleet)  # one host found: shown whole
    erring = [h.name for h in fleet.hosts
              if any(f.host == h.name and f.severity == "error" for f in fleet.findings)]
    assert erring and shown("", only_findings=True) == [
        h.name for h in fleet.hosts if any(f.host == h.name and f.severity in ("error", "warning")
                                           for f in fleet.findings)]
    assert shown("") == [h.name for h in fleet.hosts]
    assert page.console_errors == [] and page.requests == [page.url]


def test_status_page_draws_a_saved_rocm_smi_reading_over_the_plan(browser, pages, berget):
    """The real fixture of `rocm-smi --showmeminfo vram --json` (as `validate --smi` reads it)."""
    reading = reading_from_files("gpu-01", [str(SMI / "rocm-smi_showmeminfo-vram_json_8xMI300X"
                                                      ".json")])
    reading.offline = True
    used = {g.index: g.vram_used_bytes for g in reading.snapshot.gpus}
    page = load(browser, pages, "configurator-status-saved", status_page(berget,
                                                                             {"gpu-01": reading}))
    check_bars(page.evaluate(MEASURE_BARS), berget, {"gpu-01": used})
    codes = page.evaluate("[...document.querySelectorAll('li .code')].map(e => e.textContent)")
    assert "[gpu_idle]" in codes  # GPUs 6 and 7 read idle while the plan has mai-ds-r1 there


def test_status_page_says_what_a_cut_reading_did_not_measure(browser, pages, berget):
    """A saved output cut inside GPU 3: GPUs 0-2 drawn, 3-7 `measured ?` with no bar (never 0)."""
    reading = reading_from_files("gpu-01", [str(SMI / "rocm-smi_showmeminfo-vram_json_TRUNCATED"
                                                      ".json")])
    reading.offline = True
    used = {g.index: g.vram_used_bytes for g in reading.snapshot.gpus if g.index < 3}
    page = load(browser, pages, "configurator-status-cut", status_page(berget,
                                                                           {"gpu-01": reading}))
    check_bars(page.evaluate(MEASURE_BARS), berget, {"gpu-01": used})
    assert page.evaluate("""[...document.querySelectorAll('.gpu')].filter(g =>
        g.querySelector('.unmeasured')).map(g => Number(g.dataset.gpu))""") == [3, 4, 5, 6, 7]


def test_status_page_of_a_running_host(browser, artifacts, pages, berget):
    host = berget.hosts[0]
    reading = running(host, scale={"kb-whisper": 1.3}, failed=("gemma-3",))
    used = {g.index: g.vram_used_bytes for g in reading.snapshot.gpus}
    page = load(browser, pages, "configurator-status",
                status_page(berget, {"gpu-01": reading}), viewport=(1440, 900))
    check_bars(page.evaluate(MEASURE_BARS), berget, {"gpu-01": used})
    states = dict(page.evaluate("""[...document.querySelectorAll('tr[data-service]')].map(r =>
        [r.dataset.service, r.querySelector('[class^=state]').textContent])"""))
    assert states["gemma-3"] == "failed" and states["llama-8b"] == "active"
    codes = page.evaluate("[...document.querySelectorAll('li .code')].map(e => e.textContent)")
    assert "[service_memory_over]" in codes and "[service_down]" in codes
    page.screenshot(artifacts / "configurator-status.png")


def test_hostile_names_stay_inert_text_in_chromium(browser, pages, berget):
    plan = hostile(berget, HOSTILE)
    page = load(browser, pages, "configurator-hostile",
                status_page(plan, {plan.hosts[0].name: running(plan.hosts[0])}))
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.images.length") == 0
    assert page.evaluate("document.querySelectorAll('script').length") == 2
    assert page.evaluate("document.querySelector('.hostname').textContent") == f"{HOSTILE}0"
    assert page.evaluate("document.title") == f"gpufleet status: {HOSTILE}"
    x, y = page.evaluate("""(() => { const b = document.querySelector('.seg')
        .getBoundingClientRect(); return [b.left + 2, b.top + b.height / 2]; })()""")
    page.hover(x, y)
    assert HOSTILE in page.evaluate("document.querySelector('#tip').textContent")
    assert page.evaluate("document.images.length") == 0
    assert page.console_errors == [] and page.requests == [page.url]
