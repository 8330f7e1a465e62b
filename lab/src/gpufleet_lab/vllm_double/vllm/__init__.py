"""vllm-test-double: stands in for vLLM's GPU and model loading in gpufleet lab hosts.

Not vLLM. It accepts `vllm serve` flags, predicts memory with gpufleet's planner, claims VRAM on
the lab's emulated GPUs and answers the OpenAI endpoints with tiny deterministic output.
"""

from ._deps import emulated_version

__version__ = emulated_version()
