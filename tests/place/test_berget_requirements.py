"""`gpufleet place` on the berget fleet written as requirements
(inventories/examples/berget-requirements.yml): the placed file plans cleanly (the real loader and
build_plan, and `gpufleet plan`'s exit status), uses no more GPUs than the hand-placed
inventories/berget.yml, gives every service what it asked for by the re-plan's own numbers (not
place's), and leaves the reserved share of GPU 3 free."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import INVENTORIES, run_cli

from gpufleet import inventory
from gpufleet.place.demand import Need, meets
from gpufleet.plan import Plan, build_plan

REQUIREMENTS = INVENTORIES / "examples" / "berget-requirements.yml"
HAND_PLACED = INVENTORIES / "berget.yml"


@pytest.fixture(scope="module")
def placed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("berget") / "placed.yml"
    result = run_cli("place", str(REQUIREMENTS), "--out", str(out), "--json")
    assert result.exit_status == 0, result.stdout + result.stderr
    return out, json.loads(result.stdout)


@pytest.fixture(scope="module")
def replan(placed: tuple[Path, dict]) -> Plan:
    return build_plan(inventory.load(placed[0]))


def _gpus_in_use(plan: Plan) -> set[tuple[str, int]]:
    return {(h.name, g.index) for h in plan.hosts for g in h.gpus if g.segments}


def test_the_requirements_file_is_not_a_placed_inventory() -> None:
    result = run_cli("plan", str(REQUIREMENTS))
    assert result.exit_status == 2
    assert "gpufleet place" in result.stderr and "berget-requirements.yml:" in result.stderr


def test_placed_file_plans_without_error(placed: tuple[Path, dict], replan: Plan) -> None:
    out, report = placed
    assert report["feasible"] and report["written"] == str(out)
    assert not replan.has_errors, [f.message for f in replan.findings if f.severity == "error"]
    result = run_cli("plan", str(out))
    assert result.exit_status == 0, result.stdout + result.stderr


def test_no_more_gpus_than_the_hand_placed_fleet(placed: tuple[Path, dict], replan: Plan) -> None:
    by_hand = _gpus_in_use(build_plan(inventory.load(HAND_PLACED)))
    assert len(_gpus_in_use(replan)) <= len(by_hand)
    assert placed[1]["gpus_used"] == len(_gpus_in_use(replan))


def test_every_service_gets_what_it_asked_for(replan: Plan) -> None:
    """Requirements as written (the input file), KV as the re-plan of the written file says."""
    wanted = inventory.load(REQUIREMENTS, placing=True)
    margin = wanted.fleet.placement.margin
    host = replan.host("gpu-01")
    asked = wanted.hosts["gpu-01"].services
    assert sorted(s.service.name for s in host.services) == sorted(s.name for s in asked)
    checked = 0
    for svc in asked:
        got = host.service(svc.name)
        assert got.service.port == svc.port and got.service.max_model_len == svc.max_model_len
        if svc.concurrency is None and svc.kv_tokens is None:
            continue  # pooling models and docling: no KV requirement
        est = got.estimate
        assert est is not None and est.starts, svc.name
        tokens = max(svc.kv_tokens or 0, (svc.concurrency or 0) * (svc.max_model_len or 0))
        assert est.kv_tokens >= tokens, (svc.name, est.kv_tokens, tokens)
        if svc.concurrency is not None:
            assert est.max_concurrency >= svc.concurrency, (svc.name, est.max_concurrency)
        assert meets(est, Need.of(svc), margin), f"{svc.name}: the margin is not kept"
        checked += 1
    assert checked == 9  # every LLM and Whisper states a requirement


def test_reserved_share_of_gpu_3_stays_free(replan: Plan) -> None:
    wanted = inventory.load(REQUIREMENTS, placing=True)
    shares = wanted.hosts["gpu-01"].reserved
    assert isinstance(shares, dict) and set(shares) == {3}
    gpu = replan.host("gpu-01").gpus[3]
    assert gpu.free_bytes >= shares[3] * gpu.total_bytes
    assert not [f for f in replan.findings if f.code == "reserved_used"]


def test_the_big_model_is_alone_on_four_gpus(replan: Plan) -> None:
    host = replan.host("gpu-01")
    big = host.service("mai-ds-r1")
    assert len(big.gpus) == 4 and big.service.tensor_parallel_size == 4
    for g in big.gpus:
        assert [name for name, _ in host.gpus[g].segments] == ["mai-ds-r1"]


def test_comments_and_settings_survive(placed: tuple[Path, dict]) -> None:
    text = placed[0].read_text()
    assert "# Part of GPU 3 stays free for trying new models" in text
    assert "reserved: {3: 0.33}" in text and "margin: 0.05" in text
    assert "address: gpu-01.berget.example" in text
    assert "image: vllm/vllm-openai-rocm:v0.33.0" in text
