"""The vllm-test-double under load: it holds its startup claim as vLLM does (KV cache
preallocated), and grows only with the leak knob, for `validate --load` to find."""

from __future__ import annotations

import pytest
from test_vllm_double import IDLE, _used, gpus, site, start  # noqa: F401 (fixtures)

FLAGS = ("--gpu-memory-utilization", "0.1", "--max-model-len", "2048")
LONG = {"prompt": " ".join(["the"] * 1900), "max_tokens": 64}


def test_a_well_planned_instance_does_not_grow_under_load(start, gpus) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    double = start(*FLAGS)
    assert double.wait_ready()
    claimed = _used(gpus)
    for _ in range(20):
        assert double.post("/v1/completions", LONG)[0] == 200
    assert _used(gpus) == claimed


def test_the_leak_knob_grows_the_claim_per_request(start, gpus) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    leak = 64 << 20
    double = start(*FLAGS, VLLM_TEST_DOUBLE_LEAK_BYTES_PER_REQUEST=str(leak))
    assert double.wait_ready()
    claimed = _used(gpus)
    for _ in range(3):
        assert double.post("/v1/completions", LONG)[0] == 200
    assert double.get("/health")[0] == 200  # not an inference request: no leak
    assert _used(gpus) == claimed + 3 * leak


@pytest.mark.parametrize("leak", [str(100 << 30)])
def test_a_leak_that_no_longer_fits_fails_with_hips_oom(start, gpus, leak) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    double = start(*FLAGS, VLLM_TEST_DOUBLE_LEAK_BYTES_PER_REQUEST=leak)
    assert double.wait_ready()
    assert double.post("/v1/completions", LONG)[0] == 200  # 100 GiB more still fits
    status, body = double.post("/v1/completions", LONG)
    assert status == 500 and "HIP out of memory" in str(body)
