"""The `vllm` console script of the vllm-test-double: `vllm serve MODEL [flags]`, `--version`."""

from __future__ import annotations

import sys

from ... import _deps

USAGE = "usage: vllm [-h] [-v] {serve} ...  (vllm-test-double)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-v"], ["--version"]):
        print(f"{_deps.emulated_version()} (vllm-test-double)")
        return 0
    if argv[:1] == ["serve"]:
        from ..openai.api_server import serve

        return serve(argv[1:])
    print(USAGE, file=sys.stderr)
    if argv[:1] in (["-h"], ["--help"]):
        return 0
    print(f"vllm: error: argument subparser: invalid choice: {argv[:1]}", file=sys.stderr)
    return 2
