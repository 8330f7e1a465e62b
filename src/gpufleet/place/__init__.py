"""`gpufleet place`: choose GPUs, utilizations and parallelism from what each service needs.

inventory (placing=True) -> entries (every service as written) -> sizing per GPU size
(gpufleet.place.demand: the planner's arithmetic) -> an assignment problem (gpufleet.place.solve:
CP-SAT) -> placed instances -> the inventory rewritten (gpufleet.place.write), which the
command re-plans with `gpufleet plan`'s own code: that plan, not the solver, is the check.
Pure: nothing here touches a host.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

from gpufleet.gpu.models import GIB, gpu_model
from gpufleet.inventory import Host, Inventory, Service
from gpufleet.place import demand, solve
from gpufleet.place.demand import Need, Shortfall, Sizing
from gpufleet.plan import ModelMemo, model_facts, model_key
from gpufleet.vllm import knobs
from gpufleet.vllm.memory import estimate
from gpufleet.vllm.models import ModelFacts

SUGGESTIONS = ("kv_cache_dtype: fp8 (halves the KV cache)", "a quantized checkpoint (fp8, AWQ)",
               "a smaller max_model_len or concurrency", "fewer replicas",
               "another host (or fewer reserved GPUs)")


@dataclass(frozen=True)
class Entry:
    """One service as the operator wrote it, and where."""

    svc: Service
    at: tuple[str | int, ...]  # its path in the file
    host: str | None  # the host it sits under, or its `host:` pin
    facts: ModelFacts | None

    @property
    def pinned(self) -> bool:
        return self.svc.gpus is not None


@dataclass(frozen=True)
class Placed:
    """One instance as `place` decided it."""

    entry: Entry
    replica: int
    name: str
    port: int
    host: str
    gpus: tuple[int, ...]
    sizing: Sizing

    @property
    def moved(self) -> bool:
        return not self.entry.pinned

    def to_dict(self) -> dict[str, object]:
        need = self.entry.svc
        return {"name": self.name, "service": need.name, "host": self.host,
                "gpus": list(self.gpus), "port": self.port,
                "gpu_memory_utilization": self.sizing.utilization,
                "tensor_parallel_size": self.sizing.tensor_parallel_size,
                "pipeline_parallel_size": self.sizing.pipeline_parallel_size,
                "gib_per_gpu": round(self.sizing.used_bytes / GIB, 2),
                "kv_tokens_required": _required_tokens(need, self.entry.facts),
                "kv_tokens_planned": self.sizing.kv_tokens, "moved": self.moved}


@dataclass
class Outcome:
    objective: str
    margin: float
    placed: list[Placed] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why no placement exists
    notes: list[str] = field(default_factory=list)
    result: solve.Result | None = None

    @property
    def feasible(self) -> bool:
        return not self.reasons


def _required_tokens(svc: Service, facts: ModelFacts | None) -> int | None:
    if facts is None or facts.is_pooling:
        return None
    length = svc.max_model_len or facts.max_position_embeddings or 2048
    return max(svc.kv_tokens or 0, (svc.concurrency or (0 if svc.kv_tokens else 1)) * length)


# ---------------------------------------------------------------- the whole step


def place(inv: Inventory, objective: str | None = None, time_limit_s: float = 20.0) -> Outcome:
    """Size every service, place the unpinned ones; pinned ones stay where they are."""
    objective = objective or inv.fleet.placement.objective
    out = Outcome(objective, inv.fleet.placement.margin)
    entries = _entries(inv)
    memo = Memo()  # a fleet names a few dozen models and repeats the same asks
    sizings = {id(e): _sizings(inv, e, out, memo) for e in entries}
    held, in_use, closed = _pinned(inv, entries, sizings, out)
    slots = _slots(inv, held, in_use, closed)
    movable = [e for e in entries if not e.pinned]
    items = [_item(e, sizings[id(e)], r) for e in movable for r in range(1, e.svc.replicas + 1)]
    for e in movable:
        if not any(isinstance(s, Sizing) for s in sizings[id(e)].values()):
            out.reasons.append(_no_shape(e, sizings[id(e)]))
    if out.reasons:
        return out
    problem = solve.Problem(tuple(slots), tuple(items), objective)
    out.result = solve.solve(problem, time_limit_s)
    if out.result.assignment is None:
        dedicated = [e.svc.name for e in movable if e.svc.dedicated]  # named in the reason
        out.reasons += _why_infeasible(problem, time_limit_s, dedicated)
        return out
    out.placed = _named(inv, entries, sizings, movable, out.result.assignment)
    return out


def _entries(inv: Inventory) -> list[Entry]:
    found = []
    at: tuple[str | int, ...]
    models: ModelMemo = {}  # read once per run, as the plan does
    for name, host in inv.hosts.items():
        for i, svc in enumerate(host.services):
            at = ("hosts", name, "services", i)
            found.append(Entry(svc, at, name, _facts(inv, svc, at, models)))
    for i, svc in enumerate(inv.model.services):
        at = ("services", i)
        found.append(Entry(svc, at, svc.host, _facts(inv, svc, at, models)))
    return found


def _facts(inv: Inventory, svc: Service, at: tuple[str | int, ...],
           models: ModelMemo | None = None) -> ModelFacts | None:
    if not svc.kind.runs_vllm:
        return None
    key = (svc.model, svc.revision, svc.model_path)
    if models is not None and key in models:
        return models[key]
    facts = model_facts(inv, svc, inv.source.where((*at, model_key(svc))))
    if models is not None:
        models[key] = facts
    return facts


def _key(e: Entry) -> str:
    return "/".join(map(str, e.at))


# ---------------------------------------------------------------- sizing


@dataclass
class Memo:
    """What one `place` run computes once: per host its GPU sizes and headroom, per set of
    candidate hosts its GPU classes, and each sizing by everything `_size` reads (services
    that ask the same of the same model on the same GPU size get the same answer)."""

    hosts: dict[str, tuple[list[int], int]] = field(default_factory=dict)
    classes: dict[str | None, dict[int, tuple[int, int]]] = field(default_factory=dict)
    sizes: dict[tuple[object, ...], Sizing | Shortfall] = field(default_factory=dict)

    def host(self, inv: Inventory, name: str) -> tuple[list[int], int]:
        if name not in self.hosts:
            host = inv.hosts[name]
            self.hosts[name] = (_totals(inv, host), _headroom(inv, host))
        return self.hosts[name]


def _totals(inv: Inventory, host: Host) -> list[int]:
    total = gpu_model((host.gpu or inv.fleet.gpu).lower()).total_bytes
    return [int(host.gpu_memory_gib[i] * GIB) if i in host.gpu_memory_gib else total
            for i in range(host.gpu_count)]


def _headroom(inv: Inventory, host: Host) -> int:
    gib = host.headroom_gib if host.headroom_gib is not None else inv.fleet.placement.headroom_gib
    return int(gib * GIB)


def _candidates(inv: Inventory, e: Entry) -> list[str]:
    if e.host is not None:
        return [e.host]
    return [h for h, host in inv.hosts.items() if host.reserved is not True]


def _sizings(inv: Inventory, e: Entry, out: Outcome, memo: Memo | None = None
             ) -> dict[int, Sizing | Shortfall]:
    """Per GPU size among the hosts it may go to: its sizing, or why it does not fit."""
    memo = memo if memo is not None else Memo()
    classes = _classes(inv, e, memo)
    # Pooling models (embed, rerank) hold no KV cache: nothing to state, so no note for them.
    if (e.svc.kind.runs_vllm and not Need.of(e.svc).stated and e.svc.gpu_memory_utilization is None
            and not (e.facts is not None and e.facts.is_pooling)):
        out.notes.append(f"service {e.svc.name} states neither concurrency nor kv_tokens: "
                         "sized for one request of max_model_len")
    return {t: _size_once(inv, e, t, most, room, memo) for t, (most, room) in classes.items()}


def _classes(inv: Inventory, e: Entry, memo: Memo) -> dict[int, tuple[int, int]]:
    """GPU size -> (most GPUs of that size on one candidate host, the largest headroom)."""
    if not e.pinned and e.host in memo.classes:
        return memo.classes[e.host]
    classes: dict[int, tuple[int, int]] = {}
    for h in _candidates(inv, e):
        totals, headroom = memo.host(inv, h)
        if e.pinned:
            totals = [min(totals[g] for g in e.svc.gpus or [])]
        for t in set(totals):
            most, room = classes.get(t, (0, 0))
            classes[t] = (max(most, totals.count(t)), max(room, headroom))
    if not e.pinned:
        memo.classes[e.host] = classes
    return classes


def _size_once(inv: Inventory, e: Entry, total: int, most: int, room: int, memo: Memo
               ) -> Sizing | Shortfall:
    """`_size`, once per distinct ask: its key is everything `_size` reads of the entry."""
    svc = e.svc
    chosen = tuple(sorted({"tensor_parallel_size", "pipeline_parallel_size"}
                          & svc.model_fields_set))
    asked = tuple(sorted(knobs.spec_values(svc).items()))
    key = (e.facts, e.pinned, chosen, asked, Need.of(svc), svc.memory_gib,
           len(svc.gpus) if svc.gpus else 0, total, most, room)
    try:
        hash(key)
    except TypeError:  # a knob whose value is not hashable: size it afresh
        return _size(inv, e, total, most, room)
    if key not in memo.sizes:
        memo.sizes[key] = _size(inv, e, total, most, room)
    return memo.sizes[key]


def _size(inv: Inventory, e: Entry, total: int, most: int, room: int) -> Sizing | Shortfall:
    svc = e.svc
    if e.facts is None:
        ranks = len(svc.gpus) if svc.gpus else 1
        return Sizing(None, ranks, 1, int((svc.memory_gib or 0) * GIB), None)
    platform = "rocm" if gpu_model(inv.fleet.gpu.lower()).vendor == "amd" else "cuda"
    chosen = {"tensor_parallel_size", "pipeline_parallel_size"} & svc.model_fields_set
    shapes = ([(svc.tensor_parallel_size, svc.pipeline_parallel_size)] if e.pinned or chosen
              else demand.splits(e.facts, most))
    first: Shortfall | None = None
    for tp, pp in shapes:
        spec = demand.spec_for(svc, e.facts, total, inv.fleet.vllm_version, platform, tp, pp,
                               svc.gpu_memory_utilization)
        if svc.gpu_memory_utilization is not None:  # the operator's own value is kept
            est = estimate(replace(spec, free_bytes_at_start=total))
            if est.starts and est.used_bytes <= total - room:
                return Sizing(None, tp, pp, est.used_bytes, est.kv_tokens or None)
            first = first or Shortfall(est.error or f"needs {est.used_bytes / GIB:.1f} GiB "
                                       "per GPU", 0)
            continue
        found = demand.smallest_utilization(spec, Need.of(svc), inv.fleet.placement.margin,
                                            total - room)
        if isinstance(found, Shortfall):
            first = first or found
            continue
        util, est = found
        return Sizing(util, tp, pp, est.used_bytes, est.kv_tokens or None)
    return first or Shortfall("no tensor x pipeline split of this host's GPUs suits the model", 0)


def _no_shape(e: Entry, sizes: dict[int, Sizing | Shortfall]) -> str:
    why = "; ".join(sorted({s.reason for s in sizes.values() if isinstance(s, Shortfall)}))
    missing = max((s.missing_bytes for s in sizes.values() if isinstance(s, Shortfall)),
                  default=0)
    short = f" ({missing / GIB:.1f} GiB short per GPU)" if missing else ""
    where = f" on host {e.host}" if e.host else ""
    return (f"service {e.svc.name} fits no GPU{where}: {why or 'no host may take it'}{short}; "
            f"what would make it fit: {', '.join(SUGGESTIONS)}")


# ---------------------------------------------------------------- the problem


def _pinned(inv: Inventory, entries: list[Entry], sizings: dict[int, dict[int, Sizing | Shortfall]],
            out: Outcome) -> tuple[dict[tuple[str, int], int], set[tuple[str, int]],
                                   set[tuple[str, int]]]:
    held: dict[tuple[str, int], int] = defaultdict(int)
    in_use, closed = set(), set()
    for e in entries:
        if not e.pinned or e.host is None:
            continue
        sizing = next(iter(sizings[id(e)].values()))
        if isinstance(sizing, Shortfall):
            out.reasons.append(_no_shape(e, sizings[id(e)]))
            continue
        for g in e.svc.gpus or []:
            held[(e.host, g)] += sizing.used_bytes
            in_use.add((e.host, g))
            if e.svc.dedicated:
                closed.add((e.host, g))
    return held, in_use, closed


def _slots(inv: Inventory, held: dict[tuple[str, int], int], in_use: set[tuple[str, int]],
           closed: set[tuple[str, int]]) -> list[solve.Slot]:
    slots = []
    for h, host in inv.hosts.items():
        shares = host.reserved if isinstance(host.reserved, dict) else {}
        room = _headroom(inv, host)
        for g, total in enumerate(_totals(inv, host)):
            keep = int(shares.get(g, 0.0) * total)
            cap = max(total - keep - room - held[(h, g)], 0)
            slots.append(solve.Slot(h, g, total, cap, held[(h, g)], (h, g) in in_use,
                                    (h, g) in closed or host.reserved is True))
    return slots


def _item(e: Entry, sizes: dict[int, Sizing | Shortfall], replica: int) -> solve.Item:
    shapes = {t: (s.ranks, s.used_bytes) for t, s in sizes.items() if isinstance(s, Sizing)}
    hosts = frozenset([e.host]) if e.host is not None else None
    group = _key(e) if e.svc.replicas > 1 else None
    return solve.Item(f"{_key(e)}#{replica}", shapes, hosts, group, e.svc.spread,
                      e.svc.dedicated)


def _why_infeasible(problem: solve.Problem, time_limit_s: float,
                    dedicated: list[str] | None = None) -> list[str]:
    """Which constraint makes it infeasible: each is relaxed in turn, and the sums said."""
    need = sum(min(r * b for r, b in i.shapes.values()) for i in problem.items)
    room = sum(s.capacity_bytes for s in problem.slots if not s.closed)
    if need > room:
        return [f"the services to place need {need / GIB:.1f} GiB, the open GPUs hold "
                f"{room / GIB:.1f} GiB: {(need - room) / GIB:.1f} GiB missing; what would make "
                f"it fit: {', '.join(SUGGESTIONS)}"]
    loose = tuple(solve.Item(i.name, i.shapes, i.hosts, None, i.spread, i.dedicated)
                  for i in problem.items)
    if solve.solve(replace(problem, items=loose), time_limit_s).assignment is not None:
        return ["the replicas cannot each have a GPU (or host) of their own: ask for fewer "
                "replicas, `spread: gpu` instead of host, or add a host"]
    plain = tuple(replace(i, dedicated=False) for i in loose)
    if solve.solve(replace(problem, items=plain), time_limit_s).assignment is not None:
        # Which services: the operator has to know what to change (issue 11).
        names = f"the dedicated service(s) {', '.join(dedicated)}" if dedicated else (
            "the dedicated services")
        return [f"{names} need GPUs of their own that are not left: drop "
                "`dedicated` from one, or free a GPU"]
    return [f"the services fit in sum ({need / GIB:.1f} of {room / GIB:.1f} GiB open) but not "
            "GPU by GPU: the large ones need more room on one GPU (or host) than is left; "
            f"what would make it fit: {', '.join(SUGGESTIONS)}"]


# ---------------------------------------------------------------- names and ports


def _named(inv: Inventory, entries: list[Entry], sizings: dict[int, dict[int, Sizing | Shortfall]],
           movable: list[Entry], assignment: solve.Assignment) -> list[Placed]:
    """Placed instances in file order; a second copy on one host gets `<name>-2` and the next
    free port, and a service moved onto a host whose port is taken gets the next free one."""
    names: dict[str, set[str]] = defaultdict(set)
    ports: dict[str, set[int]] = defaultdict(set)
    for e in entries:
        if e.host is not None and (e.at[0] == "hosts" or e.pinned):
            names[e.host].add(e.svc.name)
            ports[e.host].add(e.svc.port)
    placed: list[Placed] = []
    for e in entries:
        if e.pinned and e.host is not None:
            sizing = next(iter(sizings[id(e)].values()))
            assert isinstance(sizing, Sizing)
            placed.append(Placed(e, 1, e.svc.name, e.svc.port, e.host, tuple(e.svc.gpus or ()),
                                 sizing))
    choices = iter(assignment)
    totals = {h: _totals(inv, host) for h, host in inv.hosts.items()}
    for e in movable:
        for r in range(1, e.svc.replicas + 1):
            host, gpus = next(choices)
            sizing = sizings[id(e)][totals[host][gpus[0]]]
            assert isinstance(sizing, Sizing)
            first_here = e.at[0] == "hosts" and r == 1
            name = e.svc.name if first_here else _free_name(e.svc.name, names[host])
            port = e.svc.port if first_here else _free_port(e.svc.port, ports[host])
            names[host].add(name)
            ports[host].add(port)
            placed.append(Placed(e, r, name, port, host, gpus, sizing))
    return placed


def _free_name(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    k = 2
    while (candidate := f"{name[:60 - len(str(k))]}-{k}") in taken:
        k += 1
    return candidate


def _free_port(port: int, taken: set[int]) -> int:
    while port in taken:
        port += 1
    return port
