"""The double's startups.json, generated from the recorded real startups it comes from.

    python -m gpufleet_lab.vllm_double.recorded          # rewrite vllm/startups.json
    python -m gpufleet_lab.vllm_double.recorded --check  # exit 1 if it is out of date

vllm/recorded_startups.yaml holds real vLLM startup logs (quoted verbatim, with their URLs) and,
for models without one, a cited checkpoint fact; each Profile number names the quote it is read
from and the rule that turns it into bytes. This module applies those rules and nothing else:
it never imports gpufleet (the planner's memory code must not decide what the lab's vLLM does).
The double itself reads only startups.json (stdlib json on the lab hosts).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

GIB = 1 << 30
MIB = 1 << 20
HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "vllm" / "recorded_startups.yaml"
STARTUPS = HERE / "vllm" / "startups.json"
NUMBER_KEYS = ("weights_bytes", "activation_bytes_per_token")  # per model
DEFAULT_KEYS = ("baseline_bytes", "non_torch_bytes", "graph_bytes")  # shared unless overridden
CONFIG_KEYS = ("architecture", "task", "hidden_size", "num_attention_heads", "num_layers",
               "kv_bytes_per_token", "max_position_embeddings")
SCALE = {"M": 10**6, "million": 10**6, "B": 10**9, "billion": 10**9}

ABOUT = [
    "How each model the lab serves starts on an MI300X, as the vllm-test-double plays it.",
    "GENERATED from recorded_startups.yaml by `python -m gpufleet_lab.vllm_double.recorded`: "
    "do not edit by hand. Every memory number is read from a real vLLM startup log quoted there "
    "(with its URL), or, for a model without one, from a cited checkpoint fact; never from "
    "gpufleet's planner, so the lab can disagree with the plan.",
    "weights_bytes: the run's 'Model loading took X GiB' (or 'Loading model weights took X GB', "
    "which is GiB too); without a log, the checkpoint's parameter count x 2 bytes or its fp16 "
    "size.",
    "activation_bytes_per_token: a run's profiling activation peak / that run's "
    "max_num_batched_tokens; borrowed from another model's run where the model has none "
    "(`_sources` names it); 0 for the pooling models (no pooling-model figure was found).",
    "_defaults: baseline_bytes = what a real instance held beyond its budget (nvidia-smi used "
    "- util x total); non_torch_bytes and graph_bytes from the one ROCm run's profiling and "
    "graph-capture lines.",
    "Structure (layers, heads, kv_bytes_per_token = 2 x layers x KV heads x head size x 2 B, "
    "architecture, task, max_position_embeddings) is from config.json; 0 KV for encoder-only "
    "models, which vLLM gives no KV cache.",
    "A test overrides any of these with VLLM_TEST_DOUBLE_MEMORY (JSON, same keys).",
]


class RecordError(ValueError):
    """The fixture does not support a number it claims."""


def load(path: Path = FIXTURE) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def sources(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every run and fact of every model, by id (a model may borrow another model's run)."""
    found: dict[str, dict[str, Any]] = {}
    for name, model in doc["models"].items():
        for kind, text_key in (("runs", "lines"), ("facts", "text")):
            for entry in model.get(kind) or []:
                if entry["id"] in found:
                    raise RecordError(f"{name}: source id {entry['id']!r} used twice")
                found[entry["id"]] = {**entry, "_lines": list(entry[text_key]), "_model": name}
    return found


def _number(pattern: str, quote: str) -> re.Match[str]:
    match = re.search(pattern, quote)
    if match is None:
        raise RecordError(f"no figure matching {pattern!r} in the quote {quote!r}")
    return match


def value(spec: dict[str, Any], known: dict[str, dict[str, Any]]) -> int:
    """The bytes one `numbers` entry stands for, read from its quote by its rule."""
    rule = spec["rule"]
    if rule == "none":
        return 0
    source = known.get(spec["source"])
    if source is None:
        raise RecordError(f"unknown source {spec['source']!r}")
    quote = spec["quote"]
    if not any(quote in line for line in source["_lines"]):
        raise RecordError(f"{spec['source']}: no quoted line contains {quote!r}")
    if rule == "gib":
        return round(float(_number(r"(\d+(?:\.\d+)?)\s*Gi?B", quote).group(1)) * GIB)
    if rule == "gib_per_batched_token":
        tokens = source["flags"]["max_num_batched_tokens"]
        if not tokens:
            raise RecordError(f"{spec['source']}: no max_num_batched_tokens for {quote!r}")
        return round(float(_number(r"(\d+(?:\.\d+)?)\s*GiB", quote).group(1)) * GIB / tokens)
    if rule == "used_minus_budget_mib":
        match = _number(r"(\d+)MiB\s*/\s*(\d+)MiB", quote)
        used, total = int(match.group(1)), int(match.group(2))
        util = float(source["flags"]["gpu_memory_utilization"])
        return round((used - util * total) * MIB)
    if rule == "params_x2":
        match = _number(r"(\d+(?:\.\d+)?)\s*(M|B|million|billion)\b", quote)
        return round(float(match.group(1)) * SCALE[match.group(2)] * 2)
    if rule == "decimal_gb":
        return round(float(_number(r"(\d+(?:\.\d+)?)\s*GB", quote).group(1)) * 10**9)
    raise RecordError(f"unknown rule {rule!r}")


def _cite(spec: dict[str, Any]) -> str:
    if spec["rule"] == "none":
        return "not recorded: 0"
    return f"{spec['source']}: {spec['quote']}"


def startups(doc: dict[str, Any]) -> dict[str, Any]:
    """startups.json's content: the double's numbers, each traceable to its quote."""
    known = sources(doc)
    defaults = {key: value(doc["defaults"][key], known) for key in DEFAULT_KEYS}
    out: dict[str, Any] = {
        "_about": ABOUT,
        "_defaults": defaults,
        "_defaults_sources": {key: _cite(doc["defaults"][key]) for key in DEFAULT_KEYS},
    }
    for name, model in doc["models"].items():
        numbers = model["numbers"]
        missing = [k for k in NUMBER_KEYS if k not in numbers]
        if missing:
            raise RecordError(f"{name}: no recorded source for {missing}")
        entry: dict[str, Any] = {key: model["config"][key] for key in CONFIG_KEYS}
        entry |= {key: value(spec, known) for key, spec in numbers.items()}
        entry["_sources"] = {key: _cite(spec) for key, spec in numbers.items()}
        entry["_urls"] = sorted({known[s["source"]]["url"] for s in numbers.values()
                                 if s["rule"] != "none"})
        out[name] = entry
    return out


def render(doc: dict[str, Any]) -> str:
    return json.dumps(startups(doc), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if startups.json is stale")
    args = parser.parse_args(argv)
    text = render(load())
    if args.check:
        if STARTUPS.read_text(encoding="utf-8") != text:
            print(f"{STARTUPS} is out of date: run python -m gpufleet_lab.vllm_double.recorded",
                  file=sys.stderr)
            return 1
        return 0
    STARTUPS.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
