"""The vLLM double's `serve` parser is generated from each release's flag data (no root, no net).

Every release data file gpufleet ships (src/gpufleet/vllm/data/releases/) must give a parser that
accepts each of its flags with a value of the right arity, type and choices, rejects flags and
choices the release lacks, and holds exactly the release's flags, aliases and choices.
"""

from __future__ import annotations

import argparse
import functools
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gpufleet.vllm import versions
from gpufleet_lab.fleet import LAB_VLLM_VERSION
from gpufleet_lab.vllm_double import _build, build_wheel
from gpufleet_lab.vllm_double.vllm import args as cli

RELEASES = _build.known_releases()
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


@functools.cache
def spec(release: str) -> dict[str, Any]:
    return _build.serve_spec(release)


@functools.cache
def parser(release: str) -> argparse.ArgumentParser:
    return cli.build_parser(spec(release))


def parse(release: str, *argv: str) -> argparse.Namespace:
    return cli.parse([MODEL, *argv], spec(release))


def rejected(release: str, *argv: str) -> bool:
    try:
        parser(release).parse_args([MODEL, *argv])  # one parser per release: 300 flags each
    except SystemExit as e:
        assert e.code == 2
        return True
    return False


def flags(release: str) -> dict[str, dict[str, Any]]:
    return dict(spec(release)["serve_flags"])


def _one_value(entry: dict[str, Any]) -> str:
    """A value the flag's type and choices take."""
    if entry.get("choices"):
        return str(entry["choices"][0])
    return {"int": "8", "float": "0.5", "human_int": "4k", "json": '{"a": 1}'}.get(
        entry.get("type") or "str", "x")


def valid_argvs(name: str, entry: dict[str, Any]) -> list[list[str]]:
    """Spellings the release takes for one flag: each of its names, with a valid value."""
    arity, value = entry["arity"], _one_value(entry)
    argvs: list[list[str]] = []
    for spelling in [name, *entry["aliases"]]:
        if arity == "bool":
            argvs.append([spelling])
        elif arity == "many":
            argvs.append([spelling, value, value])
        else:
            argvs.append([spelling, value])
    if arity == "bool" and entry.get("negatable"):
        argvs.append(["--no-" + name[2:]])
    if arity == "json":
        argvs += [[f"{name}.a", "1"], [f"{name}.a.b=x"]]
    if entry.get("value_optional"):
        argvs.append([name])
    if entry.get("repeatable"):
        argvs.append([name, value, name, value])
    return argvs


def _bad_choice(entry: dict[str, Any]) -> str:
    choices = entry["choices"]
    if all(isinstance(c, int) for c in choices):
        return str(max(choices) + 7)  # an int the type takes, not a choice
    return "not-a-choice"


# ---------------------------------------------------------------- every release, every flag


@pytest.mark.parametrize("release", RELEASES)
def test_every_flag_of_the_release_is_accepted_with_a_valid_value(release: str) -> None:
    refused = []
    for name, entry in flags(release).items():
        for argv in valid_argvs(name, entry):
            if rejected(release, *argv):
                refused.append(argv)
    assert not refused


@pytest.mark.parametrize("release", RELEASES)
def test_a_flag_not_in_the_release_is_rejected(release: str) -> None:
    assert rejected(release, "--no-such-flag-in-any-vllm")
    assert rejected(release, "--no-such-flag-in-any-vllm=1")


@pytest.mark.parametrize("release", RELEASES)
def test_a_value_outside_a_flags_choices_is_rejected(release: str) -> None:
    with_choices = {n: e for n, e in flags(release).items() if e.get("choices")}
    assert with_choices
    taken = [n for n, e in with_choices.items() if not rejected(release, n, _bad_choice(e))]
    assert not taken


def _expected_strings(name: str, entry: dict[str, Any]) -> set[str]:
    names = {name, *entry["aliases"]}
    if entry["arity"] == "bool" and entry.get("negatable"):  # BooleanOptionalAction's --no-
        names |= {"--no-" + n[2:] for n in names if n.startswith("--")}
    return names


@pytest.mark.parametrize("release", RELEASES)
def test_the_parser_holds_exactly_the_release_flags_aliases_and_choices(release: str) -> None:
    actions = [a for a in parser(release)._actions
               if a.option_strings and not isinstance(a, argparse._HelpAction)]
    built = {a.option_strings[0]: (set(a.option_strings), a.choices) for a in actions}
    # a run-time registry (0.10's reasoning parsers) is free-form: null, or [] in older data
    wanted = {n: (_expected_strings(n, e), e.get("choices") or None)
              for n, e in flags(release).items()}
    assert built == wanted


@pytest.mark.parametrize("release", RELEASES)
def test_the_attributes_the_double_reads_exist_with_their_defaults(release: str) -> None:
    args = parse(release)
    for name, default in cli.DEFAULTS.items():
        if name not in ("model_tag", "model"):
            assert getattr(args, name) == default, name
    assert args.model == MODEL
    cli.validate(args, spec(release))


# ---------------------------------------------------------------- 0.19.1, the lab's release


@pytest.mark.parametrize("flag", ["--task", "--swap-space", "--disable-log-requests",
                                  "--override-pooler-config"])
def test_0_19_1_rejects_the_flags_it_no_longer_has(flag: str) -> None:
    entry = flags("0.19.1").get(flag)
    argv = [flag] if entry and entry["arity"] == "bool" else [flag, "1"]
    assert rejected("0.19.1", *argv) == (entry is None)
    assert entry is None  # the release's data: these went before 0.19


def test_0_19_1_convert_choices_come_from_its_data() -> None:
    assert rejected("0.19.1", "--convert", "reward")
    assert parse("0.19.1", "--convert", "embed").convert == "embed"


def test_max_model_len_auto_as_each_release_takes_it() -> None:
    assert spec("0.19.1")["parser"]["max_model_len_auto"]
    assert parse("0.19.1", "--max-model-len", "auto").max_model_len == -1
    assert parse("0.19.1", "--max-model-len", "-1").max_model_len == -1
    cli.validate(parse("0.19.1", "--max-model-len", "auto"), spec("0.19.1"))  # Field(ge=-1)
    with pytest.raises(cli.ConfigError, match="greater than or equal to -1"):
        cli.validate(parse("0.19.1", "--max-model-len", "-2"), spec("0.19.1"))
    assert rejected("0.11.0", "--max-model-len", "auto")  # human_readable_int only
    assert rejected("0.13.0", "--max-model-len", "auto")


def test_dash_o_is_the_optimization_level_from_0_12_and_compilation_before() -> None:
    assert parse("0.19.1", "-O3").optimization_level == "3"
    assert parse("0.19.1", "-O", "2").optimization_level == "2"
    assert parse("0.19.1", "-O=1").optimization_level == "1"
    assert parse("0.19.1", "-O.level=3").optimization_level == ".level=3"  # argparse takes it
    assert parse("0.12.0", "-O.mode=3").compilation_config == {"mode": 3}  # -O.x is -cc.x
    for argv in (["-O3"], ["-O", "3"], ["-O=3"], ["-O.level=3"]):
        assert parse("0.11.0", *argv).compilation_config == {"level": 3}


def test_dotted_json_keys_merge_as_flexible_argument_parser_does() -> None:
    args = parse("0.19.1", "--compilation-config.level", "3", "--compilation_config.mode=x",
                 "--compilation-config.sizes+", "1,2", "--compilation-config.sizes+=4")
    assert args.compilation_config == {"level": 3, "mode": "x", "sizes": ["1", "2", "4"]}
    assert parse("0.19.1", "-cc.level=3").compilation_config == {"level": 3}
    assert rejected("0.19.1", "--compilation-config", "{not json")
    assert rejected("0.19.1", "--no-such-config.level", "3")


def test_block_size_48_follows_the_release_data() -> None:
    for release in ("0.11.0", "0.19.1", "0.34.0"):
        choices = flags(release)["--block-size"]["choices"]
        refused = choices is not None and 48 not in choices
        assert rejected(release, "--block-size", "48") == refused
    assert parse("0.19.1", "--block-size", "48").block_size == 48
    assert rejected("0.11.0", "--block-size", "48")


def test_underscores_equals_and_human_ints() -> None:
    assert parse("0.19.1", "--max_model_len=32k").max_model_len == 32000
    assert parse("0.19.1", "--max-num-batched-tokens", "2K").max_num_batched_tokens == 2048
    assert parse("0.19.1", "--max-model-len", "25.6k").max_model_len == 25600
    assert rejected("0.19.1", "--max-model-len", "1.5K")  # no decimals with binary suffixes
    assert parse("0.19.1", "--kv-cache-memory-bytes", "1T").kv_cache_memory_bytes == 2**40
    assert rejected("0.11.0", "--kv-cache-memory-bytes", "1T")  # t/T came in 0.13
    assert parse("0.19.1", "-tp", "2", "--tensor_parallel_size=4").tensor_parallel_size == 4


def test_api_key_takes_one_key_then_several() -> None:
    assert parse("0.10.0", "--api-key", "a").api_key == ["a"]
    assert rejected("0.10.0", "--api-key", "a", "b")
    assert parse("0.19.1", "--api-key", "a", "b").api_key == ["a", "b"]


def test_out_of_range_values_fail_like_pydantic() -> None:
    args = parse("0.19.1", "--gpu-memory-utilization", "1.5")
    with pytest.raises(cli.ConfigError, match="less than or equal to 1 \\[type=less_than_equal"):
        cli.validate(args, spec("0.19.1"))


# ---------------------------------------------------------------- which release the wheel plays


@pytest.mark.parametrize("asked", ["0.10.0", "0.10.1", "0.11.1", "0.15.0", "0.19.1", "0.20.0",
                                   "0.20.1", "0.28.1rc1", "0.99.0", "0.9.2"])
def test_the_release_read_is_the_one_gpufleet_plans_with(asked: str) -> None:
    assert _build.release_for(asked) == versions.nearest(asked)


def test_the_lab_release_has_its_own_data_file() -> None:
    assert _build.release_for(LAB_VLLM_VERSION) == LAB_VLLM_VERSION


def test_the_wheel_carries_the_flags_and_says_which_release(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, vllm_version="0.20.1")
    with zipfile.ZipFile(wheel) as zf:
        info = zf.read("vllm/_build_info.py").decode()
        carried = json.loads(zf.read("vllm/_serve_flags.json"))
    assert 'EMULATED_VERSION = "0.20.1"' in info and 'FLAGS_RELEASE = "0.20.2"' in info
    assert "FLAGS_EXACT = False" in info
    assert carried == _build.serve_spec("0.20.1")
    assert carried["release"] == "0.20.2" and carried["asked"] == "0.20.1"
    assert set(carried["serve_flags"]) == set(versions.release("0.20.2").serve_flags)


def test_an_unknown_load_format_parses_but_fails_the_start_as_vllm_s_loader_does():
    args = parse("0.19.1", "--load-format", "bogus")  # free-form in 0.19.1's parser
    with pytest.raises(cli.ConfigError, match="Load format `bogus` is not supported"):
        cli.validate(args, spec("0.19.1"))
    cli.validate(parse("0.19.1", "--load-format", "safetensors"), spec("0.19.1"))
