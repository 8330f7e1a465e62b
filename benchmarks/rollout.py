"""Rollout speed on the lab: fresh provision, no-op run, one-service rolling change.

    sudo .venv/bin/python benchmarks/rollout.py [--hosts 3] [--runs 1]

Boots a lab of its own (prefix gb, 10.231.90.0/24; real systemd + sshd hosts, emulated MI300X,
the vllm-test-double standing in for vLLM), deploys the lab fleet with `gpufleet deploy`, and
prints hosts, services, the wall time of each run and how many service restarts each caused
(counted on the hosts: units whose main process start time changed). Tears the lab down at the
end. Needs root and the lab's tools (bash .ci/lab-deps.sh).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from gpufleet.cli import main as gpufleet
from gpufleet.env import Environment
from gpufleet.lab import LabConfig, down, preflight_problem, up
from gpufleet.lab.fleet import write_lab_fleet
from gpufleet.remote import Session, SshTarget, parse_show


def starts(lab, host) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """unit -> main process start time, for every gpufleet unit on the host."""
    target = SshTarget(host.name, host.address, "root", 22, str(lab.key), str(lab.known_hosts))
    with Session(target) as session:
        out = session.run("systemctl show --timestamp=unix -p Id,ExecMainStartTimestamp "
                          "'gpufleet-*.service'").stdout
    return {f"{host.name}/{unit}": props.get("ExecMainStartTimestamp", "")
            for unit, props in parse_show(out).items() if unit.startswith("gpufleet-")}


def fleet_starts(lab) -> dict[str, str]:  # type: ignore[no-untyped-def]
    merged: dict[str, str] = {}
    for host in lab.hosts:
        merged.update(starts(lab, host))
    return merged


def timed_deploy(inventory: Path, lab) -> tuple[float, int, int]:  # type: ignore[no-untyped-def]
    """(seconds, exit status, restarts) of one `gpufleet deploy`."""
    before = fleet_starts(lab)
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    status = gpufleet(["deploy", str(inventory)], Environment(stdout=out, stderr=err, width=200))
    seconds = time.monotonic() - t0
    after = fleet_starts(lab)
    restarts = sum(1 for unit, started in after.items()
                   if started and before.get(unit) != started)
    if status != 0:
        print(out.getvalue()[-3000:], err.getvalue()[-2000:], file=sys.stderr)
    return seconds, status, restarts


def change_one_service(inventory: Path, length: int) -> None:
    doc = yaml.safe_load(inventory.read_text())
    for host in doc["hosts"].values():
        for svc in host["services"]:
            if svc["name"] == "chat":
                svc["max_model_len"] = length
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1, help="repeat no-op and change runs")
    args = parser.parse_args()
    problem = preflight_problem()
    if problem:
        print(f"cannot run the lab: {problem} (needs root; bash .ci/lab-deps.sh)", file=sys.stderr)
        return 2
    cfg = LabConfig(prefix="gb", net="10.231.90")
    down(cfg)
    try:
        lab = up(cfg, args.hosts)
        inventory = write_lab_fleet(lab, Path(tempfile.mkdtemp()) / "lab.yml")
        services = sum(len(h["services"]) for h in yaml.safe_load(inventory.read_text())
                       ["hosts"].values())
        rows = [("fresh provision", *timed_deploy(inventory, lab))]
        for i in range(args.runs):
            rows.append(("no-op run", *timed_deploy(inventory, lab)))
            change_one_service(inventory, 2048 if i % 2 == 0 else 4096)
            rows.append(("one-service rolling change", *timed_deploy(inventory, lab)))
    finally:
        down(cfg)
    print(f"lab: {args.hosts} hosts, {services} services "
          f"({services // args.hosts} per host), batch size 1, health check: real request")
    print(f"{'run':<28}{'seconds':>9}{'exit':>6}{'service restarts':>18}")
    for name, seconds, status, restarts in rows:
        print(f"{name:<28}{seconds:>9.1f}{status:>6}{restarts:>18}")
    for name in ("no-op run", "one-service rolling change"):
        times = [r[1] for r in rows if r[0] == name]
        if len(times) > 1:
            print(f"{name}: median {statistics.median(times):.1f} s over {len(times)} runs")
    return 0 if all(r[2] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
