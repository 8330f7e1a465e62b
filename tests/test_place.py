"""`gpufleet place`: requirements met by re-planning what it writes, pins kept, replicas spread,
infeasible inputs explained (exit 1), malformed ones refused with file:line (exit 2)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from gpufleet import inventory
from gpufleet.cli import main
from gpufleet.errors import InputError
from gpufleet.plan import build_plan

FLEET = """\
# a test fleet
fleet:
  name: t
  vllm_version: "0.19.1"
  image: vllm/vllm-openai-rocm:v0.19.1
hosts:
  h1:
    address: h1.t.example
    gpu_count: 2
    services:
      # pinned: never moved
      - name: small
        kind: llm
        model: Qwen/Qwen2.5-7B-Instruct
        gpus: [0]
        port: 8000
        gpu_memory_utilization: 0.3
        max_model_len: 8192
services:
  - name: chat   # the chat model
    kind: llm
    model: Qwen/Qwen2.5-14B-Instruct
    port: 8100
    max_model_len: 32768
    concurrency: {concurrency}
    replicas: {replicas}
"""


def _run(tmp_path: Path, *args: str, concurrency: int = 8, replicas: int = 2
         ) -> tuple[int, str, Path]:
    src = tmp_path / "fleet.yml"
    src.write_text(FLEET.format(concurrency=concurrency, replicas=replicas))
    out = tmp_path / "placed.yml"
    stdout, stderr = io.StringIO(), io.StringIO()
    from gpufleet.env import Environment

    code = main(["place", str(src), "--out", str(out), *args],
                env=Environment(stdout, stderr, 200))
    return code, stdout.getvalue() + stderr.getvalue(), out


def test_placed_inventory_meets_requirements_when_replanned(tmp_path: Path) -> None:
    code, text, out = _run(tmp_path, "--json")
    assert code == 0, text
    report = json.loads(text)
    assert report["feasible"] and report["written"] == str(out)
    plan = build_plan(inventory.load(out))
    assert not plan.has_errors
    host = plan.host("h1")
    chats = [s for s in host.services if s.service.model == "Qwen/Qwen2.5-14B-Instruct"]
    assert len(chats) == 2 and {s.gpus for s in chats} == {(0,), (1,)}  # replicas apart
    for s in chats:
        assert s.estimate is not None and s.estimate.max_concurrency >= 8
    small = host.service("small")
    assert small.gpus == (0,) and small.estimate and small.estimate.utilization == 0.3
    written = out.read_text()
    assert "# the chat model" in written and "# pinned: never moved" in written
    assert "replicas" not in written and "\nservices:" not in written


def test_infeasible_says_why_and_exits_1(tmp_path: Path) -> None:
    code, text, out = _run(tmp_path, concurrency=200, replicas=3)
    assert code == 1
    assert "no placement" in text and "fp8" in text
    assert not out.exists()


def test_plan_refuses_unplaced_inventory_with_location(tmp_path: Path) -> None:
    src = tmp_path / "fleet.yml"
    src.write_text(FLEET.format(concurrency=1, replicas=1))
    with pytest.raises(InputError) as err:
        inventory.load(src)
    assert "gpufleet place" in str(err.value) and "fleet.yml:" in str(err.value)


def test_malformed_requirement_exits_2_with_line(tmp_path: Path) -> None:
    src = tmp_path / "fleet.yml"
    src.write_text(FLEET.format(concurrency="many", replicas=1))
    stderr = io.StringIO()
    from gpufleet.env import Environment

    code = main(["place", str(src)], env=Environment(io.StringIO(), stderr, 200))
    assert code == 2
    assert "fleet.yml:" in stderr.getvalue() and "concurrency" in stderr.getvalue()
