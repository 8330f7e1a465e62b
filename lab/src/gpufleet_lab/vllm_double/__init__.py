"""vllm-test-double: a stand-in for vLLM in gpufleet's lab hosts (no GPU, no model weights).

It is shipped as a wheel named `vllm` (console script `vllm`, `python -m vllm`,
`python -m vllm.entrypoints.openai.api_server`). It accepts vLLM's `serve` flags, plays each
model's startup from its own numbers (vllm/startups.json, or a test's VLLM_TEST_DOUBLE_MEMORY;
never gpufleet's planner), checks and claims VRAM on the lab's emulated GPUs (fakegpu), fails
with vLLM's messages, and serves the OpenAI endpoints with tiny deterministic answers.

Under load it holds what vLLM holds: its startup claim, unchanged (the KV cache is allocated
whole at startup and activations stay within the profiled peak). Test knobs (environment,
named VLLM_TEST_DOUBLE_*, never vLLM's): _LOAD_SECONDS (model-loading time), _VRAM_DEVIATION
(claim this share more than the model holds), _FAIL (health | crash), _MEMORY (the model's
numbers, JSON), _LEAK_BYTES_PER_REQUEST (each inference request adds this many bytes to the
claim on every GPU: a leak, for `gpufleet validate --load` to find; once it no longer fits,
requests fail with HIP's out-of-memory error).
"""

from __future__ import annotations

from pathlib import Path

from gpufleet_lab.vllm_double._build import EMULATED_VERSION, make_wheel


def build_wheel(out_dir: str | Path, *, vllm_version: str = EMULATED_VERSION) -> Path:
    """Build the vllm-test-double wheel into out_dir; return the .whl path. `vllm_version` is
    the vLLM release the double claims to be."""
    return make_wheel(out_dir, vllm_version=vllm_version)
