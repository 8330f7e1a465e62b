"""The release data read from vLLM's own source (gpufleet.vllm.versions): the planner's rows
agree with it for every release read, and its messages are filled completely."""

from __future__ import annotations

import re

import pytest

from gpufleet.vllm import memory, messages, versions
from gpufleet.vllm.releases import has

SUPPORTED = versions.supported()
MI300X = memory.MI300X_TOTAL_BYTES


def test_every_minor_line_from_0_10_to_the_newest_is_read():
    lines = {tuple(int(p) for p in v.split(".")[:2]) for v in SUPPORTED}
    assert {(0, minor) for minor in range(10, 35) if minor != 15} <= lines
    assert versions.newest() == "0.34.0"


@pytest.mark.parametrize("version", SUPPORTED)
def test_the_rows_agree_with_the_release_source(version):
    """Each boundary in gpufleet.vllm.releases holds for every release read from source."""
    release = versions.release(version)
    assert has(version, "default_utilization_0_92") == (release.default_utilization == 0.92)
    assert has(version, "batching_tier_160gib") == any(t.min_gib >= 160 for t in release.tiers)
    assert has(version, "graphs_in_budget_cuda") == release.graphs_in_budget["cuda"]
    assert has(version, "graphs_in_budget_rocm") == release.graphs_in_budget["rocm"]
    assert has(version, "kv_sized_after_graphs") == release.kv_sized_after_graphs
    assert has(version, "block_size_64") == (release.default_block_size == 64)
    assert has(version, "free_memory_names_device") == (
        "device_" in release.messages["free_memory"])
    assert has(version, "model_s_max_seq_len_wording") == (
        "model's max seq len" in release.messages["max_seq_len"])


@pytest.mark.parametrize("version", SUPPORTED)
def test_every_message_placeholder_is_filled(version):
    for name, template in versions.release(version).messages.items():
        for expression in re.findall(r"\{([^{}]*)\}", template):
            assert messages.placeholder_key(expression), (version, name, expression)
    text = messages.max_seq_len(version, 131072, 20 << 30, 10 << 30, 65536, 65536, 0.5)
    assert "?" not in text and "{" not in text and "(131072)" in text
    assert "estimated maximum model length is 65536" in text
    text = messages.free_memory(version, 90 << 30, 192 << 30, 0.5, 96 << 30)
    assert "(90.00/192.00 GiB)" in text and "(0.5, 96.00 GiB)" in text
    assert ("cuda:0" in text) == has(version, "free_memory_names_device")


@pytest.mark.parametrize(("asked", "planned"), [
    ("0.33.0", "0.33.0"), ("0.20.1", "0.20.2"), ("0.19.1+rocm", "0.19.1"),
    ("0.15.1", "0.14.1"), ("0.40.0", "0.34.0"), ("0.9.2", "0.10.0"),
])
def test_an_unread_release_is_planned_as_its_nearest(asked, planned):
    assert versions.nearest(asked) == planned
    assert versions.release(asked).exact == (asked in ("0.33.0", "0.19.1+rocm"))


def test_defaults_come_from_the_release():
    assert memory.default_utilization("0.19.1") == 0.9
    assert memory.default_utilization("0.20.0") == 0.92
    assert memory.default_batching(MI300X, "0.27.1") == (8192, 1024)
    assert memory.default_batching(MI300X, "0.28.0") == (16384, 1024)
    assert memory.default_block_size("0.33.0") == 16
    assert memory.default_block_size("0.34.0") == 64
    assert not memory.graphs_in_budget("0.25.1", "rocm")
    assert memory.graphs_in_budget("0.25.1", "cuda")
    assert memory.graphs_in_budget("0.26.0", "rocm")
