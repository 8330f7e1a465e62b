"""End-to-end: `status --watch` in a real terminal (tmux) and `exporter` scraped over HTTP, on the
lab's hosts. The tests run in file order on one provisioned lab."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import REPO, run_cli

from gpufleet import inventory
from gpufleet.plan import build_plan
from gpufleet_lab import Lab, cut_link, exec_in, restore_link
from gpufleet_lab.fleet import write_lab_fleet

SERVICES = ("chat", "embed", "tiny", "rerank", "asr")
T = TypeVar("T")


@pytest.fixture(scope="module")
def inv(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lab_fleet(lab, tmp_path_factory.mktemp("fleet") / "lab.yml")


def on_host(lab: Lab, host: str, command: str) -> str:
    """Run a command in the host without SSH (so it opens no session the test counts)."""
    return exec_in(lab.config, host, command, timeout=60, check=True).stdout


def freeze(lab: Lab, host: str, service: str, sig: str) -> None:
    on_host(lab, host, f"kill -{sig} $(systemctl show -p MainPID --value gpufleet-{service})")


def ssh_logins(lab: Lab, host: str) -> int:
    out = exec_in(lab.config, host, "journalctl --no-pager -o cat SYSLOG_IDENTIFIER=sshd "
                                    "| grep -c 'Accepted '", timeout=60).stdout
    return int(out.strip() or 0)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = probe()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_deploy_the_lab_fleet(inv: Path) -> None:
    result = run_cli("deploy", str(inv))
    assert result.exit_status == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- status --watch under tmux


class Tmux:
    def __init__(self, command: str, log: Path):
        self.name = f"gfwatch-{os.getpid()}"
        self.exit_file = log.with_suffix(".exit")
        # the shell traps Ctrl-C (so it outlives it and writes the exit status); a trap, not an
        # ignore, leaves SIGINT at its default in the command
        wrapped = f"trap : INT; {command} 2>{shlex.quote(str(log))}; echo $? > {self.exit_file}"
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "200", "-y", "60",
                        "bash", "-c", wrapped], check=True, cwd=REPO)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name],
                              capture_output=True, text=True).stdout

    def interrupt(self) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "C-c"], check=True)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def host_sections(screen: str, names: list[str]) -> dict[str, tuple[int, list[list[str]]]]:
    """Host -> (its read number, the token rows of its table), from a captured screen."""
    out: dict[str, tuple[int, list[list[str]]]] = {}
    current = None
    for line in screen.splitlines():
        m = re.match(r"^(\S+)\s+read #(\d+) ", line)
        if m and m.group(1) in names:
            current = m.group(1)
            out[current] = (int(m.group(2)), [])
        elif current is not None and line.strip():
            out[current][1].append(line.split())
    return out


def health_of(rows: list[list[str]], service: str) -> str | None:
    """The health cell of the service's first row (state, up and health follow its name)."""
    for tokens in rows:
        if service in tokens and tokens[0] != "GPU":
            i = tokens.index(service)
            return tokens[i + 3] if len(tokens) > i + 3 else None
    return None


@pytest.fixture()
def watching(inv: Path, tmp_path: Path) -> Iterator[Tmux]:
    tmux = Tmux(f"{shlex.quote(sys.executable)} -m gpufleet status {shlex.quote(str(inv))} "
                "--watch 1", tmp_path / "watch.log")
    try:
        yield tmux
    finally:
        tmux.close()


def test_watch_shows_every_service_and_a_frozen_one_turns_unhealthy(
    lab: Lab, watching: Tmux
) -> None:
    names = [h.name for h in lab.hosts]

    def all_healthy() -> dict[str, tuple[int, list[list[str]]]] | None:
        sections = host_sections(watching.screen(), names)
        ok = set(sections) == set(names) and all(
            health_of(rows, svc) == "ok" for _, rows in sections.values() for svc in SERVICES)
        return sections if ok else None

    first = wait_for("every service of every host healthy on the screen", all_healthy, 90)
    # one SSH session per host: no new login while it refreshes
    logins = {h: ssh_logins(lab, h) for h in names}
    host = names[0]
    freeze(lab, host, "chat", "STOP")
    try:
        number_at_stop = host_sections(watching.screen(), names)[host][0]
        assert number_at_stop >= first[host][0]

        def chat_unhealthy() -> int | None:
            section = host_sections(watching.screen(), names).get(host)
            return section[0] if section and health_of(section[1], "chat") == "FAIL" else None

        seen_at = wait_for("chat shown FAIL", chat_unhealthy, 60)
        # the read under way when it froze may have probed chat already; the next one may not
        assert seen_at <= number_at_stop + 2, (number_at_stop, seen_at, watching.screen())
        others = host_sections(watching.screen(), names)
        assert all(health_of(others[h][1], "chat") == "ok" for h in names[1:])
    finally:
        freeze(lab, host, "chat", "CONT")
    wait_for("chat healthy again", all_healthy, 60)
    assert {h: ssh_logins(lab, h) for h in names} == logins
    watching.interrupt()
    wait_for("watch to exit", watching.exit_file.exists, 15)
    assert watching.exit_file.read_text().strip() == "0"


def test_watch_shows_a_lost_host_unreachable_while_the_others_refresh(
    lab: Lab, watching: Tmux
) -> None:
    names = [h.name for h in lab.hosts]
    lost, other = names[-1], names[0]

    def all_shown() -> dict[str, tuple[int, list[list[str]]]] | None:
        sections = host_sections(watching.screen(), names)
        ok = set(sections) == set(names) and all(
            health_of(rows, svc) == "ok" for _, rows in sections.values() for svc in SERVICES)
        return sections if ok else None

    wait_for("every host on the screen", all_shown, 90)
    cut_link(lab.config, lost)
    try:
        def unreachable() -> dict[str, tuple[int, list[list[str]]]] | None:
            sections = host_sections(watching.screen(), names)
            rows = sections.get(lost, (0, []))[1]
            return sections if any(r and r[0] == "unreachable:" for r in rows) else None

        before = host_sections(watching.screen(), names)[other][0]
        wait_for(f"{lost} shown unreachable", unreachable, 120)
        assert host_sections(watching.screen(), names)[other][0] > before + 3  # never held up
    finally:
        restore_link(lab.config, lost)
    wait_for(f"{lost} back by itself", all_shown, 90)


# ---------------------------------------------------------------- the exporter, scraped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readme_metrics() -> dict[str, set[str]]:
    """Metric -> its labels, from the README's table of the exporter's metrics."""
    text = (REPO / "README.md").read_text().split("## Watching", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(gpufleet_\w+)` \| ([^|]*) \|", text, re.M)
    return {name: set(re.findall(r"`(\w+)`", labels)) for name, labels in rows}


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {f.name: [(s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(text)}


def test_exporter_serves_every_documented_metric(lab: Lab, inv: Path, tmp_path: Path) -> None:
    names = [h.name for h in lab.hosts]
    plan = build_plan(inventory.load(str(inv)))
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.Popen([sys.executable, "-m", "gpufleet", "exporter", str(inv), "--listen",
                             f"127.0.0.1:{port}", "--interval", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    host = names[0]
    try:
        def read_all() -> dict[str, list[tuple[dict[str, str], float]]] | None:
            try:
                got = scrape(url)
            except OSError:
                return None
            up = {s[0]["host"]: s[1] for s in got.get("gpufleet_host_up", [])}
            healthy = [v for _, v in got.get("gpufleet_service_healthy", [])]
            full = up == dict.fromkeys(names, 1.0) and len(healthy) == len(names) * len(SERVICES)
            return got if full and all(healthy) else None

        got = wait_for("every host read and healthy", read_all, 90)
        freeze(lab, host, "chat", "STOP")
        try:
            def chat_failing() -> dict[str, list[tuple[dict[str, str], float]]] | None:
                m = scrape(url)
                bad = {(s["host"], s["service"], s["code"]) for s, _ in m["gpufleet_finding"]}
                return m if (host, "chat", "service_unhealthy") in bad else None

            frozen = wait_for("a service_unhealthy finding", chat_failing, 60)
        finally:
            freeze(lab, host, "chat", "CONT")
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=20)
    assert status == 0, proc.stderr.read() if proc.stderr else ""
    documented = readme_metrics()
    assert len(documented) >= 10
    for metric, labels in documented.items():
        seen = frozen.get(metric) or got.get(metric)
        assert seen, f"{metric} (in the README) not served"
        assert all(set(s) == labels for s, _ in seen), (metric, labels, seen[0][0])
    # values agree with the plan
    for h in plan.hosts:
        planned = {(s["host"], s["gpu"]): v for s, v in got["gpufleet_gpu_planned_bytes"]}
        svc_planned = {(s["host"], s["gpu"], s["service"]): v
                       for s, v in got["gpufleet_service_planned_bytes"]}
        measured = {(s["host"], s["gpu"], s["service"]): v
                    for s, v in got["gpufleet_service_measured_bytes"]}
        kv = {(s["host"], s["service"]): v for s, v in got["gpufleet_service_planned_kv_tokens"]}
        for gpu in h.gpus:
            assert planned[(h.name, str(gpu.index))] == gpu.used_bytes
        for svc in h.services:
            for g in svc.gpus:
                assert svc_planned[(h.name, str(g), svc.name)] == svc.footprint_bytes
                assert measured[(h.name, str(g), svc.name)] > 0
            if svc.estimate:
                assert kv[(h.name, svc.name)] == svc.estimate.kv_tokens
    restarts = {(s["host"], s["service"]) for s, _ in got["gpufleet_service_restarts"]}
    assert restarts == {(h, s) for h in names for s in SERVICES}
    health = {(s["host"], s["service"]): v for s, v in frozen["gpufleet_service_healthy"]}
    assert health[(host, "chat")] == 0 and health[(names[1], "chat")] == 1
