"""How `gpufleet plan` scales with the fleet: 10, 100 and 1,000 hosts x 8 GPUs x 12 services.

    python benchmarks/plan_scale.py [--hosts 10 100 1000] [--runs 3] [--inventory FILE]

Each fleet is the bundled example (inventories/berget.yml: one 8 x MI300X host with 12
services) with its host copied N times under new names and addresses (.example, never
contacted). For every size it runs the real command line in a fresh process, as an operator
would, and prints the median wall time and the peak resident memory of `gpufleet plan --json`
and of the text view, plus the time per host (linear growth keeps it flat).

Targets (issue 10): 1,000 hosts in < 1 s with --json and < 2 s as text, peak memory < 500 MiB.
Exit status 0 (also when targets are missed); 2 when the inventory cannot be read.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"json": 1.0, "text": 2.0}  # seconds at 1,000 hosts
MEMORY_TARGET_MIB = 500


def fleet(template: dict, hosts: int) -> dict:
    """The template's first host copied `hosts` times (gpu-0001.scale.example, ...)."""
    name, host = next(iter(template["hosts"].items()))
    out = {"fleet": copy.deepcopy(template["fleet"]), "hosts": {}}
    for i in range(1, hosts + 1):
        copy_ = copy.deepcopy(host)
        copy_["address"] = f"{name}-{i:04d}.scale.example"
        out["hosts"][f"{name}-{i:04d}"] = copy_
    return out


def run_once(path: Path, as_json: bool) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit status) of one `gpufleet plan` in a fresh process.

    Each run is its own `python -c` wrapper that reports the child's peak RSS, so one run's
    peak never hides another's (RUSAGE_CHILDREN keeps the maximum over all children)."""
    argv = [sys.executable, "-m", "gpufleet", "plan", str(path)] + (["--json"] if as_json else [])
    probe = ("import resource,subprocess,sys; r=subprocess.run(sys.argv[1:], "
             "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN)"
             ".ru_maxrss); sys.exit(r.returncode)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True,
                          env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"})
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: the plan has findings; anything else is a failure
        sys.exit(f"error: {' '.join(argv[2:])} exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, int(done.stdout.split()[-1]) / 1024, done.returncode


def measure(path: Path, as_json: bool, runs: int) -> tuple[float, float, int]:
    results = [run_once(path, as_json) for _ in range(runs)]
    return (statistics.median(r[0] for r in results), max(r[1] for r in results),
            results[-1][2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--inventory", default=str(ROOT / "inventories" / "berget.yml"))
    args = parser.parse_args(argv)
    try:
        template = yaml.safe_load(Path(args.inventory).read_text())
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: cannot read {args.inventory}: {exc}", file=sys.stderr)
        return 2
    services = sum(len(h.get("services", [])) for h in template["hosts"].values())
    print(f"fleet: {args.inventory}'s first host copied N times ({services} services a host); "
          f"median of {args.runs} runs; peak RSS is the largest run's")
    print(f"{'hosts':>6} {'view':>5} {'seconds':>8} {'ms/host':>8} {'peak MiB':>9} {'exit':>5}")
    with tempfile.TemporaryDirectory(prefix="gpufleet-scale-") as tmp:
        for hosts in args.hosts:
            path = Path(tmp) / f"fleet-{hosts}.yml"
            path.write_text(yaml.safe_dump(fleet(template, hosts), sort_keys=False))
            for view in ("json", "text"):
                wall, peak, status = measure(path, view == "json", args.runs)
                mark = ""
                if hosts == 1000:
                    ok = wall < TARGETS[view] and peak < MEMORY_TARGET_MIB
                    mark = f"  target < {TARGETS[view]:g} s, < {MEMORY_TARGET_MIB} MiB: " + (
                        "met" if ok else "MISSED")
                print(f"{hosts:>6} {view:>5} {wall:>8.2f} {1000 * wall / hosts:>8.2f} "
                      f"{peak:>9.0f} {status:>5}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
