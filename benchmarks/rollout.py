"""Rollout speed on the lab, against a minimal hand-written pyinfra deploy of the same files.

    sudo .venv/bin/python benchmarks/rollout.py [--hosts 3] [--runs 2] [--scale-hosts 10]

Boots a lab of its own (prefix gb, 10.231.90.0/24; real systemd + sshd hosts, emulated MI300X,
the vllm-test-double standing in for vLLM), provisions the lab fleet with `gpufleet deploy`,
then alternates, `--runs` times:

  gpufleet no-op        `gpufleet deploy` of the converged fleet (lock, survey; no host
                        changed, so no validation)
  minimal no-op         the minimal deploy below, on the same converged hosts
  gpufleet change       one service's max_model_len changed, `gpufleet deploy` (batch size 1,
                        health gate with a real request, final validation)
  minimal change        another max_model_len, applied by the minimal deploy
  gpufleet change, batch size N   a third value, every host in one batch (parallel, as the
                        minimal deploy is; still health-gated and validated)

The minimal deploy is what a person would hand-write in pyinfra for the same rendered units and
env files: files.put each file, one daemon-reload if a unit changed, restart what changed,
ensure running — all hosts at once, TCP_NODELAY on, no survey, no health gate, no validation.
Then a second lab of `--scale-hosts` hosts measures the no-op there (provisioned with a batch
size of all hosts). Prints every run (seconds, exit status, service restarts counted on the
hosts) and the ratios the safe-rollouts issue sets targets for. Needs root and the lab's tools.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import yaml
from pyinfra.api import Config, Inventory, State, deploy
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from gpufleet import inventory as inventory_yaml
from gpufleet.cli import main as gpufleet
from gpufleet.deploy import host_targets, no_delay
from gpufleet.env import Environment
from gpufleet.host.layout import UNIT_DIR, unit_name
from gpufleet.host.ssh import Session, SshTarget
from gpufleet.host.systemctl import parse_show
from gpufleet.plan import build_plan
from gpufleet.render import RenderedFile
from gpufleet_lab import LabConfig, down, preflight_problem, up
from gpufleet_lab.fleet import write_lab_fleet

Row = tuple[str, float, int, int, float, float]


def starts(lab: Any, host: Any) -> dict[str, str]:
    """unit -> main process start time, for every gpufleet unit on the host."""
    target = SshTarget(host.name, host.address, "root", 22, str(lab.key), str(lab.known_hosts))
    with Session(target) as session:
        out = session.run("systemctl show --timestamp=unix -p Id,ExecMainStartTimestamp "
                          "'gpufleet-*.service'").stdout
    return {f"{host.name}/{unit}": props.get("ExecMainStartTimestamp", "")
            for unit, props in parse_show(out).items() if unit.startswith("gpufleet-")}


def fleet_starts(lab: Any) -> dict[str, str]:
    merged: dict[str, str] = {}
    for host in lab.hosts:
        merged.update(starts(lab, host))
    return merged


def busy_cpu_s() -> float:
    """CPU seconds this machine has spent busy so far, all cores: the controller and every lab
    host (the hosts are containers on this kernel, so /proc/stat counts their work too)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed(name: str, lab: Any, run: Callable[[], int]) -> Row:
    """(name, seconds, exit status, restarts, machine CPU s, controller CPU s) of one run."""
    before = fleet_starts(lab)
    t0, cpu0, own0 = time.monotonic(), busy_cpu_s(), time.process_time()
    status = run()
    seconds, cpu = time.monotonic() - t0, busy_cpu_s() - cpu0
    own = time.process_time() - own0  # this process: the controller, all its threads
    after = fleet_starts(lab)
    restarts = sum(1 for unit, started in after.items()
                   if started and before.get(unit) != started)
    return name, seconds, status, restarts, cpu, own


def gpufleet_deploy(inventory: Path, *args: str) -> Callable[[], int]:
    def run() -> int:
        out, err = io.StringIO(), io.StringIO()
        status = gpufleet(["deploy", str(inventory), *args],
                          Environment(stdout=out, stderr=err, width=200))
        if status != 0:
            print(out.getvalue()[-3000:], err.getvalue()[-2000:], file=sys.stderr)
        return status
    return run


# ---------------------------------------------------------------- the minimal pyinfra deploy


@deploy("minimal")
def minimal_units(rendered: list[RenderedFile], services: list[str]) -> None:
    uploads = {f.path: files.put(src=StringIO(f.content), dest=f.path, mode=f.mode,
                                 user=f.owner, group=f.group) for f in rendered}
    units = [meta for path, meta in uploads.items() if path.startswith(f"{UNIT_DIR}/")]
    systemd.daemon_reload(_if=any_changed(*units))
    for name in services:
        mine = [m for p, m in uploads.items()
                if p in (f"{UNIT_DIR}/{unit_name(name)}", f"/etc/gpufleet/{name}.env")]
        systemd.service(service=unit_name(name), running=None, restarted=True,
                        _if=any_changed(*mine))
        systemd.service(service=unit_name(name), running=True, enabled=True)


def minimal_deploy(inventory: Path, lab: Any) -> Callable[[], int]:
    def run() -> int:
        plan = build_plan(inventory_yaml.load(inventory))
        targets = host_targets(plan)
        rows = [(lab.host(t.name).address, {"ssh_user": "root", "ssh_key": str(lab.key),
                                            "ssh_known_hosts_file": str(lab.known_hosts),
                                            "ssh_strict_host_key_checking": "yes"})
                for t in targets]
        state = State(Inventory((rows, {})), Config())
        connect_all(state)
        for host in state.activated_hosts:
            no_delay(host)
        by_address = {lab.host(t.name).address: t for t in targets}
        for host in state.inventory:
            t = by_address[host.name]
            add_deploy(state, minimal_units, list(t.files), [s.name for s in t.services],
                       host=[host])
        run_ops(state)
        disconnect_all(state)
        return 0 if len(state.failed_hosts) == 0 else 1
    return run


def change_one_service(inventory: Path, length: int) -> None:
    doc = yaml.safe_load(inventory.read_text())
    for host in doc["hosts"].values():
        for svc in host["services"]:
            if svc["name"] == "chat":
                svc["max_model_len"] = length
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))


# ---------------------------------------------------------------- the runs


def small_fleet(hosts: int, runs: int) -> tuple[list[Row], int]:
    cfg = LabConfig(prefix="gb", net="10.231.90")
    down(cfg)
    try:
        lab = up(cfg, hosts)
        inventory = write_lab_fleet(lab, Path(tempfile.mkdtemp()) / "lab.yml")
        services = sum(len(h["services"]) for h in yaml.safe_load(inventory.read_text())
                       ["hosts"].values())
        rows = [timed("fresh provision", lab, gpufleet_deploy(inventory))]
        lengths = iter([2048, 3072, 4096, 2560, 3584, 1536] * runs)
        for _ in range(runs):
            rows.append(timed("gpufleet no-op", lab, gpufleet_deploy(inventory)))
            rows.append(timed("minimal no-op", lab, minimal_deploy(inventory, lab)))
            change_one_service(inventory, next(lengths))
            rows.append(timed("gpufleet one-service change", lab, gpufleet_deploy(inventory)))
            change_one_service(inventory, next(lengths))
            rows.append(timed("minimal one-service change", lab, minimal_deploy(inventory, lab)))
            gpufleet_deploy(inventory)()  # converged again (validates what minimal did)
            change_one_service(inventory, next(lengths))
            rows.append(timed(f"gpufleet change, batch size {hosts}", lab,
                              gpufleet_deploy(inventory, "--batch-size", str(hosts))))
    finally:
        down(cfg)
    return rows, services


def large_fleet(hosts: int, runs: int) -> list[Row]:
    cfg = LabConfig(prefix="gs", net="10.231.91")
    down(cfg)
    try:
        lab = up(cfg, hosts)
        inventory = write_lab_fleet(lab, Path(tempfile.mkdtemp()) / "lab.yml")
        rows = [timed(f"fresh provision ({hosts} hosts)", lab,
                      gpufleet_deploy(inventory, "--batch-size", str(hosts)))]
        for _ in range(runs):
            rows.append(timed(f"gpufleet no-op ({hosts} hosts)", lab, gpufleet_deploy(inventory)))
    finally:
        down(cfg)
    return rows


def median(rows: list[Row], name: str) -> float:
    return statistics.median(r[1] for r in rows if r[0] == name)


def cpu_median(rows: list[Row], name: str, column: int = 4) -> float:
    return statistics.median(float(r[column]) for r in rows if r[0] == name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2, help="repeat the four runs")
    parser.add_argument("--scale-hosts", type=int, default=10, help="0: skip the large fleet")
    args = parser.parse_args()
    problem = preflight_problem()
    if problem:
        print(f"cannot run the lab: {problem} (needs root; bash .ci/lab-deps.sh)", file=sys.stderr)
        return 2
    rows, services = small_fleet(args.hosts, args.runs)
    if args.scale_hosts:
        rows += large_fleet(args.scale_hosts, args.runs)
    print(f"lab: {args.hosts} hosts, {services} services ({services // args.hosts} per host), "
          "batch size 1, health check: real request")
    print(f"{'run':<36}{'seconds':>9}{'exit':>6}{'restarts':>10}{'machine CPU s':>15}"
          f"{'controller CPU s':>18}")
    for name, seconds, status, restarts, cpu, own in rows:
        print(f"{name:<36}{seconds:>9.2f}{status:>6}{restarts:>10}{cpu:>15.2f}{own:>18.2f}")
    noop, minimal = median(rows, "gpufleet no-op"), median(rows, "minimal no-op")
    change = median(rows, "gpufleet one-service change")
    minimal_change = median(rows, "minimal one-service change")
    print(f"no-op vs minimal: {noop:.1f} s / {minimal:.1f} s = {noop / minimal:.2f}x "
          "(target <= 1.5x)")
    print(f"one-service change vs minimal: {change:.1f} s / {minimal_change:.1f} s = "
          f"{change / minimal_change:.2f}x (target <= 2x)")
    wide = median(rows, f"gpufleet change, batch size {args.hosts}")
    print(f"the same change with all hosts in one batch: {wide:.1f} s / {minimal_change:.1f} s"
          f" = {wide / minimal_change:.2f}x")
    if args.scale_hosts:
        large = median(rows, f"gpufleet no-op ({args.scale_hosts} hosts)")
        print(f"{args.scale_hosts}-host no-op vs {args.hosts}-host no-op: {large:.2f} s / "
              f"{noop:.2f} s = {large / noop:.2f}x (target <= 1.5x)")
        cpu_large = cpu_median(rows, f"gpufleet no-op ({args.scale_hosts} hosts)")
        cpu_small = cpu_median(rows, "gpufleet no-op")
        added = args.scale_hosts - args.hosts
        per_host = (cpu_large - cpu_small) / added
        own_large = cpu_median(rows, f"gpufleet no-op ({args.scale_hosts} hosts)", 5)
        own_small = cpu_median(rows, "gpufleet no-op", 5)
        print(f"no-op CPU, controller and hosts together: {cpu_small:.2f} s at {args.hosts} "
              f"hosts, {cpu_large:.2f} s at {args.scale_hosts} hosts = {per_host * 1000:.0f} ms "
              f"per added host, on {os.cpu_count()} cores shared by every lab host; of it the "
              f"controller's own: {(own_large - own_small) / added * 1000:.0f} ms per added host")
    return 0 if all(r[2] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
