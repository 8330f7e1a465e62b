"""`gpufleet place` through its command line: the objectives, reserved shares, dedicated services,
`host:` pins, --in-place, --diff, the --json contract of the README, malformed requirements
(exit 2, file:line) and infeasible ones (exit 1, nothing written). Every placement is checked by
re-planning the written file with the real loader and build_plan."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from support import REPO, run_cli

from gpufleet import inventory
from gpufleet.plan import Plan, build_plan

HEAD = """\
# a test fleet
fleet:
  name: t
  vllm_version: "0.19.1"
  image: vllm/vllm-openai-rocm:v0.19.1
"""


def _host(name: str, gpus: int = 2, extra: str = "", services: str = "") -> str:
    text = f"  {name}:\n    address: {name}.t.example\n    gpu_count: {gpus}\n"
    text += textwrap.indent(textwrap.dedent(extra), "    ")
    if services:
        text += "    services:\n" + textwrap.indent(textwrap.dedent(services), "      ")
    return text


def _svc(name: str, port: int, extra: str = "", model: str = "Qwen/Qwen2.5-7B-Instruct",
         concurrency: int = 4) -> str:
    """One unplaced service (a list item at column 0; the callers indent it)."""
    text = (f"- name: {name}   # {name}'s comment\n  kind: llm\n  model: {model}\n"
            f"  port: {port}\n  max_model_len: 8192\n  concurrency: {concurrency}\n")
    return text + textwrap.indent(textwrap.dedent(extra), "  ")


PINNED = """\
# pinned: never moved
- name: small
  kind: llm
  model: Qwen/Qwen2.5-7B-Instruct
  gpus: [0]
  port: 8000
  gpu_memory_utilization: 0.3
  max_model_len: 8192
"""


def _fleet(hosts: list[str], services: list[str] = ()) -> str:
    text = HEAD + "hosts:\n" + "".join(hosts)
    if services:
        text += "services:\n" + textwrap.indent("".join(services), "  ")
    return text


def _write(tmp_path: Path, text: str) -> Path:
    src = tmp_path / "fleet.yml"
    src.write_text(text)
    return src


def _place(src: Path, *args: str, out: Path | None = None):
    extra = ("--out", str(out)) if out is not None else ()
    return run_cli("place", str(src), *extra, *args)


def _placed(tmp_path: Path, text: str, *args: str) -> tuple[Plan, Path]:
    """Place `text` into placed.yml (exit 0) and re-plan the written file (no error)."""
    src, out = _write(tmp_path, text), tmp_path / "placed.yml"
    result = _place(src, *args, out=out)
    assert result.exit_status == 0, result.stdout + result.stderr
    plan = build_plan(inventory.load(out))
    assert not plan.has_errors, [f.message for f in plan.findings if f.severity == "error"]
    return plan, out


def _gpus(plan: Plan, name: str, host: str = "h1") -> tuple[int, ...]:
    return plan.host(host).service(name).gpus


# ---------------------------------------------------------------- objectives


TWO_ON_EMPTY = _fleet([_host("h1")], [_svc("a", 8100), _svc("b", 8101)])


def test_pack_puts_two_small_services_on_one_gpu(tmp_path: Path) -> None:
    plan, _ = _placed(tmp_path, TWO_ON_EMPTY, "--objective", "pack")
    assert _gpus(plan, "a") == _gpus(plan, "b")
    assert [bool(g.segments) for g in plan.host("h1").gpus].count(True) == 1


def test_spread_balances_them_one_per_gpu(tmp_path: Path) -> None:
    plan, _ = _placed(tmp_path, TWO_ON_EMPTY, "--objective", "spread")
    assert {_gpus(plan, "a"), _gpus(plan, "b")} == {(0,), (1,)}
    free = [g.free_bytes for g in plan.host("h1").gpus]
    assert abs(free[0] - free[1]) < 0.01 * plan.host("h1").gpus[0].total_bytes


def test_objective_read_from_fleet_placement_and_overridden_by_the_flag(tmp_path: Path) -> None:
    text = TWO_ON_EMPTY.replace('  image: vllm', '  placement: {objective: spread}\n  image: vllm')
    plan, _ = _placed(tmp_path, text, "--json")
    assert _gpus(plan, "a") != _gpus(plan, "b")
    result = _place(_write(tmp_path, text), "--json", "--objective", "pack")
    report = json.loads(result.stdout)
    assert report["objective"] == "pack" and report["gpus_used"] == 1


# ---------------------------------------------------------------- reserved


def test_reserved_share_stays_free(tmp_path: Path) -> None:
    """Three services of ~40 GiB fit on one empty GPU; with half of it reserved only two do, the
    re-plan keeps that half free, and the third one has nowhere to go (exit 1)."""
    services = [_svc(n, 8100 + i, concurrency=40) for i, n in enumerate("abc")]
    plan, _ = _placed(tmp_path, _fleet([_host("h1", gpus=1)], services))
    assert {_gpus(plan, n) for n in "abc"} == {(0,)}  # without the reservation
    half = "reserved: {0: 0.5}\n"
    plan, out = _placed(tmp_path, _fleet([_host("h1", gpus=1, extra=half)], services[:2]))
    gpu0 = plan.host("h1").gpus[0]
    assert len(gpu0.segments) == 2 and gpu0.free_bytes >= 0.5 * gpu0.total_bytes
    assert not [f for f in plan.findings if f.code == "reserved_used"]
    assert "reserved: {0: 0.5}" in out.read_text()
    src = _write(tmp_path, _fleet([_host("h1", gpus=1, extra=half)], services))
    result = _place(src, out=tmp_path / "three.yml")
    assert result.exit_status == 1 and "GiB missing" in result.stderr
    assert not (tmp_path / "three.yml").exists()


def test_reserved_share_under_spread(tmp_path: Path) -> None:
    """`spread` balances against what is open: the reserved half of GPU 0 is not open."""
    services = [_svc(n, 8100 + i, concurrency=40) for i, n in enumerate("abcd")]
    plan, _ = _placed(tmp_path, _fleet([_host("h1", extra="reserved: {0: 0.5}\n")], services),
                      "--objective", "spread")
    gpu0, gpu1 = plan.host("h1").gpus
    assert gpu0.segments and gpu0.free_bytes >= 0.5 * gpu0.total_bytes
    assert len(gpu1.segments) > len(gpu0.segments)


def test_reserved_true_host_gets_nothing(tmp_path: Path) -> None:
    """Even `spread`, which would use every empty GPU, leaves a reserved host alone."""
    text = _fleet([_host("h1", extra="reserved: true\n"), _host("h2")],
                  [_svc("a", 8100), _svc("b", 8101)])
    plan, _ = _placed(tmp_path, text, "--objective", "spread")
    assert plan.host("h1").services == []
    assert {_gpus(plan, n, "h2") for n in "ab"} == {(0,), (1,)}


def test_reserved_true_host_is_not_taken_even_when_nothing_else_fits(tmp_path: Path) -> None:
    text = _fleet([_host("h1", extra="reserved: true\n")], [_svc("a", 8100)])
    src = _write(tmp_path, text)
    result = _place(src, out=tmp_path / "placed.yml")
    assert result.exit_status == 1 and "no placement" in result.stderr
    assert not (tmp_path / "placed.yml").exists()


# ---------------------------------------------------------------- dedicated


def test_dedicated_service_is_alone_on_its_gpu(tmp_path: Path) -> None:
    text = _fleet([_host("h1")], [_svc("a", 8100, "dedicated: true\n"), _svc("b", 8101)])
    plan, out = _placed(tmp_path, text, "--objective", "pack")
    host = plan.host("h1")
    (g,) = _gpus(plan, "a")
    assert [name for name, _ in host.gpus[g].segments] == ["a"]
    assert _gpus(plan, "b") != (g,)
    assert "dedicated: true" in out.read_text()  # a requirement `gpufleet plan` checks
    assert not [f for f in plan.findings if f.code == "dedicated_shared"]


def test_dedicated_cannot_be_alone_exits_1_naming_it(tmp_path: Path) -> None:
    text = _fleet([_host("h1", gpus=1, services=PINNED)],
                  [_svc("solo", 8100, "dedicated: true\n")])
    src = _write(tmp_path, text)
    out = tmp_path / "placed.yml"
    result = _place(src, out=out)
    assert result.exit_status == 1
    assert "no placement" in result.stderr and "dedicated" in result.stderr
    assert "solo" in result.stderr  # the reason names the service
    assert not out.exists()
    report = json.loads(_place(src, "--json").stdout)
    assert not report["feasible"] and any("solo" in r for r in report["reasons"])


# ---------------------------------------------------------------- host pins


def test_host_pin_places_only_on_that_host(tmp_path: Path) -> None:
    """h1 already runs a service, so `pack` (fewest hosts) would put the new one beside it; the
    pin sends it to h2, and the `host:` key (read by place only) is gone from the output."""
    hosts = [_host("h1", services=PINNED), _host("h2")]
    plan, _ = _placed(tmp_path, _fleet(hosts, [_svc("free", 8100)]))
    assert [s.name for s in plan.host("h1").services] == ["small", "free"]
    plan, out = _placed(tmp_path, _fleet(hosts, [_svc("pinned", 8100, "host: h2\n")]))
    assert [s.name for s in plan.host("h1").services] == ["small"]
    assert [s.name for s in plan.host("h2").services] == ["pinned"]
    assert "host: h2" not in out.read_text() and "\nservices:" not in out.read_text()


def test_host_pin_to_a_full_host_is_infeasible(tmp_path: Path) -> None:
    hosts = [_host("h1", gpus=1, services=PINNED), _host("h2")]
    src = _write(tmp_path, _fleet(hosts, [_svc("big", 8100, "host: h1\n", concurrency=400)]))
    result = _place(src, out=tmp_path / "placed.yml")
    assert result.exit_status == 1 and "no placement" in result.stderr
    assert not (tmp_path / "placed.yml").exists()


# ---------------------------------------------------------------- --in-place


def test_in_place_rewrites_atomically_keeps_comments_and_is_idempotent(tmp_path: Path) -> None:
    src = _write(tmp_path, _fleet([_host("h1", services=PINNED)], [_svc("chat", 8100)]))
    before = src.stat().st_ino
    result = _place(src, "--in-place")
    assert result.exit_status == 0, result.stdout + result.stderr
    first = src.read_text()
    assert src.stat().st_ino != before  # a new file renamed over the old, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["fleet.yml"]  # no temporary left behind
    assert "# a test fleet" in first and "# pinned: never moved" in first
    assert "# chat's comment" in first and "gpus: [" in first
    plan = build_plan(inventory.load(src))
    assert not plan.has_errors and plan.host("h1").service("chat").gpus
    again = _place(src, "--in-place")
    assert again.exit_status == 0, again.stdout + again.stderr
    assert src.read_text() == first  # placing a placed inventory changes nothing


def test_in_place_and_out_are_exclusive(tmp_path: Path) -> None:
    src = _write(tmp_path, TWO_ON_EMPTY)
    result = run_cli("place", str(src), "--in-place", "--out", str(tmp_path / "x.yml"))
    assert result.exit_status == 2
    assert src.read_text() == TWO_ON_EMPTY and not (tmp_path / "x.yml").exists()


# ---------------------------------------------------------------- --diff


def test_diff_prints_the_change_and_writes_nothing_alone(tmp_path: Path) -> None:
    src = _write(tmp_path, TWO_ON_EMPTY)
    result = _place(src, "--diff")
    assert result.exit_status == 0, result.stderr
    out = result.stdout
    assert f"--- {src}" in out and "+++ placed" in out and "\n@@ " in out
    added = [line for line in out.splitlines() if line.startswith("+") and "+++" not in line]
    removed = [line for line in out.splitlines() if line.startswith("-") and "---" not in line]
    assert any("gpus: [" in line for line in added)
    assert any("gpu_memory_utilization:" in line for line in added)
    assert any(line.strip() == "-services:" for line in removed)  # moved under the host
    assert "dry run: nothing written" in out
    assert src.read_text() == TWO_ON_EMPTY and [p.name for p in tmp_path.iterdir()] == ["fleet.yml"]


def test_diff_with_out_writes_what_it_shows(tmp_path: Path) -> None:
    src, out = _write(tmp_path, TWO_ON_EMPTY), tmp_path / "placed.yml"
    result = _place(src, "--diff", out=out)
    assert result.exit_status == 0, result.stderr
    assert f"+++ {out}" in result.stdout
    written = out.read_text()
    for line in result.stdout.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            assert line[1:] in written
    assert src.read_text() == TWO_ON_EMPTY


def test_diff_of_a_placed_inventory_is_empty(tmp_path: Path) -> None:
    _, out = _placed(tmp_path, TWO_ON_EMPTY)
    result = _place(out, "--diff")
    assert result.exit_status == 0 and "@@" not in result.stdout


# ---------------------------------------------------------------- --json


def _readme_json_fields() -> tuple[list[str], list[str]]:
    """The --json contract as the README states it: top-level fields, and each service's."""
    readme = (REPO / "README.md").read_text()
    para = re.search(r"`--json` \(a contract\):(.*?)\.\s", readme, re.S)  # its first sentence
    assert para, "the README's --json paragraph"
    text = para.group(1)
    inner = re.search(r"`services` \(each:(.*?)\)", text, re.S)
    assert inner
    top = re.findall(r"`(\w+)`", text[: inner.start()] + "`services`" + text[inner.end():])
    return top, re.findall(r"`(\w+)`", inner.group(1))


def test_json_has_every_field_the_readme_documents(tmp_path: Path) -> None:
    text = _fleet([_host("h1", services=PINNED)],
                  [_svc("chat", 8100, "replicas: 2\n"), _svc("kv", 8200).replace(
                      "  concurrency: 4\n", "  kv_tokens: 20000\n")])
    src, out = _write(tmp_path, text), tmp_path / "placed.yml"
    result = _place(src, "--json", out=out)
    assert result.exit_status == 0, result.stderr
    report = json.loads(result.stdout)  # nothing but JSON on stdout
    top, per_service = _readme_json_fields()
    assert len(top) >= 10 and len(per_service) >= 12
    assert set(top) <= set(report), set(top) - set(report)
    types = {"feasible": bool, "objective": str, "margin": float, "gpus_used": int,
             "lower_bound": int, "optimal": bool, "services": list, "reasons": list,
             "notes": list, "written": str}
    for key, kind in types.items():
        assert isinstance(report[key], kind), (key, report[key])
    assert report["feasible"] is True and report["written"] == str(out)
    assert report["objective"] == "pack" and report["margin"] == 0.05
    assert report["reasons"] == [] and report["lower_bound"] <= report["gpus_used"]
    services = report["services"]
    assert [s["service"] for s in services] == ["small", "chat", "chat", "kv"]
    for s in services:
        assert set(per_service) <= set(s), set(per_service) - set(s)
        assert isinstance(s["gpus"], list) and all(isinstance(g, int) for g in s["gpus"])
        for key in ("name", "service", "host"):
            assert isinstance(s[key], str)
        for key in ("port", "tensor_parallel_size", "pipeline_parallel_size",
                    "kv_tokens_required", "kv_tokens_planned"):
            assert isinstance(s[key], int) and not isinstance(s[key], bool), (key, s[key])
        assert isinstance(s["gib_per_gpu"], float) and isinstance(s["moved"], bool)
        assert s["kv_tokens_planned"] >= s["kv_tokens_required"]
    small, chat1, chat2, kv = services
    assert small["moved"] is False and small["gpu_memory_utilization"] is None  # kept as written
    assert chat1["moved"] and isinstance(chat1["gpu_memory_utilization"], float)
    assert chat1["gpus"] != chat2["gpus"] and chat1["name"] != chat2["name"]
    assert chat1["kv_tokens_required"] == 4 * 8192 and kv["kv_tokens_required"] == 20000
    # the JSON agrees with the re-plan of what was written
    plan = build_plan(inventory.load(out))
    for s in services:
        planned = plan.host(s["host"]).service(s["name"])
        assert list(planned.gpus) == s["gpus"] and planned.service.port == s["port"]
        assert planned.estimate is not None
        assert planned.estimate.kv_tokens == s["kv_tokens_planned"]


def test_json_of_an_all_pinned_inventory_counts_its_gpus(tmp_path: Path) -> None:
    """Nothing left to place (an empty assignment) is still a placement: its GPUs count."""
    _, out = _placed(tmp_path, TWO_ON_EMPTY, "--objective", "pack")
    report = json.loads(_place(out, "--json").stdout)
    assert report["feasible"] and report["optimal"]
    assert report["gpus_used"] == 1 and report["lower_bound"] == 1
    assert [s["moved"] for s in report["services"]] == [False, False]


def test_json_when_infeasible(tmp_path: Path) -> None:
    src = _write(tmp_path, _fleet([_host("h1", gpus=1)], [_svc("a", 8100, concurrency=5000)]))
    result = _place(src, "--json", out=tmp_path / "placed.yml")
    assert result.exit_status == 1
    report = json.loads(result.stdout)
    assert report["feasible"] is False and report["written"] is None
    assert report["services"] == [] and report["reasons"]
    assert not (tmp_path / "placed.yml").exists()


# ---------------------------------------------------------------- bad input, infeasible


@pytest.mark.parametrize(("key", "value"), [
    ("concurrency", "-1"), ("concurrency", "0"), ("kv_tokens", "-5"), ("spread", "rack"),
    ("replicas", "0"), ("replicas", "1.5"), ("dedicated", '"yes"'), ("host", "nowhere"),
    ("unknown_requirement", "3"),
])
def test_malformed_requirement_exits_2_with_file_and_line(tmp_path: Path, key: str,
                                                          value: str) -> None:
    svc = _svc("a", 8100).replace("  concurrency: 4\n", "")  # the key under test alone
    text = _fleet([_host("h1")], [svc + f"  {key}: {value}\n"])
    line = next(i for i, row in enumerate(text.splitlines(), 1)
                if row.strip().startswith(f"{key}:"))
    src = _write(tmp_path, text)
    out = tmp_path / "placed.yml"
    result = _place(src, out=out)
    assert result.exit_status == 2, result.stdout + result.stderr
    assert f"fleet.yml:{line}" in result.stderr, (line, result.stderr)
    assert key in result.stderr
    assert not out.exists()


def test_malformed_host_reservation_exits_2(tmp_path: Path) -> None:
    text = _fleet([_host("h1", extra="reserved: {0: 1.5}\n")], [_svc("a", 8100)])
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "reserved:" in row)
    result = _place(_write(tmp_path, text))
    assert result.exit_status == 2 and f"fleet.yml:{line}" in result.stderr, result.stderr


def test_infeasible_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    src = _write(tmp_path, _fleet([_host("h1", services=PINNED)],
                                  [_svc("a", 8100, "replicas: 3\n", concurrency=200)]))
    before = src.read_text()
    out = tmp_path / "placed.yml"
    result = _place(src, "--diff", out=out)
    assert result.exit_status == 1
    assert "no placement" in result.stderr and "what would make it fit" in result.stderr
    assert not out.exists() and "@@" not in result.stdout
    result = _place(src, "--in-place")
    assert result.exit_status == 1 and src.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["fleet.yml"]
