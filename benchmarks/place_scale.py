"""How `gpufleet place` scales: 1,000 services onto 125 hosts x 8 MI300X, end to end.

    python benchmarks/place_scale.py [--services 1000] [--hosts 125] [--seed 11]
                                     [--time-limit 20] [--objective pack] [--json FILE]

The fleet is generated (deterministic with --seed): small and medium LLMs asking for
`concurrency` or `kv_tokens` at a max_model_len, embedders, rerankers and Whisper, replicas
spread over GPUs or hosts, a few big models that need TP > 1, a few `dedicated` ones, some
pinned (`gpus:` under a host) or held to a host (`host:`), GPU shares reserved on some hosts,
two hosts reserved whole, headroom. Every model is in the bundled catalog; hostnames are under
.example and are never contacted.

It runs the stages of `gpufleet place FILE --out PLACED` in this process, as the command does,
and times each: load (the inventory read with `placing=True`), sizing (model facts, each
service's utilization and TP per GPU size, the problem built), solve (CP-SAT, at this size the
large-neighbourhood search), write (the placed inventory, ruamel round trip) and re-plan
(`gpufleet plan`'s own code on what was written, with the render checks). It prints those, the
total, GPUs in use, the LP lower bound, the gap to it, the re-plan's errors and an independent
check of the assignment (capacity per GPU, replicas apart, dedicated GPUs alone, pins kept,
reserved hosts empty).

Targets (issue 11): a valid placement in < 30 s in total on the 2-core machine, within 5 % of
the LP lower bound on GPUs used. Exit status 0 (also when targets are missed); 1 when no valid
placement came out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

from gpufleet import inventory
from gpufleet.commands.place import _plan
from gpufleet.gpu.models import GIB
from gpufleet.place import Outcome, place, solve
from gpufleet.place.write import placed_text

TIME_TARGET_S = 30.0
GAP_TARGET = 0.05

# (kind, model, the longest max_model_len drawn, weight in the mix)
SMALL = [("llm", "meta-llama/Llama-3.1-8B-Instruct", 131072, 6),
         ("llm", "Qwen/Qwen2.5-7B-Instruct", 32768, 5),
         ("llm", "Qwen/Qwen2.5-0.5B-Instruct", 32768, 2),
         ("llm", "openai/gpt-oss-20b", 131072, 4),
         ("llm", "google/gemma-4-E4B-it", 131072, 2),
         ("llm", "teknium/OpenHermes-2.5-Mistral-7B", 32768, 2),
         ("llm", "TheBloke/zephyr-7B-beta-AWQ", 32768, 1),
         ("llm", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", 2048, 1)]
MEDIUM = [("llm", "Qwen/Qwen2.5-14B-Instruct", 32768, 4),
          ("llm", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", 65536, 2),
          ("llm", "mistralai/Mistral-Small-24B-Instruct-2501", 32768, 3),
          ("llm", "google/gemma-3-27b-it", 32768, 2),
          ("llm", "Qwen/Qwen3-30B-A3B", 40960, 3),
          ("llm", "Qwen/Qwen3-32B", 40960, 3),
          ("llm", "Qwen/Qwen2.5-32B-Instruct", 32768, 2),
          ("llm", "openai/gpt-oss-120b", 131072, 2),
          ("llm", "Qwen/Qwen2.5-72B-Instruct-GPTQ-Int4", 32768, 1)]
POOLING = [("embed", "intfloat/multilingual-e5-large", 512, 5),
           ("rerank", "BAAI/bge-reranker-v2-m3", 8192, 4),
           ("whisper", "openai/whisper-large-v3", 448, 2)]
BIG = [("llm", "meta-llama/Llama-3.1-70B-Instruct", 65536, 3),  # weights + KV past one GPU
       ("llm", "Qwen/Qwen2.5-72B-Instruct", 32768, 2),
       ("llm", "Qwen/Qwen3-235B-A22B-FP8", 40960, 2),
       ("llm", "deepseek-ai/DeepSeek-R1", 32768, 1)]
LENGTHS = (2048, 4096, 8192, 16384, 32768, 65536, 131072)


def _pick(rng: random.Random, table: list[tuple[str, str, int, int]]) -> tuple[str, str, int]:
    kind, model, longest, _ = rng.choices(table, weights=[w for *_x, w in table])[0]
    return kind, model, longest


def _service(rng: random.Random, i: int, tier: str) -> dict:
    table = {"small": SMALL, "medium": MEDIUM, "pooling": POOLING, "big": BIG}[tier]
    kind, model, longest = _pick(rng, table)
    slug = re.sub(r"[^a-z0-9]+", "-", model.split("/")[1].lower())[:24].strip("-")
    svc: dict = {"name": f"s{i:04d}-{slug}",
                 "kind": kind, "model": model, "port": 8000 + i}
    if kind != "llm":
        svc["max_model_len"] = longest
        return svc
    svc["max_model_len"] = rng.choice([n for n in LENGTHS if n <= longest][-4:])
    if tier == "big":
        svc["concurrency"] = rng.choice([8, 16, 32])
    elif rng.random() < 0.6:
        svc["concurrency"] = rng.choice([1, 2, 4, 8, 16] if tier == "small" else [1, 2, 4, 8])
    else:
        svc["kv_tokens"] = rng.choice([16384, 65536, 131072, 262144, 524288])
    return svc


def fleet(services: int = 1000, hosts: int = 125, seed: int = 11) -> dict:
    """A generated placement inventory (plain data, for yaml.safe_dump)."""
    rng = random.Random(seed)
    names = [f"gpu-{h:03d}" for h in range(1, hosts + 1)]
    out: dict = {
        "fleet": {"name": "scale", "gpu": "mi300x", "vllm_version": "0.33.0",
                  "image": "vllm/vllm-openai-rocm:v0.33.0",
                  "placement": {"objective": "pack", "headroom_gib": 1.0}},
        "hosts": {n: {"address": f"{n}.scale.example", "gpu_count": 8} for n in names},
        "services": [],
    }
    for n in names[-2:]:  # two hosts held back whole (a maintenance window)
        out["hosts"][n]["reserved"] = True
    for n in rng.sample(names[:-2], max(hosts // 10, 1)):  # a share kept free on some GPUs
        out["hosts"][n]["reserved"] = {g: rng.choice([0.25, 0.5])
                                       for g in rng.sample(range(8), 2)}
    for n in rng.sample(names[:-2], max(hosts // 20, 1)):
        out["hosts"][n]["headroom_gib"] = 4.0
    pinned_hosts = rng.sample(names[:-2], max(hosts // 12, 1))
    tiers = ["small"] * 45 + ["medium"] * 24 + ["pooling"] * 27 + ["big"] * 4
    i = 0
    for n in pinned_hosts:  # already running: sized, never moved
        for g in rng.sample(range(8), 2):
            i += 1
            svc = _service(rng, i, "small")
            svc.pop("concurrency", None)
            svc.pop("kv_tokens", None)
            svc.update(gpus=[g], gpu_memory_utilization=rng.choice([0.2, 0.3, 0.45]),
                       max_model_len=min(svc["max_model_len"], 8192))
            out["hosts"][n].setdefault("services", []).append(svc)
    while i < services:
        i += 1
        tier = rng.choice(tiers)
        svc = _service(rng, i, tier)
        r = rng.random()
        if tier != "big" and r < 0.15:
            svc["replicas"] = rng.choice([2, 2, 3, 4])
            svc["spread"] = rng.choice(["gpu", "host"])
        elif tier in ("medium", "big") and r < 0.22:
            svc["dedicated"] = True
        elif r > 0.97:  # held to one host
            svc["host"] = rng.choice(names[:-2])
        if rng.random() < 0.03 and "host" not in svc and svc.get("spread") != "host":
            out["hosts"][rng.choice(names[:-2])].setdefault("services", []).append(svc)
        else:
            out["services"].append(svc)
    return out


# ---------------------------------------------------------------- independent checks


def violations(outcome: Outcome, problem_slots: tuple[solve.Slot, ...] | None = None
               ) -> list[str]:
    """What is wrong with the placement, checked from the Placed list and the problem's slots
    alone (not solve.py's own checks): capacity, replicas apart, dedicated, pins, reserved."""
    result = outcome.result
    if result is None or result.assignment is None:
        return ["no assignment"]
    slots = {(s.host, s.index): s for s in (problem_slots or SLOTS[0])}
    bad: list[str] = []
    load: dict[tuple[str, int], int] = defaultdict(int)
    who: dict[tuple[str, int], list[str]] = defaultdict(list)
    for p in outcome.placed:
        if not p.moved:
            continue
        if len(p.gpus) != p.sizing.ranks or len(set(p.gpus)) != len(p.gpus):
            bad.append(f"{p.name}: {len(p.gpus)} GPUs for {p.sizing.ranks} ranks")
        for g in p.gpus:
            load[(p.host, g)] += p.sizing.used_bytes
            who[(p.host, g)].append(p.name)
    for key, used in load.items():
        s = slots[key]
        if s.closed and used:
            bad.append(f"{key}: closed GPU used")
        if used > s.capacity_bytes:
            bad.append(f"{key}: {used / GIB:.1f} GiB over {s.capacity_bytes / GIB:.1f}")
    groups: dict[tuple, list] = defaultdict(list)
    for p in outcome.placed:
        if p.moved and p.entry.svc.replicas > 1:
            groups[p.entry.at].append(p)
        if p.moved and p.entry.svc.dedicated:
            for g in p.gpus:
                if len(who[(p.host, g)]) > 1 or slots[(p.host, g)].in_use:
                    bad.append(f"{p.name}: dedicated GPU {p.host}/{g} shared")
        if p.entry.host is not None and p.host != p.entry.host:
            bad.append(f"{p.name}: on {p.host}, held to {p.entry.host}")
        if not p.moved and tuple(p.entry.svc.gpus or ()) != p.gpus:
            bad.append(f"{p.name}: pinned GPUs moved")
    for members in groups.values():
        spread = members[0].entry.svc.spread
        domains = [p.host for p in members] if spread == "host" else [
            (p.host, g) for p in members for g in p.gpus]
        if len(set(domains)) != len(domains):
            bad.append(f"{members[0].entry.svc.name}: replicas share a {spread}")
    return bad


SLOTS: list[tuple[solve.Slot, ...]] = [()]  # the last problem's slots (see _capture)


def _capture() -> dict[str, float]:
    """Wrap solve.solve so the solve stage is timed apart and its slots kept for the check."""
    timing = {"solve": 0.0, "solve_cpu": 0.0}
    inner = solve.solve

    def timed(problem: solve.Problem, *args: object, **kwargs: object) -> solve.Result:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return inner(problem, *args, **kwargs)  # type: ignore[arg-type]
        finally:
            timing["solve"] += time.perf_counter() - started
            timing["solve_cpu"] += time.process_time() - cpu
            SLOTS[0] = problem.slots

    solve.solve = timed  # type: ignore[assignment]
    return timing


# ---------------------------------------------------------------- the run


def run(path: Path, time_limit: float, objective: str | None) -> dict:
    """Each stage's wall and CPU seconds (CPU: this process's own, which other work on a shared
    machine does not inflate as much), the figures and the checks."""
    stages: dict[str, tuple[float, float]] = {}
    timing = _capture()
    started, cpu0 = time.perf_counter(), time.process_time()
    clock = [started, cpu0]

    def lap(stage: str, less: tuple[float, float] = (0.0, 0.0)) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        stages[stage] = (now - clock[0] - less[0], cpu - clock[1] - less[1])
        clock[:] = [now, cpu]

    inv = inventory.load(path, placing=True)
    lap("load")
    outcome = place(inv, objective, time_limit)
    lap("sizing", (timing["solve"], timing["solve_cpu"]))
    stages["solve"] = (timing["solve"], timing["solve_cpu"])
    report: dict = {"feasible": outcome.feasible, "reasons": outcome.reasons[:5]}
    if outcome.feasible:
        text = placed_text(path.read_text(encoding="utf-8"), outcome.placed)
        lap("write")
        with tempfile.TemporaryDirectory(prefix="gpufleet-place-") as tmp:
            plan = _plan(text, Path(tmp) / "placed.yml")
        lap("replan")
        errors = [f for f in plan.findings if f.severity == "error"]
        report["replan_errors"] = len(errors)
        report["replan_error_examples"] = [f"{f.code}: {f.message}" for f in errors[:5]]
        report["violations"] = violations(outcome)
    total, total_cpu = time.perf_counter() - started, time.process_time() - cpu0
    result = outcome.result
    items = len(result.assignment) if result and result.assignment else 0
    report.update(stages={k: round(v[0], 3) for k, v in stages.items()},
                  stages_cpu={k: round(v[1], 3) for k, v in stages.items()},
                  total_s=round(total, 3), total_cpu_s=round(total_cpu, 3),
                  instances=items, objective=outcome.objective)
    if result is not None and result.assignment is not None:
        gap = result.gpus_used / result.lower_bound - 1 if result.lower_bound else 0.0
        report.update(gpus_used=result.gpus_used, lower_bound=result.lower_bound,
                      gap=round(gap, 4), optimal=result.proven, solver_notes=result.notes)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=125)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--time-limit", type=float, default=20.0,
                        help="the solver's limit, as `gpufleet place --time-limit` (default 20)")
    parser.add_argument("--objective", choices=("pack", "spread"))
    parser.add_argument("--json", metavar="FILE", help="also write the figures here as JSON")
    parser.add_argument("--keep", metavar="FILE", help="keep the generated inventory here")
    args = parser.parse_args(argv)
    data = fleet(args.services, args.hosts, args.seed)
    with tempfile.TemporaryDirectory(prefix="gpufleet-place-scale-") as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "fleet.yml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        report = run(path, args.time_limit, args.objective)
    report.update(services=args.services, hosts=args.hosts, seed=args.seed,
                  time_limit_s=args.time_limit)
    print(f"fleet: {args.services} services ({report['instances']} instances with replicas) "
          f"onto {args.hosts} hosts x 8 MI300X, seed {args.seed}, solver limit "
          f"{args.time_limit:g} s, objective {report['objective']}")
    if not report["feasible"]:
        print("no placement: " + "; ".join(report["reasons"]))
        return 1
    print(f"{'stage':<8} {'wall s':>8} {'CPU s':>8}")
    for stage, seconds in report["stages"].items():
        print(f"{stage:<8} {seconds:>8.2f} {report['stages_cpu'][stage]:>8.2f}")
    print(f"{'total':<8} {report['total_s']:>8.2f} {report['total_cpu_s']:>8.2f}")
    print(f"load average at the end (1 min, {os.cpu_count()} CPUs): {os.getloadavg()[0]:.2f}")
    print(f"GPUs used {report['gpus_used']}, LP lower bound {report['lower_bound']}, "
          f"gap {100 * report['gap']:.1f} %")
    print(f"re-plan errors: {report['replan_errors']}; independent check: "
          f"{len(report['violations'])} violation(s)")
    for line in report["replan_error_examples"] + report["violations"][:5]:
        print(f"  {line}")
    valid = not report["replan_errors"] and not report["violations"]
    print(f"targets: valid placement in < {TIME_TARGET_S:g} s: "
          f"{'met' if valid and report['total_s'] < TIME_TARGET_S else 'MISSED'}; "
          f"within {100 * GAP_TARGET:g} % of the bound: "
          f"{'met' if report['gap'] <= GAP_TARGET else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
