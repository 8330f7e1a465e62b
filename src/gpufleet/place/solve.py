"""Assign instances to hosts and GPUs: OR-Tools CP-SAT, seeded by a greedy first fit.

The problem is plain integers: GPUs ("slots") with the bytes still open on them, instances
("items") with a footprint per GPU and a number of GPUs (ranks) on one host, replica groups that
never share a GPU or a host, dedicated instances that share their GPUs with nothing.

- `pack`: fewest GPUs in use (whole GPUs left free), then fewest hosts.
- `spread`: the smallest fullest GPU (the free memory balanced over every open GPU).

Small problems are one CP-SAT model solved to optimality (or the time limit); at fleet scale
(over MODEL_LIMIT item x GPU pairs) the greedy placement is improved by CP-SAT on neighbourhoods
of a few hosts at a time (large-neighbourhood search), each one an exact model of its part.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

KIB = 1024
MODEL_LIMIT = 40_000  # item x slot pairs above which one whole model is too slow on 2 cores
FLOOR = 1000  # spread: fullness in thousandths
STALE = 10  # the large-neighbourhood search stops after this many windows without a gain


@dataclass(frozen=True)
class Slot:
    """One GPU a placement may use."""

    host: str
    index: int
    total_bytes: int  # the GPU's size: what an instance's utilization is a share of
    capacity_bytes: int  # open to placed instances (after pinned ones, reserved, headroom)
    held_bytes: int = 0  # what pinned instances hold here
    in_use: bool = False  # pinned instances already run here
    closed: bool = False  # a dedicated pinned instance or a fully reserved host


@dataclass(frozen=True)
class Item:
    """One instance to place: per GPU size, its ranks and the bytes on each rank's GPU."""

    name: str
    shapes: dict[int, tuple[int, int]]  # total_bytes -> (ranks, bytes per GPU)
    hosts: frozenset[str] | None = None  # where it may go (None: any host)
    group: str | None = None  # replicas of one service
    spread: str = "gpu"  # what members of a group never share: gpu | host
    dedicated: bool = False


@dataclass(frozen=True)
class Problem:
    slots: tuple[Slot, ...]
    items: tuple[Item, ...]
    objective: str = "pack"

    def fits(self, item: Item, slot: Slot) -> bool:
        shape = item.shapes.get(slot.total_bytes)
        return (shape is not None and not slot.closed and shape[1] <= slot.capacity_bytes
                and (item.hosts is None or slot.host in item.hosts)
                and not (item.dedicated and slot.in_use))


Assignment = list[tuple[str, tuple[int, ...]]]  # per item: (host, GPU indices)


@dataclass
class Result:
    assignment: Assignment | None  # None: no placement exists (or none was found in time)
    proven: bool  # optimal, or infeasible, proven by the solver
    gpus_used: int = 0
    lower_bound: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def solve(problem: Problem, time_limit_s: float = 20.0, workers: int = 1) -> Result:
    """The best assignment found within the time limit (deterministic with one worker)."""
    started = time.monotonic()
    seed = first_fit(problem)
    if _pairs(problem, MODEL_LIMIT) <= MODEL_LIMIT:
        assignment, proven = _exact(problem, problem.slots, problem.items, seed,
                                    time_limit_s, workers)
    else:
        assignment, proven = _neighbourhoods(problem, seed, started + time_limit_s, workers)
    result = Result(assignment, proven, lower_bound=lower_bound(problem))
    if assignment is not None:
        result.gpus_used = gpus_used(problem, assignment)
    result.seconds = time.monotonic() - started
    return result


def _pairs(problem: Problem, limit: int) -> int:
    """Item x slot pairs that fit, counted up to just past `limit`."""
    count = 0
    for i in problem.items:
        count += sum(1 for s in problem.slots if problem.fits(i, s))
        if count > limit:
            break
    return count


# ---------------------------------------------------------------- measures


def gpus_used(problem: Problem, assignment: Assignment) -> int:
    used = {(s.host, s.index) for s in problem.slots if s.in_use}
    used |= {(h, g) for h, gpus in assignment for g in gpus}
    return len(used)


def lower_bound(problem: Problem) -> int:
    """The LP bound on GPUs in use: the GPUs already in use, plus the fewest open GPUs (the
    largest first) whose capacity holds every item's bytes at its smallest footprint."""
    need = sum(min(r * b for r, b in i.shapes.values()) for i in problem.items)
    need -= sum(s.capacity_bytes for s in problem.slots if s.in_use and not s.closed)
    count = sum(1 for s in problem.slots if s.in_use)
    for cap in sorted((s.capacity_bytes for s in problem.slots
                       if not s.in_use and not s.closed), reverse=True):
        if need <= 0:
            break
        need -= cap
        count += 1
    return count


def fullness(problem: Problem, assignment: Assignment) -> int:
    """The fullest open GPU, in thousandths of its capacity (spread's objective)."""
    load = _loads(problem, assignment)
    return max((math.ceil(FLOOR * (s.held_bytes + load[(s.host, s.index)])
                          / (s.held_bytes + s.capacity_bytes))
                for s in problem.slots if s.capacity_bytes > 0 and not s.closed), default=0)


def _loads(problem: Problem, assignment: Assignment) -> dict[tuple[str, int], int]:
    total = {(s.host, s.index): s.total_bytes for s in problem.slots}
    load: dict[tuple[str, int], int] = defaultdict(int)
    for item, (host, gpus) in zip(problem.items, assignment, strict=True):
        for g in gpus:
            load[(host, g)] += item.shapes[total[(host, g)]][1]
    return load


# ---------------------------------------------------------------- the greedy seed


def first_fit(problem: Problem) -> Assignment | None:
    """First fit decreasing: the largest instance first, onto the fullest GPUs it still fits
    (pack) or the emptiest (spread); when that leaves one without a place, again with the most
    constrained first (held to hosts, dedicated, replicas); None when neither order places all."""
    by_size = sorted(range(len(problem.items)), key=lambda i: -_size(problem.items[i]))
    found = _first_fit(problem, by_size)
    if found is None:
        found = _first_fit(problem, sorted(by_size, key=lambda i: _constraint(problem.items[i])))
    return found


def _constraint(item: Item) -> tuple[int, ...]:
    """Sort key: the fewer places an item may take, the sooner it is placed."""
    return (len(item.hosts) if item.hosts is not None else 1 << 30, not item.dedicated,
            item.group is None or item.spread != "host", item.group is None)


def _first_fit(problem: Problem, order: list[int]) -> Assignment | None:
    free = {(s.host, s.index): s.capacity_bytes for s in problem.slots}
    used = {(s.host, s.index) for s in problem.slots if s.in_use}
    closed = {(s.host, s.index) for s in problem.slots if s.closed}
    groups: dict[str, set[tuple[str, int] | str]] = defaultdict(set)
    by_host: dict[str, list[Slot]] = defaultdict(list)
    for s in problem.slots:
        by_host[s.host].append(s)
    # Hosts nothing has been put on yet score alike when their GPUs are alike: the greedy looks
    # at the first of each kind only (the same choice, far fewer looks at fleet scale).
    kinds: dict[str, tuple[object, ...]] = {h: tuple(
        (s.index, s.total_bytes, s.capacity_bytes, s.in_use, s.closed)
                      for s in slots) for h, slots in by_host.items()}
    touched: set[str] = set()
    top = {h: _top(slots, free, closed) for h, slots in by_host.items()}  # most free on a GPU
    out: dict[int, tuple[str, tuple[int, ...]]] = {}
    for i in order:
        item = problem.items[i]
        taken = groups[item.group] if item.group else set()
        choice = _greedy_choice(problem, item, by_host, free, used, closed, taken,
                                (kinds, touched, top))
        if choice is None:
            return None
        host, gpus = choice
        out[i] = choice
        touched.add(host)
        for g in gpus:
            free[(host, g)] -= item.shapes[_total(by_host[host], g)][1]
            used.add((host, g))
            if item.dedicated:
                closed.add((host, g))
            if item.group:
                taken.add((host, g) if item.spread == "gpu" else host)
        top[host] = _top(by_host[host], free, closed)
    return [out[i] for i in range(len(problem.items))]


def _top(slots: list[Slot], free: dict[tuple[str, int], int],
         closed: set[tuple[str, int]]) -> int:
    return max((free[(s.host, s.index)] for s in slots if (s.host, s.index) not in closed),
               default=-1)


def _size(item: Item) -> int:
    return max(r * b for r, b in item.shapes.values())


def _total(slots: list[Slot], index: int) -> int:
    return next(s.total_bytes for s in slots if s.index == index)


def _greedy_choice(problem: Problem, item: Item, by_host: dict[str, list[Slot]],
                   free: dict[tuple[str, int], int], used: set[tuple[str, int]],
                   closed: set[tuple[str, int]], taken: set[tuple[str, int] | str],
                   alike: tuple[dict[str, tuple[object, ...]], set[str], dict[str, int]]
                   | None = None) -> tuple[str, tuple[int, ...]] | None:
    best: tuple[tuple[float, ...], str, tuple[int, ...]] | None = None
    seen: set[tuple[object, ...]] = set()
    least = min(need for _r, need in item.shapes.values())
    for host, slots in by_host.items():
        if host in taken or (item.hosts is not None and host not in item.hosts):
            continue
        if alike is not None and alike[2][host] < least:  # no GPU here has the room
            continue
        if alike is not None and host not in alike[1]:
            if alike[0][host] in seen:  # scores as the untouched host of its kind before it
                continue
            seen.add(alike[0][host])
        for total, (ranks, need) in item.shapes.items():
            ok = [s for s in slots if free[(s.host, s.index)] >= need  # the cheap test first
                  and s.total_bytes == total and problem.fits(item, s)
                  and (s.host, s.index) not in closed and (s.host, s.index) not in taken
                  and not (item.dedicated and (s.host, s.index) in used)]
            if len(ok) < ranks:
                continue
            ok.sort(key=lambda s: _greedy_key(problem, s, free, used, need))
            chosen = ok[:ranks]
            score = tuple(sum(v) for v in zip(*(_greedy_key(problem, s, free, used, need)
                                                for s in chosen), strict=True))
            host_open = any((host, s.index) in used for s in slots)
            key = (0.0 if host_open or problem.objective == "spread" else 1.0, *score)
            if best is None or key < best[0]:
                best = (key, host, tuple(sorted(s.index for s in chosen)))
    return None if best is None else (best[1], best[2])


def _greedy_key(problem: Problem, s: Slot, free: dict[tuple[str, int], int],
                used: set[tuple[str, int]], need: int) -> tuple[float, ...]:
    left = free[(s.host, s.index)] - need
    if problem.objective == "spread":  # the emptiest GPU, as a share of its capacity
        return (-(left / s.capacity_bytes) if s.capacity_bytes else 0.0,)
    return (0.0 if (s.host, s.index) in used else 1.0, float(left))  # best fit on open GPUs


# ---------------------------------------------------------------- CP-SAT


def _exact(problem: Problem, slots: Sequence[Slot], items: Sequence[Item],
           seed: Assignment | None, time_limit_s: float, workers: int,
           ) -> tuple[Assignment | None, bool]:
    """One CP-SAT model of `items` over `slots`: optimal, or the best within the limit."""
    model = cp_model.CpModel()
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    choose: dict[int, list[cp_model.IntVar]] = defaultdict(list)
    for i, item in enumerate(items):
        _item_vars(model, problem, i, item, slots, x, choose)
        if not choose[i]:
            return None, True
        model.add_exactly_one(choose[i])
    _capacity(model, items, slots, x)
    _groups(model, items, slots, x)
    _objective(model, problem, items, slots, x)
    if seed is not None:
        _hint(model, items, slots, x, seed)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit_s, 0.1)
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = 0
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return (None, True) if status == cp_model.INFEASIBLE else (seed, False)
    assignment = [(_host_of(slots, x, solver, i), tuple(
        sorted(s.index for j, s in enumerate(slots) if (i, j) in x and solver.value(x[(i, j)]))))
        for i in range(len(items))]
    return assignment, status == cp_model.OPTIMAL


def _item_vars(model: cp_model.CpModel, problem: Problem, i: int, item: Item,
               slots: Sequence[Slot], x: dict[tuple[int, int], cp_model.IntVar],
               choose: dict[int, list[cp_model.IntVar]]) -> None:
    """x[i, slot] per GPU it fits; one choice of (host, GPU size) takes exactly `ranks`."""
    classes: dict[tuple[str, int], list[int]] = defaultdict(list)
    for j, s in enumerate(slots):
        if problem.fits(item, s):
            classes[(s.host, s.total_bytes)].append(j)
    for (host, total), js in classes.items():
        ranks = item.shapes[total][0]
        if len(js) < ranks:
            continue
        y = model.new_bool_var(f"y{i}_{host}_{total}")
        choose[i].append(y)
        for j in js:
            x[(i, j)] = model.new_bool_var(f"x{i}_{j}")
        model.add(sum(x[(i, j)] for j in js) == ranks * y)


def _capacity(model: cp_model.CpModel, items: Sequence[Item], slots: Sequence[Slot],
              x: dict[tuple[int, int], cp_model.IntVar]) -> None:
    on: dict[int, list[int]] = defaultdict(list)
    for i, j in x:
        on[j].append(i)
    for j, members in on.items():
        s = slots[j]
        model.add(sum(_kib_up(items[i].shapes[s.total_bytes][1]) * x[(i, j)] for i in members)
                  <= s.capacity_bytes // KIB)
        for i in members:
            if items[i].dedicated:  # nothing else beside it
                for k in members:
                    if k != i:
                        model.add_bool_or([x[(i, j)].Not(), x[(k, j)].Not()])


def _groups(model: cp_model.CpModel, items: Sequence[Item], slots: Sequence[Slot],
            x: dict[tuple[int, int], cp_model.IntVar]) -> None:
    """Replicas never share their failure domain: a GPU, or a host."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        if item.group:
            members[item.group].append(i)
    for group in members.values():
        if len(group) < 2:
            continue
        spread = items[group[0]].spread
        domains: dict[object, list[cp_model.IntVar]] = defaultdict(list)
        for i in group:
            per_host: dict[str, list[cp_model.IntVar]] = defaultdict(list)
            for j, s in enumerate(slots):
                if (i, j) in x:
                    if spread == "gpu":
                        domains[(s.host, s.index)].append(x[(i, j)])
                    else:
                        per_host[s.host].append(x[(i, j)])
            for host, xs in per_host.items():
                on = model.new_bool_var(f"h{i}_{host}")
                model.add_max_equality(on, xs)
                domains[host].append(on)
        for xs in domains.values():
            if len(xs) > 1:
                model.add_at_most_one(xs)


def _objective(model: cp_model.CpModel, problem: Problem, items: Sequence[Item],
               slots: Sequence[Slot], x: dict[tuple[int, int], cp_model.IntVar]) -> None:
    on: dict[int, list[tuple[int, cp_model.IntVar]]] = defaultdict(list)
    for (i, j), var in x.items():
        on[j].append((i, var))
    if problem.objective == "spread":
        top = model.new_int_var(0, FLOOR, "fullest")
        for j, s in enumerate(slots):
            if s.closed or s.capacity_bytes <= 0:
                continue
            load = sum(_kib_up(items[i].shapes[s.total_bytes][1]) * var for i, var in on[j])
            model.add(FLOOR * (s.held_bytes // KIB + load)
                      <= top * ((s.held_bytes + s.capacity_bytes) // KIB))
        model.minimize(top)
        return
    used, hosts = [], {}
    for j, s in enumerate(slots):
        if s.in_use or not on[j]:
            continue
        u = model.new_bool_var(f"u{j}")
        model.add_max_equality(u, [var for _i, var in on[j]])
        used.append(u)
        if s.host not in hosts:
            hosts[s.host] = model.new_bool_var(f"host_{s.host}")
        model.add_implication(u, hosts[s.host])
    # A GPU counts more than a host: among placements with the fewest GPUs, the fewest hosts.
    model.minimize((len(slots) + 1) * sum(used) + sum(hosts.values()))


def _hint(model: cp_model.CpModel, items: Sequence[Item], slots: Sequence[Slot],
          x: dict[tuple[int, int], cp_model.IntVar], seed: Assignment) -> None:
    where = {(s.host, s.index): j for j, s in enumerate(slots)}
    chosen = {(i, where[(host, g)]) for i, (host, gpus) in enumerate(seed) for g in gpus
              if (host, g) in where}
    for key, var in x.items():
        model.add_hint(var, key in chosen)


def _host_of(slots: Sequence[Slot], x: dict[tuple[int, int], cp_model.IntVar],
             solver: cp_model.CpSolver, i: int) -> str:
    return next(slots[j].host for (k, j) in x if k == i and solver.value(x[(k, j)]))


def _kib_up(n: int) -> int:
    return -(-n // KIB)


# ---------------------------------------------------------------- at fleet scale


def _neighbourhoods(problem: Problem, seed: Assignment | None, deadline: float, workers: int
                    ) -> tuple[Assignment | None, bool]:
    """Improve the greedy placement a few hosts at a time: each round frees the items of the
    emptiest hosts and re-solves them exactly over those hosts' GPUs."""
    if seed is None:
        return None, False
    current = list(seed)
    hosts = sorted({s.host for s in problem.slots})
    size, tried = 3, set[tuple[str, ...]]()
    bound = lower_bound(problem) if problem.objective == "pack" else None
    idle = 0  # windows re-solved since the last gain
    while time.monotonic() < deadline - 0.5 and idle < STALE:
        if bound is not None and gpus_used(problem, current) <= bound:
            break  # at the LP bound: nothing better exists
        window = _window(problem, current, hosts, size, tried)
        if window is None:
            break
        tried.add(window)
        improved = _resolve(problem, current, set(window), deadline, workers)
        if improved is not None:
            current, tried, idle = improved, set(), 0
        else:
            idle += 1
    return current, False


def _window(problem: Problem, current: Assignment, hosts: list[str], size: int,
            tried: set[tuple[str, ...]]) -> tuple[str, ...] | None:
    """The least-filled hosts in use, plus one empty host, not yet tried since the last gain."""
    load = _loads(problem, current)
    fill: dict[str, int] = defaultdict(int)
    for (h, _g), b in load.items():
        fill[h] += b
    ranked = sorted((h for h in hosts if fill[h] > 0), key=lambda h: fill[h])
    for start in range(len(ranked)):
        window = tuple(sorted(ranked[start:start + size]))
        if window not in tried and len(window) > 1:
            return window
    return None


def _resolve(problem: Problem, current: Assignment, window: set[str], deadline: float,
             workers: int) -> Assignment | None:
    """Re-place the items on `window`'s hosts over their GPUs; the new assignment if better."""
    inside = [i for i, (h, _g) in enumerate(current) if h in window]
    slots = tuple(s for s in problem.slots if s.host in window)
    items = tuple(problem.items[i] for i in inside)
    if not items:
        return None
    sub = Problem(slots, _local_groups(problem, current, items, window), problem.objective)
    seed = [current[i] for i in inside]
    budget = min(2.0, deadline - time.monotonic() - 0.5)
    if budget <= 0:
        return None
    found, _ = _exact(sub, slots, sub.items, seed, budget, workers)
    if found is None or _score(sub, found) >= _score(sub, seed):
        return None
    better = list(current)
    for i, placed in zip(inside, found, strict=True):
        better[i] = placed
    return better


def _local_groups(problem: Problem, current: Assignment, items: Iterable[Item],
                  window: set[str]) -> tuple[Item, ...]:
    """Within a window a replica also avoids the domains its group holds outside it."""
    outside: dict[str, set[str]] = defaultdict(set)
    for i, (h, _g) in enumerate(current):
        group = problem.items[i].group
        if group and h not in window:
            outside[group].add(h)
    out = []
    for item in items:
        if item.group and item.spread == "host" and outside[item.group]:
            allowed = frozenset(window - outside[item.group])
            hosts = allowed if item.hosts is None else item.hosts & allowed
            item = Item(item.name, item.shapes, hosts, item.group, item.spread, item.dedicated)
        out.append(item)
    return tuple(out)


def _score(problem: Problem, assignment: Assignment) -> tuple[int, int]:
    if problem.objective == "spread":
        return fullness(problem, assignment), 0
    return gpus_used(problem, assignment), len({h for h, _g in assignment})
