"""The knob table is the one spelling of vLLM's engine knobs: the schema, the instance spec,
estimate's options, the units' flags and import's reading of a command line all agree with it."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from gpufleet.adopt import service_from_argv
from gpufleet.commands import estimate
from gpufleet.errors import InputError
from gpufleet.inventory import Service
from gpufleet.vllm import flags, knobs
from gpufleet.vllm.memory import InstanceSpec

KNOBS = knobs.KNOBS


def accepts(knob: knobs.Knob, value: Any) -> bool:
    field = Service.model_fields[knob.key]
    kind = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    try:
        TypeAdapter(kind).validate_python(value)  # type: ignore[arg-type]
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("knob", KNOBS, ids=lambda k: k.key)
def test_the_schema_declares_each_knob_as_the_table_does(knob: knobs.Knob) -> None:
    field = Service.model_fields[knob.key]
    assert field.default == knob.default
    if knob.high is not None:
        kind = knob.kind
        assert accepts(knob, kind(knob.high)) and not accepts(knob, kind(knob.high) + 1)
        low = kind(knob.low)
        assert accepts(knob, low) is not knob.low_open
        assert not accepts(knob, low - 1)
    for choice in knob.choices:
        assert accepts(knob, choice)
    if knob.choices:
        assert not accepts(knob, "int3")


def test_every_knob_is_an_instance_spec_field_and_an_estimate_option() -> None:
    spec_fields = {f.name for f in dataclasses.fields(InstanceSpec)}
    assert {k.key for k in KNOBS} <= spec_fields
    sub = argparse.ArgumentParser().add_subparsers()
    options = {o for a in estimate.add_parser(sub)._actions for o in a.option_strings}
    assert {k.option for k in KNOBS} <= options
    assert {"--util", "--tp", "--pp"} <= options  # estimate's documented short spellings


def test_estimate_refuses_out_of_range_values_naming_the_option() -> None:
    args = argparse.Namespace(**{k.dest: k.default for k in KNOBS})
    args.tp = 65
    with pytest.raises(InputError) as err:
        knobs.estimate_values(args)
    assert "--tp 65 is out of range" in str(err.value) and "1 to 64" in str(err.value)
    args.tp, args.util = 1, 0.0
    with pytest.raises(InputError, match="--util 0.0 is out of range"):
        knobs.estimate_values(args)


def test_the_plan_decides_every_knobs_flag_so_extra_args_cannot_set_it() -> None:
    assert {k.flag for k in KNOBS} <= set(flags.PLANNED)


values = st.fixed_dictionaries({
    "gpu_memory_utilization": st.sampled_from([0.05, 0.1, 0.5, 0.93, 1.0]),
    "max_model_len": st.integers(1, 10**6),
    "kv_cache_memory_bytes": st.none() | st.integers(1, 2**40),
    "tensor_parallel_size": st.integers(1, 8),
    "pipeline_parallel_size": st.integers(1, 4),
    "dtype": st.sampled_from(["auto", "bfloat16", "float16"]),
    "quantization": st.none() | st.sampled_from(["awq", "gptq", "fp8"]),
    "kv_cache_dtype": st.sampled_from(["auto", "fp8"]),
    "max_num_seqs": st.none() | st.integers(1, 1024),
    "max_num_batched_tokens": st.none() | st.integers(1, 65536),
    "enforce_eager": st.booleans(),
    "block_size": st.sampled_from([1, 16, 32, 48, 128]),
})


@settings(max_examples=200, deadline=None)
@given(values)
def test_units_flags_read_back_by_import_give_the_same_knobs(vals: dict[str, Any]) -> None:
    argv = ["vllm", "serve", "org/model", *knobs.to_argv(vals)]
    svc = service_from_argv(argv, {}, "svc")
    for knob in KNOBS:
        assert svc.get(knob.key, knob.default) == vals[knob.key], knob.key
    assert "extra_args" not in svc  # every flag the table writes is one import understands


def test_block_size_came_in_as_one_row() -> None:
    """--block-size was missing (only extra_args could set it, unplanned); one row in the table
    made it an inventory key, a unit flag, an estimate option, import's reading and the plan's
    KV arithmetic."""
    from support import run_cli

    from gpufleet import inventory
    from gpufleet.plan import build_plan
    from gpufleet.render import render_host

    text = """\
fleet: {name: blocks, vllm_version: "0.19.1", runtime: venv}
hosts:
  h1:
    address: h1.blocks.example
    gpu_count: 1
    services:
      - {name: chat, kind: llm, model: Qwen/Qwen2.5-0.5B-Instruct, gpus: [0], port: 8000,
         gpu_memory_utilization: 0.3, max_model_len: 4096, block_size: 48}
"""
    plan = build_plan(inventory.loads(text, "blocks.yml"))
    svc = plan.hosts[0].services[0]
    assert svc.estimate.kv_tokens % 48 == 0
    unit = next(f.content for f in render_host(plan, "h1") if f.path.endswith("chat.service"))
    assert "--block-size 48" in unit
    assert service_from_argv(["vllm", "serve", "m", "--block-size", "48"], {}, "s")[
        "block_size"] == 48
    with pytest.raises(InputError) as err:
        inventory.loads(text.replace("block_size: 48", "block_size: 0"), "blocks.yml")
    assert "block_size" in str(err.value) and "blocks.yml:" in str(err.value)
    with pytest.raises(InputError, match="extra_args sets --block-size"):
        inventory.loads(text.replace("block_size: 48", "extra_args: [--block-size, '32']"),
                        "blocks.yml")
    result = run_cli("estimate", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--block-size", "48",
                     "--max-model-len", "4096", "--json")
    assert result.exit_status == 0


def test_the_readme_s_knob_table_says_which_releases_have_each_flag():
    from support import REPO

    from gpufleet.vllm import knobs as table

    readme = (REPO / "README.md").read_text()
    for knob in table.KNOBS:
        row = next(line for line in readme.splitlines()
                   if line.startswith(f"| `{knob.key}` | `{knob.flag}`"))
        assert row.rstrip().endswith(f"| {table.since(knob)} |"), row
    kv = table.BY_KEY["kv_cache_memory_bytes"]
    assert table.releases_with(kv)[0] == "0.10.2"  # absent from 0.10.0 and 0.10.1.1
