"""The fleet-scale path of the solver (first fit, then CP-SAT on a few hosts at a time), forced
on moderately large generated problems by lowering MODEL_LIMIT, and its assignment checked here
from the problem alone: capacity, replicas apart, dedicated GPUs alone, hosts held to, closed
GPUs untouched. No timings are asserted (benchmarks/place_scale.py measures them)."""

from __future__ import annotations

import random
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from gpufleet import inventory
from gpufleet.gpu.models import GIB
from gpufleet.place import place, solve

TOTAL = 192 * GIB


def _problem(seed: int, hosts: int = 12, items: int = 110) -> solve.Problem:
    rng = random.Random(seed)
    slots = []
    for h in range(hosts):
        for g in range(8):
            keep = rng.choice([0, 0, 0, 0.25]) * TOTAL
            in_use = rng.random() < 0.05
            held = int(0.3 * TOTAL) if in_use else 0
            slots.append(solve.Slot(f"h{h:02d}", g, TOTAL, int(TOTAL - keep - held), held,
                                    in_use, closed=h == hosts - 1))  # the last host reserved
    out = []
    for i in range(items):
        ranks = rng.choices([1, 2, 4], weights=[90, 8, 2])[0]
        size = int(rng.choice([3, 8, 20, 35, 50, 70, 95, 140]) * GIB)
        group = f"g{i % 9}" if rng.random() < 0.2 else None
        out.append(solve.Item(
            f"i{i}", {TOTAL: (ranks, size)},
            hosts=frozenset({f"h{rng.randrange(hosts - 1):02d}"}) if rng.random() < 0.05
            else None,
            group=group, spread="host" if group and int(group[1:]) % 2 else "gpu",
            dedicated=rng.random() < 0.03))
    return solve.Problem(tuple(slots), tuple(out), "pack")


def violations(problem: solve.Problem, assignment: solve.Assignment) -> list[str]:
    """Everything wrong with `assignment`, from the problem's data only."""
    slots = {(s.host, s.index): s for s in problem.slots}
    bad: list[str] = []
    load: dict[tuple[str, int], int] = defaultdict(int)
    sharing: dict[tuple[str, int], list[int]] = defaultdict(list)
    domains: dict[str, list[object]] = defaultdict(list)
    assert len(assignment) == len(problem.items)
    for i, (item, (host, gpus)) in enumerate(zip(problem.items, assignment, strict=True)):
        if not gpus or len(set(gpus)) != len(gpus):
            bad.append(f"{item.name}: GPUs {gpus}")
            continue
        here = [slots.get((host, g)) for g in gpus]
        if any(s is None for s in here):
            bad.append(f"{item.name}: no GPU {host}/{gpus}")
            continue
        totals = {s.total_bytes for s in here if s is not None}
        shape = item.shapes.get(next(iter(totals))) if len(totals) == 1 else None
        if shape is None or shape[0] != len(gpus):
            bad.append(f"{item.name}: {len(gpus)} GPUs of sizes {totals}, shapes {item.shapes}")
            continue
        if item.hosts is not None and host not in item.hosts:
            bad.append(f"{item.name}: on {host}, held to {sorted(item.hosts)}")
        for g in gpus:
            load[(host, g)] += shape[1]
            sharing[(host, g)].append(i)
        if item.group:
            domains[item.group] += [host] if item.spread == "host" else [(host, g) for g in gpus]
    for key, used in load.items():
        s = slots[key]
        if s.closed:
            bad.append(f"{key}: closed GPU used")
        if used > s.capacity_bytes:
            bad.append(f"{key}: {used} bytes over {s.capacity_bytes}")
        if any(problem.items[i].dedicated for i in sharing[key]) and (
                len(sharing[key]) > 1 or s.in_use):
            bad.append(f"{key}: a dedicated instance shares its GPU")
    for group, seen in domains.items():
        if len(seen) != len(set(seen)):
            bad.append(f"replicas of {group} share a failure domain: {seen}")
    return bad


@pytest.fixture
def scale_path(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every problem takes the neighbourhood path; the list counts the windows re-solved."""
    monkeypatch.setattr(solve, "MODEL_LIMIT", 0)
    windows: list[int] = []
    inner = solve._resolve

    def counted(*args: object, **kwargs: object) -> solve.Assignment | None:
        windows.append(1)
        return inner(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(solve, "_resolve", counted)
    return windows


@pytest.mark.parametrize("seed", [1, 2])
def test_neighbourhood_search_keeps_every_constraint(scale_path: list[int], seed: int) -> None:
    problem = _problem(seed)
    seed_assignment = solve.first_fit(problem)
    assert seed_assignment is not None, "the generated problem has a greedy placement"
    assert violations(problem, seed_assignment) == []
    result = solve.solve(problem, time_limit_s=2.0)
    assert result.assignment is not None and scale_path, "the neighbourhood path ran"
    assert violations(problem, result.assignment) == []
    assert result.gpus_used == solve.gpus_used(problem, result.assignment)
    # the search only takes improvements: never worse than its greedy seed, never under the bound
    assert result.lower_bound <= result.gpus_used <= solve.gpus_used(problem, seed_assignment)
    assert not result.proven


def test_greedy_places_host_held_items_first_when_it_must() -> None:
    """A service held to a host that large ones would fill first still gets placed (the seed the
    scale path depends on: without one it reports no placement)."""
    slots = tuple(solve.Slot(h, g, TOTAL, TOTAL) for h in ("a", "b") for g in range(2))
    big = [solve.Item(f"big{i}", {TOTAL: (1, 150 * GIB)}) for i in range(2)]
    held = solve.Item("held", {TOTAL: (1, 120 * GIB)}, hosts=frozenset({"a"}))
    problem = solve.Problem(slots, (*big, held), "pack")
    found = solve.first_fit(problem)
    assert found is not None and violations(problem, found) == []
    assert found[2][0] == "a"


def test_place_on_a_generated_fleet_through_the_scale_path(
        scale_path: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's generator at a small size, through `place` itself: what it reports is
    checked against the Placed list (pins kept, replicas apart, capacity per GPU)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        import place_scale
    finally:
        sys.path.pop(0)
    path = tmp_path / "fleet.yml"
    path.write_text(yaml.safe_dump(place_scale.fleet(services=90, hosts=14, seed=5),
                                   sort_keys=False))
    seen: list[solve.Problem] = []
    inner = solve.solve

    def kept(problem: solve.Problem, *args: object, **kwargs: object) -> solve.Result:
        seen.append(problem)
        return inner(problem, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(solve, "solve", kept)
    outcome = place(inventory.load(path, placing=True), time_limit_s=2.0)
    assert outcome.feasible, outcome.reasons
    assert scale_path
    assert outcome.result is not None and outcome.result.assignment is not None
    assert violations(seen[0], outcome.result.assignment) == []
    assert place_scale.violations(outcome, seen[0].slots) == []
    written = yaml.safe_load(path.read_text())
    entries = written["services"] + [e for h in written["hosts"].values()
                                     for e in h.get("services", [])]
    assert len(outcome.placed) == sum(e.get("replicas", 1) for e in entries)
