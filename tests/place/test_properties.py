"""`gpufleet place` on random small fleets (hypothesis), issue 11's property tests.

1. Whatever `place` writes plans with no error when re-planned with the real loader and planner
   (`inventory.load` + `build_plan`, not the solver's own numbers), and in that plan every
   placed service holds the KV tokens it asked for, pins are kept, replicas never share the
   failure domain they asked for, reserved shares and headroom stay free, dedicated services are
   alone on their GPUs.
2. When `place` says infeasible, an exhaustive search finds no placement either.
3. Under `pack`, its GPU count equals the exhaustive optimum (and its lower bound is one);
   under `spread`, its fullest GPU is as empty as the exhaustive search's best.

The exhaustive search (`_Brute`) is written here, apart from gpufleet.place.solve: it enumerates
every (host, GPUs) choice of every instance over plain integers. Its input comes two ways: from
random inventories (built here from the inventory itself, with only the per-GPU sizing taken
from `place`, which property 1's re-plan checks), and from random `solve.Problem`s directly.
Sizes there are whole MiB: the solver counts bytes in KiB rounded up (conservative by under a
KiB per instance per GPU), which the search does not model.
"""

from __future__ import annotations

import io
import itertools
import json
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from support import FUZZ_FIXED, fuzz_examples

from gpufleet import inventory
from gpufleet.cli import main
from gpufleet.env import Environment
from gpufleet.gpu.models import GIB, gpu_model
from gpufleet.inventory import Inventory
from gpufleet.place import Outcome, _entries, _sizings, solve
from gpufleet.place.demand import Sizing
from gpufleet.plan import PlannedService, build_plan

MIB = 1024 * 1024
SOLVER_S = 10.0  # small instances solve in milliseconds; never reached

# ---------------------------------------------------------------- the exhaustive search


@dataclass(frozen=True)
class BSlot:
    host: str
    index: int
    total: int
    cap: int  # bytes open to placed instances
    in_use: bool  # a pinned instance runs here
    closed: bool  # nothing may be placed here
    held: int = 0  # bytes pinned instances hold here (spread counts them in the fullness)


@dataclass(frozen=True)
class BItem:
    shapes: tuple[tuple[int, int, int], ...]  # (GPU total, ranks, bytes on each rank's GPU)
    hosts: frozenset[str] | None
    group: str | None
    spread: str
    dedicated: bool


Choice = tuple[str, tuple[int, ...], int]  # host, GPU indices, bytes on each


@dataclass
class _Brute:
    """Every assignment, depth first: capacity per GPU, one GPU size per instance, replicas
    apart (GPU or host), dedicated instances alone and never beside a pinned one."""

    slots: list[BSlot]
    items: list[BItem]
    objective: str = "pack"  # what `optimize` minimises: GPUs in use | the fullest GPU
    nodes: int = 0
    best: int | None = None
    found: list[Choice] | None = None
    _load: dict[tuple[str, int], int] = field(default_factory=dict)
    _count: dict[tuple[str, int], int] = field(default_factory=dict)
    _alone: set[tuple[str, int]] = field(default_factory=set)
    _domains: dict[str, set[object]] = field(default_factory=lambda: defaultdict(set))

    def choices(self, item: BItem) -> list[Choice]:
        out = []
        hosts = sorted({s.host for s in self.slots})
        for host in hosts:
            if item.hosts is not None and host not in item.hosts:
                continue
            for total, ranks, size in item.shapes:
                ok = [s.index for s in self.slots if s.host == host and s.total == total
                      and not s.closed and size <= s.cap and not (item.dedicated and s.in_use)]
                out += [(host, combo, size) for combo in itertools.combinations(ok, ranks)]
        return out

    def run(self, optimize: bool) -> int | None:
        """The best objective over all assignments (optimize), else the first found's."""
        self._load = {(s.host, s.index): 0 for s in self.slots}
        self._count = dict.fromkeys(self._load, 0)
        self._cap = {(s.host, s.index): s.cap for s in self.slots}
        self._pinned = {(s.host, s.index) for s in self.slots if s.in_use}
        options = [self.choices(i) for i in self.items]
        # fewest options first; identical instances (replicas) next to each other, and their
        # choices in non-decreasing order (any assignment can be permuted to that)
        order = sorted(range(len(self.items)), key=lambda i: (len(options[i]), repr(self.items[i])))
        self._order, self._options, self._optimize = order, options, optimize
        self._picked: dict[int, int] = {}
        self._chosen: dict[int, Choice] = {}
        self._dfs(0)
        return self.best

    def _used(self) -> int:
        return len(self._pinned | {k for k, n in self._count.items() if n})

    def _metric(self) -> int:
        """Never falls as instances are added, so it prunes: GPUs in use, or the fullest."""
        if self.objective == "spread":
            return _fullest(self.slots, self._load)
        return self._used()

    def _dfs(self, depth: int) -> bool:
        self.nodes += 1
        if self.best is not None and (not self._optimize or self._metric() >= self.best):
            return True
        if depth == len(self._order):
            self.best = self._metric()
            self.found = [self._chosen[i] for i in range(len(self.items))]
            return True
        i = self._order[depth]
        item = self.items[i]
        start = 0
        if depth and self.items[self._order[depth - 1]] == item:
            start = self._picked[self._order[depth - 1]]
        for k in range(start, len(self._options[i])):
            host, gpus, size = self._options[i][k]
            keys = [(host, g) for g in gpus]
            if any(self._load[key] + size > self._cap[key] or key in self._alone
                   or (item.dedicated and self._count[key]) for key in keys):
                continue
            domains: list[object] = list(keys) if item.spread == "gpu" else [host]
            if item.group and any(d in self._domains[item.group] for d in domains):
                continue
            for key in keys:
                self._load[key] += size
                self._count[key] += 1
                if item.dedicated:
                    self._alone.add(key)
            if item.group:
                self._domains[item.group].update(domains)
            self._picked[i], self._chosen[i] = k, (host, gpus, size)
            done = self._dfs(depth + 1)
            for key in keys:
                self._load[key] -= size
                self._count[key] -= 1
                self._alone.discard(key)
            if item.group:
                self._domains[item.group].difference_update(domains)
            if done and not self._optimize:
                return True
        return False


def _fullest(slots: list[BSlot], load: dict[tuple[str, int], int]) -> int:
    """The fullest open GPU in thousandths of what it holds at most, rounded up (spread's
    measure as the issue states it: the free memory balanced over every open GPU)."""
    return max((-(-1000 * (s.held + load.get((s.host, s.index), 0)) // (s.held + s.cap))
                for s in slots if s.cap > 0 and not s.closed), default=0)


def _loads(slots: list[BSlot], items: list[BItem],
           assignment: list[tuple[str, tuple[int, ...]]]) -> dict[tuple[str, int], int]:
    total = {(s.host, s.index): s.total for s in slots}
    load: dict[tuple[str, int], int] = defaultdict(int)
    for item, (host, gpus) in zip(items, assignment, strict=True):
        for g in gpus:
            load[(host, g)] += next(b for t, _r, b in item.shapes if t == total[(host, g)])
    return load


def _check(slots: list[BSlot], items: list[BItem],
           assignment: list[tuple[str, tuple[int, ...]]]) -> int:
    """The GPUs in use by a valid assignment (asserting every constraint, independently)."""
    by_key = {(s.host, s.index): s for s in slots}
    load: dict[tuple[str, int], int] = defaultdict(int)
    count: dict[tuple[str, int], int] = defaultdict(int)
    alone: dict[tuple[str, int], int] = defaultdict(int)
    domains: dict[str, list[object]] = defaultdict(list)
    assert len(assignment) == len(items)
    for item, (host, gpus) in zip(items, assignment, strict=True):
        assert gpus and len(set(gpus)) == len(gpus), (host, gpus)
        placed = [by_key[(host, g)] for g in gpus]
        sizes = [(r, b) for t, r, b in item.shapes if t == placed[0].total]
        assert sizes and all(s.total == placed[0].total for s in placed), "one GPU size"
        ranks, size = sizes[0]
        assert len(gpus) == ranks
        assert item.hosts is None or host in item.hosts, "host pin"
        for s in placed:
            assert not s.closed, f"placed on closed GPU {s.host}/{s.index}"
            assert not (item.dedicated and s.in_use), "dedicated beside a pinned instance"
            load[(host, s.index)] += size
            count[(host, s.index)] += 1
            alone[(host, s.index)] += item.dedicated
        if item.group:
            domains[item.group] += [(host, g) for g in gpus] if item.spread == "gpu" else [host]
    for key, used in load.items():
        assert used <= by_key[key].cap, f"GPU {key}: {used} > {by_key[key].cap}"
        assert not alone[key] or count[key] == 1, f"GPU {key}: dedicated shares"
    for group, ds in domains.items():
        assert len(ds) == len(set(ds)), f"replicas of {group} share a domain"
    return len({k for k, s in by_key.items() if s.in_use} | set(load))


# ---------------------------------------------------------------- random solve.Problems


@st.composite
def problems(draw: st.DrawFn) -> solve.Problem:
    """≤ 2 hosts × 4 GPUs × 6 instances; sizes in eighths of a GPU (tight packings)."""
    classes = draw(st.lists(st.sampled_from([64, 96]), min_size=1, max_size=2, unique=True))
    slots = []
    for host in ["a", "b"][:draw(st.integers(1, 2))]:
        for g in range(draw(st.integers(1, 4))):
            total = draw(st.sampled_from(classes)) * 1024 * MIB
            cap = total * draw(st.sampled_from([8, 8, 8, 7, 6, 4, 2, 0])) // 8
            in_use = draw(st.booleans()) and draw(st.booleans())
            closed = draw(st.integers(0, 9)) == 0
            slots.append(solve.Slot(host, g, total, cap, total - cap if in_use else 0, in_use,
                                    closed))
    totals = sorted({s.total_bytes for s in slots})
    items: list[solve.Item] = []
    n, wanted = 0, draw(st.integers(1, 6))
    while len(items) < wanted:
        shapes = {}
        for t in totals:
            if draw(st.integers(0, 5)) == 0 and shapes:
                continue  # fits no GPU of this size
            ranks = draw(st.sampled_from([1, 1, 1, 2, 2, 4]))
            shapes[t] = (ranks, t * draw(st.sampled_from([1, 1, 2, 2, 3, 4, 5, 8])) // 8 // ranks)
        hosts = draw(st.sampled_from([None, None, None, frozenset({"a"}), frozenset({"b"})]))
        replicas = min(draw(st.sampled_from([1, 1, 2, 3])), 6 - len(items))
        spread = draw(st.sampled_from(["gpu", "host"]))
        dedicated = draw(st.integers(0, 4)) == 0
        group = f"s{n}" if replicas > 1 else None
        items += [solve.Item(f"s{n}#{r}", shapes, hosts, group, spread, dedicated)
                  for r in range(1, replicas + 1)]
        n += 1
    return solve.Problem(tuple(slots), tuple(items), draw(st.sampled_from(["pack", "spread"])))


def _from_problem(p: solve.Problem) -> tuple[list[BSlot], list[BItem]]:
    slots = [BSlot(s.host, s.index, s.total_bytes, s.capacity_bytes, s.in_use, s.closed,
                   s.held_bytes) for s in p.slots]
    items = [BItem(tuple(sorted((t, r, b) for t, (r, b) in i.shapes.items())), i.hosts, i.group,
                   i.spread, i.dedicated) for i in p.items]
    return slots, items


@given(problems())
@settings(derandomize=FUZZ_FIXED, max_examples=fuzz_examples(150), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_solver_agrees_with_exhaustive_search(problem: solve.Problem) -> None:
    """Properties 2 and 3 on the solver's own input: infeasible only when nothing fits;
    feasible answers valid; under pack, the fewest GPUs there are; under spread, the emptiest
    fullest GPU there is."""
    slots, items = _from_problem(problem)
    result = solve.solve(problem, SOLVER_S)
    brute = _Brute(slots, items, problem.objective)
    optimum = brute.run(optimize=True)
    event(f"{problem.objective}, {'infeasible' if optimum is None else 'feasible'}")
    if result.assignment is None:
        assert optimum is None, f"solver: infeasible; exhaustive search placed {brute.found}"
        return
    assert optimum is not None, "solver placed what the exhaustive search cannot"
    used = _check(slots, items, result.assignment)
    assert result.gpus_used == used
    assert result.lower_bound <= used
    if problem.objective == "pack":
        assert result.proven
        assert used == optimum, f"solver {used} GPUs, exhaustive {optimum}: {brute.found}"
        assert result.lower_bound <= optimum
    else:
        fullest = _fullest(slots, _loads(slots, items, result.assignment))
        assert result.proven
        assert fullest == optimum, f"solver's fullest {fullest}‰, exhaustive {optimum}‰: " \
            f"{brute.found}"


# ---------------------------------------------------------------- random inventories

MODELS = [  # (model, kind, max_model_len choices): small ones the catalog knows
    ("Qwen/Qwen2.5-0.5B-Instruct", "llm", [2048, 8192, 32768]),
    ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "llm", [1024, 2048]),
    ("Qwen/Qwen2.5-7B-Instruct", "llm", [4096, 16384, 32768]),
    ("meta-llama/Llama-3.1-8B-Instruct", "llm", [8192, 65536]),
    ("Qwen/Qwen2.5-14B-Instruct", "llm", [8192, 32768]),
    ("intfloat/multilingual-e5-large", "embed", [512]),
]
HEADER = """\
fleet:
  name: t
  vllm_version: "0.19.1"
  image: vllm/vllm-openai-rocm:v0.19.1
"""


@dataclass
class Fleet:
    text: str
    hosts: dict[str, dict[str, Any]]
    services: list[dict[str, Any]]  # each with `_at`: "host" | "top" | "pinned"


def _yaml(value: object) -> str:
    """Flow-style YAML (JSON, but integer keys stay integers)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml(k)}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_yaml, value)) + "]"
    return json.dumps(value)


@st.composite
def fleets(draw: st.DrawFn) -> Fleet:
    hosts: dict[str, dict[str, Any]] = {}
    for h in ["h1", "h2", "h3"][:draw(st.integers(1, 3))]:
        count = draw(st.integers(1, 4))
        sizes = draw(st.lists(st.sampled_from([24, 48, 64, 96]), min_size=1, max_size=2))
        host: dict[str, Any] = {"address": f"{h}.t.example", "gpu_count": count,
                                "gpu_memory_gib": {g: draw(st.sampled_from(sizes))
                                                   for g in range(count)}}
        reserved = draw(st.sampled_from(["no", "no", "no", "share", "all"]))
        if reserved == "all":
            host["reserved"] = True
        elif reserved == "share":
            host["reserved"] = {draw(st.integers(0, count - 1)): draw(st.sampled_from([0.25, 0.5]))}
        if draw(st.booleans()):
            host["headroom_gib"] = draw(st.sampled_from([0, 1, 4]))
        host["services"] = []
        hosts[h] = host
    placement = {"objective": draw(st.sampled_from(["pack", "pack", "spread"])),
                 "margin": draw(st.sampled_from([0.0, 0.05, 0.1])),
                 "headroom_gib": draw(st.sampled_from([0, 0, 2]))}
    services: list[dict[str, Any]] = []
    pinned_gpus: set[tuple[str, int]] = set()
    for i in range(draw(st.integers(1, 5))):
        at = draw(st.sampled_from(["host", "top", "top", "top", "pinned"]))
        svc: dict[str, Any] = {"name": f"s{i}", "port": 8000 + 10 * i}
        if at == "pinned":  # sized, never moved: a small model at the operator's utilization
            h = draw(st.sampled_from(sorted(hosts)))
            free = [g for g in range(hosts[h]["gpu_count"]) if (h, g) not in pinned_gpus]
            if not free:
                continue
            g = draw(st.sampled_from(free))
            pinned_gpus.add((h, g))
            svc.update(kind="llm", model="Qwen/Qwen2.5-0.5B-Instruct", gpus=[g],
                       gpu_memory_utilization=draw(st.sampled_from([0.2, 0.3])),
                       max_model_len=4096, dedicated=draw(st.integers(0, 3)) == 0)
            svc["_host"] = h
        else:
            model, kind, lengths = draw(st.sampled_from(MODELS))
            svc.update(kind=kind, model=model)
            if kind == "llm":
                svc["max_model_len"] = draw(st.sampled_from(lengths))
                need = draw(st.sampled_from(["concurrency", "kv_tokens", "both", "none"]))
                if need in ("concurrency", "both"):
                    svc["concurrency"] = draw(st.integers(1, 16))
                if need in ("kv_tokens", "both"):
                    svc["kv_tokens"] = draw(st.sampled_from([1000, 20000, 100000, 300000]))
            svc["replicas"] = draw(st.sampled_from([1, 1, 2, 3]))
            if at == "top":
                svc["spread"] = draw(st.sampled_from(["gpu", "host"]))
                if draw(st.integers(0, 3)) == 0:
                    svc["host"] = draw(st.sampled_from(sorted(hosts)))
            else:
                svc["_host"] = draw(st.sampled_from(sorted(hosts)))
            if draw(st.integers(0, 4)) == 0:
                svc["dedicated"] = True
        svc["_at"] = at
        services.append(svc)
    lines = [HEADER.rstrip("\n"), f"  placement: {_yaml(placement)}", "hosts:"]
    for h, host in hosts.items():
        lines.append(f"  {h}:")
        lines += [f"    {k}: {_yaml(v)}" for k, v in host.items() if k != "services"]
        mine = [s for s in services if s.get("_host") == h]
        if mine:
            lines.append("    services:")
            lines += [f"      - {_yaml(_public(s))}" for s in mine]
    top = [s for s in services if s["_at"] == "top"]
    if top:
        lines.append("services:")
        lines += [f"  - {_yaml(_public(s))}" for s in top]
    return Fleet("\n".join(lines) + "\n", hosts, services)


def _public(svc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in svc.items() if not k.startswith("_")}


def _problem_of(inv: Inventory) -> tuple[list[BSlot], list[BItem]]:
    """The inventory as the exhaustive search's input, built here from the inventory's own
    fields; only the per-GPU sizing (footprint, ranks) is `place`'s."""
    sizing = {e.at: _sizings(inv, e, Outcome("pack", 0.0)) for e in _entries(inv)}
    held: dict[tuple[str, int], int] = defaultdict(int)
    pinned: set[tuple[str, int]] = set()
    alone: set[tuple[str, int]] = set()
    items: list[BItem] = []
    for e in _entries(inv):
        svc = e.svc
        if svc.gpus is not None:
            assert e.host is not None
            (s,) = sizing[e.at].values()
            assert isinstance(s, Sizing), s
            for g in svc.gpus:
                held[(e.host, g)] += s.used_bytes
                pinned.add((e.host, g))
                if svc.dedicated:
                    alone.add((e.host, g))
            continue
        shapes = tuple(sorted((t, s.ranks, s.used_bytes) for t, s in sizing[e.at].items()
                              if isinstance(s, Sizing)))
        group = "/".join(map(str, e.at)) if svc.replicas > 1 else None
        hosts = frozenset([e.host]) if e.host is not None else None
        items += [BItem(shapes, hosts, group, svc.spread, svc.dedicated)] * svc.replicas
    slots = []
    default = gpu_model(inv.fleet.gpu).total_bytes
    for h, host in inv.hosts.items():
        room = host.headroom_gib if host.headroom_gib is not None else \
            inv.fleet.placement.headroom_gib
        shares = host.reserved if isinstance(host.reserved, dict) else {}
        for g in range(host.gpu_count):
            total = int(host.gpu_memory_gib[g] * GIB) if g in host.gpu_memory_gib else default
            cap = total - int(shares.get(g, 0.0) * total) - int(room * GIB) - held[(h, g)]
            slots.append(BSlot(h, g, total, max(cap, 0), (h, g) in pinned,
                               host.reserved is True or (h, g) in alone))
    return slots, items


def _kv_shortfalls(p: PlannedService) -> list[str]:
    """What the service asked for that its planned KV cache does not hold."""
    svc, est = p.service, p.estimate
    assert est is not None and est.starts, (p.name, est and est.error)
    if p.service.kind.value == "embed":
        return []
    wanted = []
    if svc.kv_tokens is not None:
        wanted.append(("kv_tokens", svc.kv_tokens))
    if svc.concurrency is not None:
        wanted.append((f"concurrency {svc.concurrency}", svc.concurrency * est.max_model_len))
        if est.max_concurrency < svc.concurrency:
            return [f"{p.name}: max_concurrency {est.max_concurrency} < {svc.concurrency}"]
    if not wanted:
        wanted.append(("one request of max_model_len", est.max_model_len))
    return [f"{p.host}/{p.name}: {what} needs {n:,} tokens, the plan holds {est.kv_tokens:,}"
            for what, n in wanted if est.kv_tokens < n]


def _place_cli(src: Path, out: Path) -> tuple[int, dict[str, Any], str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(["place", str(src), "--out", str(out), "--json", "--time-limit", str(SOLVER_S)],
                env=Environment(stdout, stderr, 200))
    return code, json.loads(stdout.getvalue()), stderr.getvalue()


def _within_limits(slots: list[BSlot], items: list[BItem]) -> bool:
    per_host: dict[str, int] = defaultdict(int)
    for s in slots:
        per_host[s.host] += 1
    return len(per_host) <= 2 and max(per_host.values()) <= 4 and len(items) <= 6


PINNED_ONLY = Fleet(  # every service pinned: nothing to move, --json once said gpus_used null
    HEADER + """  placement: {"objective": "pack", "margin": 0.0, "headroom_gib": 0}
hosts:
  h1:
    address: "h1.t.example"
    gpu_count: 1
    gpu_memory_gib: {0: 24}
    services:
      - {"name": "s0", "port": 8000, "kind": "llm", "model": "Qwen/Qwen2.5-0.5B-Instruct", \
"gpus": [0], "gpu_memory_utilization": 0.2, "max_model_len": 4096, "dedicated": true}
  h2:
    address: "h2.t.example"
    gpu_count: 1
    gpu_memory_gib: {0: 24}
""", {}, [{"name": "s0", "gpus": [0], "gpu_memory_utilization": 0.2, "_host": "h1",
           "_at": "pinned"}])

ROUNDED_CONCURRENCY = Fleet(  # margin 0: max_concurrency 9.996 rounds to 10, 40,944 < 40,960 tokens
    HEADER + """  placement: {"objective": "pack", "margin": 0.0, "headroom_gib": 0}
hosts:
  h1:
    address: "h1.t.example"
    gpu_count: 1
    gpu_memory_gib: {0: 24}
services:
  - {"name": "s0", "port": 8000, "kind": "llm", "model": "Qwen/Qwen2.5-7B-Instruct", \
"max_model_len": 4096, "concurrency": 10, "replicas": 1, "spread": "gpu"}
""", {}, [{"name": "s0", "replicas": 1, "spread": "gpu", "_at": "top"}])


@given(fleets())
@example(PINNED_ONLY)
@example(ROUNDED_CONCURRENCY)
@settings(derandomize=FUZZ_FIXED, max_examples=fuzz_examples(80), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_place_writes_what_plans_and_meets_requirements(fleet: Fleet) -> None:
    """Property 1 (and 2, 3 on the inventory's own problem) through `gpufleet place`."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "fleet.yml", Path(tmp) / "placed.yml"
        src.write_text(fleet.text)
        inv = inventory.load(src, placing=True)
        code, report, stderr = _place_cli(src, out)
        slots, items = _problem_of(inv)
        small = _within_limits(slots, items)
        brute = _Brute(slots, items)
        optimum = brute.run(optimize=report["objective"] == "pack") if small else None
        event(f"{report['objective']}, {'placed' if report['services'] else 'infeasible'}, "
              f"{'searched' if small else 'too large to search'}")
        if not fleet.services:  # nothing to place
            assert code == 0, stderr
            return
        if not report["services"]:  # place: no placement
            assert code == 1 and report["reasons"] and not out.exists(), (code, stderr)
            if small:
                assert optimum is None, (f"place: {report['reasons']}; the exhaustive search "
                                         f"places it: {brute.found}\n{fleet.text}")
            return
        assert code == 0 and report["feasible"], (
            f"place placed it but the plan of what it wrote has errors: {report['reasons']}"
            f"\n{fleet.text}")
        assert report["written"] == str(out)
        plan = build_plan(inventory.load(out))  # the real loader and planner, again
        errors = [f.message for f in plan.findings if f.severity == "error"]
        assert not errors, f"{errors}\n{fleet.text}"
        _check_plan(fleet, inv, report, plan)
        if small:
            assert optimum is not None, "place placed what the exhaustive search cannot"
            if report["objective"] == "pack":
                assert report["optimal"], report
                assert report["gpus_used"] == optimum, (
                    f"place {report['gpus_used']} GPUs, exhaustive {optimum}: {brute.found}"
                    f"\n{fleet.text}")
                assert report["lower_bound"] <= optimum


def _check_plan(fleet: Fleet, inv: Inventory, report: dict[str, Any], plan: Any) -> None:
    planned = {(h.name, s.name): s for h in plan.hosts for s in h.services}
    gpus = {(h.name, g.index): g for h in plan.hosts for g in h.gpus}
    by_service: dict[str, list[PlannedService]] = defaultdict(list)
    for row in report["services"]:
        by_service[row["service"]].append(planned[(row["host"], row["name"])])
    assert len(planned) == len(report["services"]), "the plan runs what place reported, no more"
    for svc in fleet.services:
        copies = by_service[svc["name"]]
        if svc["_at"] == "pinned":  # kept as written
            (p,) = copies
            assert (p.host, list(p.gpus)) == (svc["_host"], svc["gpus"])
            assert p.estimate and p.estimate.utilization == svc["gpu_memory_utilization"]
            continue
        assert len(copies) == svc["replicas"], (svc["name"], len(copies))
        pin = svc.get("_host") or svc.get("host")
        assert pin is None or {p.host for p in copies} == {pin}, (svc["name"], pin)
        for p in copies:
            assert not _kv_shortfalls(p), _kv_shortfalls(p)
        domains = ([(p.host, g) for p in copies for g in p.gpus] if svc.get("spread") != "host"
                   else [p.host for p in copies])
        assert len(domains) == len(set(domains)), f"replicas of {svc['name']} share: {domains}"
        for p in copies:
            host = inv.hosts[p.host]
            assert host.reserved is not True, f"{p.name} placed on reserved host {p.host}"
            shares = host.reserved if isinstance(host.reserved, dict) else {}
            room = host.headroom_gib if host.headroom_gib is not None else \
                inv.fleet.placement.headroom_gib
            for g in p.gpus:
                gpu = gpus[(p.host, g)]
                keep = int(shares.get(g, 0.0) * gpu.total_bytes) + int(room * GIB)
                assert gpu.free_bytes >= keep, (
                    f"{p.host} GPU {g}: {gpu.free_bytes / GIB:.2f} GiB free, keeps "
                    f"{keep / GIB:.2f} (reserved + headroom)")
    for (_h, _g), gpu in gpus.items():
        names = [n for n, _ in gpu.segments]
        for n in names:
            if planned[(_h, n)].service.dedicated:
                assert names == [n], f"{_h} GPU {_g}: dedicated {n} shares with {names}"


def test_json_counts_pinned_gpus_when_nothing_moves(tmp_path: Path) -> None:
    """Found by the property above: --json said gpus_used null when every service is pinned."""
    src, out = tmp_path / "fleet.yml", tmp_path / "placed.yml"
    src.write_text(HEADER + """hosts:
  h1:
    address: h1.t.example
    gpu_count: 2
    services:
      - {name: s0, port: 8000, kind: llm, model: Qwen/Qwen2.5-0.5B-Instruct, gpus: [0],
         gpu_memory_utilization: 0.2, max_model_len: 4096}
""")
    code, report, stderr = _place_cli(src, out)
    assert code == 0, stderr
    assert report["gpus_used"] == 1
