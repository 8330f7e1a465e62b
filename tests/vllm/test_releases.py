"""vLLM's release differences are rows (gpufleet.vllm.releases), not inline version checks."""

from __future__ import annotations

import re

import pytest
from support import REPO

from gpufleet.vllm import releases
from gpufleet.vllm.memory import default_utilization, device_wide_accounting, has, is_v0


@pytest.mark.parametrize(("version", "expected"), [
    ("0.6.2", True), ("0.6.3", False), ("0.6.4", True), ("0.6.5", False), ("0.7.3", False),
    ("0.8.0", True), ("0.9.0", True), ("0.9.1", False), ("0.19.1", False),
])
def test_a_row_may_hold_several_ranges(version: str, expected: bool) -> None:
    assert device_wide_accounting(version) is expected


def test_boundaries_and_suffixes() -> None:
    assert is_v0("0.7.3") and not is_v0("0.8.0")
    assert default_utilization("0.19.9") == 0.9 and default_utilization("0.20.0rc1") == 0.92
    assert has("0.10.1+rocm700", "runner_convert_flags")
    assert not has("0.10.0", "runner_convert_flags")
    assert releases.parse_version("0.28.1rc1.dev452") == (0, 28, 1)


def test_every_row_says_where_its_boundary_comes_from() -> None:
    assert len(releases.BY_NAME) == len(releases.ROWS)  # unique names
    for row in releases.ROWS:
        assert row.what and row.source and row.ranges
        assert all(start < until for start, until in row.ranges)
    with pytest.raises(KeyError):
        releases.has("0.19.1", "no_such_behaviour")


def test_no_stage_compares_vllm_versions_inline() -> None:
    inline = re.compile(r"(?<!-)[<>]=?\s*\(0, \d+, \d+\)|\(0, \d+, \d+\)\s*[<>]")
    found = [str(p.relative_to(REPO)) for p in (REPO / "src" / "gpufleet").rglob("*.py")
             if p.name != "releases.py" and inline.search(p.read_text())]
    assert found == []
