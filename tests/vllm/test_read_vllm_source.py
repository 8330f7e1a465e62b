"""tools/read_vllm_source.py: extraction on synthetic vLLM-like snippets, and the committed data.

No network: the snippets below are small imitations of vLLM's own code (arg_utils.py's
`_compute_kwargs`, config dataclasses, cli_args.py's FrontendArgs loop, gpu_worker.py's graph
profiling guard), fed to the reader as an in-memory release.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "src" / "gpufleet" / "vllm" / "data" / "releases"


def _load_tool():
    spec = importlib.util.spec_from_file_location("read_vllm_source",
                                                  ROOT / "tools" / "read_vllm_source.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["read_vllm_source"] = module
    spec.loader.exec_module(module)
    return module


rvs = _load_tool()

# ----------------------------------------------------------------------------- synthetic release

ARG_UTILS_NEW = '''
import argparse
from typing import Literal, get_args
from vllm.config import CacheConfig, ModelConfig, ParallelConfig, SchedulerConfig
from vllm.config.parallel import PASSTHROUGH
from vllm.utils import FlexibleArgumentParser, GiB_bytes

def literal_to_kwargs(type_hints):
    kwarg = "metavar" if contains_type(type_hints, str) else "choices"
    return {"type": option_type, kwarg: sorted(options)}

def get_type_hints(type_hint):
    if origin in {Union, UnionType}:
        pass

def _compute_kwargs(cls):
    for field in fields(cls):
        type_hints = {dict if is_dict_subclass(th) else th for th in type_hints}
        if dataclass_cls is not None:
            pass
        elif type_hints == {bool, str, type(None)}:
            pass
        elif contains_type(type_hints, set):
            pass
        elif contains_type(type_hints, int):
            human_readable_int_args = {"max_num_batched_tokens", "kv_cache_memory_bytes"}
            if name == "max_model_len":
                pass
            elif name in human_readable_int_args:
                pass

def get_kwargs(cls):
    return copy.deepcopy(_compute_kwargs(cls))

@dataclass
class EngineArgs:
    model: str = ModelConfig.model
    dtype: str = ModelConfig.dtype
    kv_cache_dtype: str = CacheConfig.cache_dtype
    block_size: int | None = None
    gpu_memory_utilization: float = CacheConfig.gpu_memory_utilization
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None

    @staticmethod
    def add_cli_args(parser):
        model_kwargs = get_kwargs(ModelConfig)
        model_group = parser.add_argument_group(title="ModelConfig")
        model_group.add_argument("--max-model-len", **model_kwargs["max_model_len"])
        model_group.add_argument("--quantization", "-q", **model_kwargs["quantization"])
        model_group.add_argument("--dtype", **model_kwargs["dtype"])
        model_group.add_argument("--served-model-name", **model_kwargs["served_model_name"])
        model_group.add_argument("--enforce-eager", **model_kwargs["enforce_eager"])
        model_group.add_argument("--hf-overrides", **model_kwargs["hf_overrides"])
        parallel_kwargs = get_kwargs(ParallelConfig)
        parallel_kwargs["backend"]["choices"].remove(PASSTHROUGH)
        parallel_group = parser.add_argument_group(title="ParallelConfig")
        parallel_group.add_argument(
            "--tensor-parallel-size", "-tp", **parallel_kwargs["tensor_parallel_size"])
        parallel_group.add_argument("--backend", **parallel_kwargs["backend"])
        cache_kwargs = get_kwargs(CacheConfig)
        cache_group = parser.add_argument_group(title="CacheConfig")
        cache_group.add_argument(
            "--gpu-memory-utilization", "--device-memory-utilization",
            dest="gpu_memory_utilization", **cache_kwargs["gpu_memory_utilization"])
        cache_group.add_argument("--block-size", **cache_kwargs["block_size"])
        cache_group.add_argument("--kv-cache-dtype", **cache_kwargs["cache_dtype"])
        scheduler_kwargs = get_kwargs(SchedulerConfig)
        parser.add_argument(
            "--max-num-batched-tokens",
            **{**scheduler_kwargs["max_num_batched_tokens"], "default": None})
        parser.add_argument("--log-level", choices=get_args(LogLevel), default="info")
        parser.add_argument("--load-format", choices=[f.value for f in LoadFormat])
        if not ("serve" in sys.argv[1:] and "--help" in sys.argv[1:]):
            parser.add_argument("--model", **model_kwargs["model"])
        parser.add_argument("--disable-log-stats", action="store_true")
        return parser

    def get_batch_defaults(self):
        if device_memory >= 160 * GiB_bytes:
            default_max_num_batched_tokens = {
                UsageContext.LLM_CLASS: 16384, UsageContext.OPENAI_API_SERVER: 16384}
            default_max_num_seqs = {
                UsageContext.LLM_CLASS: 1024, UsageContext.OPENAI_API_SERVER: 1024}
        elif device_memory >= 70 * GiB_bytes and "a100" not in device_name:
            default_max_num_batched_tokens = {
                UsageContext.LLM_CLASS: 16384, UsageContext.OPENAI_API_SERVER: 8192}
            default_max_num_seqs = {
                UsageContext.LLM_CLASS: 1024, UsageContext.OPENAI_API_SERVER: 1024}
        else:
            default_max_num_batched_tokens = {
                UsageContext.LLM_CLASS: 8192, UsageContext.OPENAI_API_SERVER: 2048}
            default_max_num_seqs = {
                UsageContext.LLM_CLASS: 256, UsageContext.OPENAI_API_SERVER: 256}

class AsyncEngineArgs(EngineArgs):
    @staticmethod
    def add_cli_args(parser, async_args_only=False):
        if not async_args_only:
            parser = EngineArgs.add_cli_args(parser)
        parser.add_argument("--enable-log-requests", action=argparse.BooleanOptionalAction)
        return parser

LogLevel = Literal["debug", "info"]

class LoadFormat(str, enum.Enum):
    AUTO = "auto"
    SAFETENSORS = "safetensors"
'''

CONFIG_INIT = '''
from vllm.config.cache import CacheConfig
from vllm.config.model import ModelConfig
from vllm.config.parallel import ParallelConfig, PASSTHROUGH
from vllm.config.scheduler import SchedulerConfig
'''

CONFIG_CACHE = '''
from typing import ClassVar, Literal
from pydantic import Field
from vllm.config.utils import config

CacheDType = Literal["auto", "fp8", "fp8_e4m3"]

@config
class CacheConfig:
    DEFAULT_BLOCK_SIZE: ClassVar[int] = 16
    block_size: int = Field(default=None, gt=0)
    gpu_memory_utilization: float = Field(default=0.92, gt=0, le=1)
    cache_dtype: CacheDType = "auto"
'''

CONFIG_MODEL = '''
from typing import TYPE_CHECKING, Any, Literal
from vllm.config.utils import config

ModelDType = Literal["auto", "half", "float16", "bfloat16"]
if TYPE_CHECKING:
    from vllm.model_executor.layers.quantization import QuantizationMethods
else:
    QuantizationMethods = str

@config
class ModelConfig:
    model: str = "Qwen/Qwen3-0.6B"
    max_model_len: int | None = None
    quantization: QuantizationMethods | str | None = None
    dtype: ModelDType | torch.dtype = "auto"
    served_model_name: str | list[str] | None = None
    enforce_eager: bool = False
    hf_overrides: dict[str, Any] | None = None
'''

QUANT = '''
from typing import Literal
QuantizationMethods = Literal["awq", "fp8", "gptq"]
'''

CONFIG_PARALLEL = '''
from typing import Literal
from vllm.config.utils import config

PASSTHROUGH = "passthrough"
Backend = Literal["naive", "passthrough", "pplx"]

@config
class ParallelConfig:
    tensor_parallel_size: int = 1
    backend: Backend = "naive"
'''

CONFIG_SCHEDULER = '''
from vllm.config.utils import config

@config
class SchedulerConfig:
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 128
    enable_chunked_prefill: bool = True

    def verify_max_model_len(self, max_model_len):
        if self.max_num_batched_tokens < max_model_len and not self.enable_chunked_prefill:
            raise ValueError("too small")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError("must be >= max_num_seqs")
        return self
'''

CLI_ARGS = '''
import json
from typing import Literal
from vllm.config import config
from vllm.engine.arg_utils import AsyncEngineArgs, optional_type

class BaseFrontendArgs:
    lora_modules: list[str] | None = None
    """LoRA modules."""

    @classmethod
    def _customize_cli_kwargs(cls, frontend_kwargs):
        frontend_kwargs["lora_modules"]["type"] = optional_type(str)
        return frontend_kwargs

    @classmethod
    def add_cli_args(cls, parser):
        from vllm.engine.arg_utils import get_kwargs
        frontend_kwargs = get_kwargs(cls)
        frontend_kwargs = cls._customize_cli_kwargs(frontend_kwargs)
        frontend_group = parser.add_argument_group(title="Frontend")
        for key, value in frontend_kwargs.items():
            extra_flags = value.pop("flags", [])
            frontend_group.add_argument(*extra_flags, f"--{key.replace('_', '-')}", **value)
        return parser

@config
class FrontendArgs(BaseFrontendArgs):
    port: int = 8000
    uvicorn_log_level: Literal["debug", "info", "trace"] = "info"
    allowed_origins: list[str] = field(default_factory=lambda: ["*"])
    middleware: list[str] = field(default_factory=lambda: [])

    @classmethod
    def _customize_cli_kwargs(cls, frontend_kwargs):
        frontend_kwargs = super()._customize_cli_kwargs(frontend_kwargs)
        frontend_kwargs["allowed_origins"]["type"] = json.loads
        del frontend_kwargs["allowed_origins"]["nargs"]
        frontend_kwargs["middleware"]["action"] = "append"
        frontend_kwargs["middleware"]["type"] = str
        if "nargs" in frontend_kwargs["middleware"]:
            del frontend_kwargs["middleware"]["nargs"]
        return frontend_kwargs

def make_arg_parser(parser):
    parser.add_argument("model_tag", type=str, nargs="?")
    parser.add_argument("--headless", action="store_true", default=False)
    parser.add_argument("--api-server-count", "-asc", type=int, default=None)
    parser.add_argument("--config")
    parser = FrontendArgs.add_cli_args(parser)
    parser = AsyncEngineArgs.add_cli_args(parser)
    return parser
'''

SERVE = '''
from vllm.entrypoints.common.cli_args import make_arg_parser
from vllm.entrypoints.cli.types import CLISubcommand

class ServeSubcommand(CLISubcommand):
    name = "serve"

    def subparser_init(self, subparsers):
        serve_parser = subparsers.add_parser(self.name, help="serve")
        serve_parser = make_arg_parser(serve_parser)
        return serve_parser
'''

ARGPARSE_UTILS = '''
class FlexibleArgumentParser(ArgumentParser):
    def parse_args(self, args=None, namespace=None):
        for i, arg in enumerate(args):
            if arg.startswith("-O") and arg != "-O":
                processed_args += ["--optimization-level", arg[2:]]
'''


def release(**overrides: str) -> rvs.Source:
    texts = {
        "vllm/engine/arg_utils.py": ARG_UTILS_NEW,
        "vllm/config/__init__.py": CONFIG_INIT,
        "vllm/config/cache.py": CONFIG_CACHE,
        "vllm/config/model.py": CONFIG_MODEL,
        "vllm/config/parallel.py": CONFIG_PARALLEL,
        "vllm/config/scheduler.py": CONFIG_SCHEDULER,
        "vllm/model_executor/layers/quantization/__init__.py": QUANT,
        "vllm/entrypoints/common/cli_args.py": CLI_ARGS,
        "vllm/entrypoints/cli/serve.py": SERVE,
        "vllm/utils/argparse_utils.py": ARGPARSE_UTILS,
    }
    texts.update(overrides)
    return rvs.Source(file="vllm-9.9.9.tar.gz", sha256="0" * 64,
                      texts={k: textwrap.dedent(v) for k, v in texts.items()})


@pytest.fixture(scope="module")
def flags() -> dict:
    found, _notes = rvs.read_serve_flags(release())
    return found


def test_flags_from_config_dataclasses(flags):
    assert flags["--max-model-len"] == {"arity": "value", "aliases": [], "choices": None,
                                        "type": "human_int"}
    assert flags["--tensor-parallel-size"]["aliases"] == ["-tp"]
    assert flags["--tensor-parallel-size"]["type"] == "int"
    assert flags["--enforce-eager"] == {"arity": "bool", "aliases": [], "negatable": True}
    assert flags["--served-model-name"]["arity"] == "many"
    assert flags["--hf-overrides"]["arity"] == "json"
    assert flags["--gpu-memory-utilization"]["aliases"] == ["--device-memory-utilization"]
    assert flags["--gpu-memory-utilization"]["type"] == "float"
    assert flags["--max-num-batched-tokens"]["type"] == "human_int"  # {**kw, "default": None}


def test_literal_choices_and_aliases_across_modules(flags):
    assert flags["--dtype"]["choices"] == ["auto", "bfloat16", "float16", "half"]
    assert flags["--kv-cache-dtype"]["choices"] == ["auto", "fp8", "fp8_e4m3"]
    # choices list mutated in add_cli_args (`.remove(PASSTHROUGH)`, a constant imported)
    assert flags["--backend"]["choices"] == ["naive", "pplx"]
    assert flags["--log-level"]["choices"] == ["debug", "info"]  # get_args(Literal alias)
    assert flags["--load-format"]["choices"] == ["auto", "safetensors"]  # enum values


def test_type_checking_alias_gives_known_values_not_choices(flags):
    quant = flags["--quantization"]
    assert quant["aliases"] == ["-q"]
    assert quant["choices"] is None  # argparse sees `str` at runtime
    assert quant["known_values"] == ["awq", "fp8", "gptq"]


def test_frontend_loop_and_kwarg_mutation(flags):
    assert flags["--port"]["type"] == "int"
    assert flags["--uvicorn-log-level"]["choices"] == ["debug", "info", "trace"]
    assert flags["--allowed-origins"]["arity"] == "json"  # nargs deleted, json.loads type
    assert flags["--middleware"]["arity"] == "value"
    assert flags["--middleware"]["repeatable"] is True
    assert flags["--lora-modules"]["arity"] == "many"  # base-class customisation via super()


def test_plain_options_and_branches(flags):
    assert flags["--headless"] == {"arity": "bool", "aliases": [], "negatable": False}
    assert flags["--api-server-count"]["aliases"] == ["-asc"]
    assert flags["--config"]["type"] == "str"  # argparse default type
    assert "--model" in flags  # added under an undecidable sys.argv test
    assert flags["--enable-log-requests"]["negatable"] is True
    assert "model_tag" not in flags


def test_dash_o_rewrite_becomes_alias():
    src = release(**{"vllm/config/model.py": CONFIG_MODEL + "    optimization_level: int = 2\n",
                     "vllm/engine/arg_utils.py": ARG_UTILS_NEW.replace(
                         '        parallel_kwargs = get_kwargs(ParallelConfig)',
                         '        model_group.add_argument("--optimization-level", '
                         '**model_kwargs["optimization_level"])\n'
                         '        parallel_kwargs = get_kwargs(ParallelConfig)')})
    found, notes = rvs.read_serve_flags(src)
    assert found["--optimization-level"]["aliases"] == ["-O"]
    assert "serve_flags.--optimization-level.aliases" in notes


def test_hint_features_follow_the_release():
    feats = rvs.hint_features(release())
    assert feats.literal_metavar and feats.pep604 and feats.sets and feats.dict_subclass
    assert feats.human_ints == {"max_model_len", "max_num_batched_tokens",
                                "kv_cache_memory_bytes"}
    old = ('def literal_to_kwargs(type_hints):\n    return {"choices": sorted(choices)}\n'
           "def get_type_hints(type_hint):\n    if origin is Union:\n        pass\n"
           "def _compute_kwargs(cls):\n    if name in {'max_model_len', 'max_num_batched_tokens'}:"
           "\n        pass\n")
    feats = rvs.hint_features(rvs.Source("x", "0", {"vllm/engine/arg_utils.py": old}))
    assert not (feats.literal_metavar or feats.pep604 or feats.sets or feats.dict_subclass)
    assert feats.human_ints == {"max_model_len", "max_num_batched_tokens"}


def test_literal_with_str_uses_metavar_only_when_the_release_does():
    syms = rvs.Symbols(release())
    hints = rvs.Hints(syms, rvs.HintFeatures()).of(
        "vllm/config/cache.py", ast.parse('Literal["a", "b"] | str', mode="eval").body)
    new = rvs.field_kwargs("x", hints, rvs.HintFeatures())
    old = rvs.field_kwargs("x", hints, rvs.HintFeatures(literal_metavar=False))
    assert new["metavar"] == ["a", "b"] and "choices" not in new
    assert old["choices"] == ["a", "b"]


def test_defaults_and_batching_tiers():
    rd = rvs.Reader(release())
    defaults, evidence = rvs.read_defaults(rd)
    assert defaults == {"gpu_memory_utilization": 0.92, "block_size": 16, "max_num_seqs": None,
                        "max_num_batched_tokens": None, "kv_cache_dtype": "auto",
                        "dtype": "auto"}
    assert evidence["defaults.gpu_memory_utilization"].startswith("vllm/config/cache.py:")
    assert "DEFAULT_BLOCK_SIZE" in evidence["defaults.block_size"]
    tiers, _where = rvs.read_batching_defaults(rd)
    assert [(t["min_device_gib"], t["max_num_batched_tokens"], t["max_num_seqs"])
            for t in tiers] == [(160, 16384, 1024), (70, 8192, 1024), (0, 2048, 256)]


def test_block_size_from_rocm_platform_when_no_class_default():
    cache = CONFIG_CACHE.replace("    DEFAULT_BLOCK_SIZE: ClassVar[int] = 16\n", "")
    rocm = ('class RocmPlatform(Platform):\n'
            '    @classmethod\n'
            '    def check_and_update_config(cls, vllm_config):\n'
            '        cache_config = vllm_config.cache_config\n'
            '        if cache_config and cache_config.block_size is None:\n'
            '            cache_config.block_size = 32\n')
    rd = rvs.Reader(release(**{"vllm/config/cache.py": cache, "vllm/platforms/rocm.py": rocm}))
    defaults, evidence = rvs.read_defaults(rd)
    assert defaults["block_size"] == 32
    assert evidence["defaults.block_size"].startswith("vllm/platforms/rocm.py:6")


WORKER = '''
class Worker:
    def determine_available_memory(self):
        cudagraph_memory_estimate = 0
        if (
            {guard}
            and self.vllm_config.compilation_config.cudagraph_mode != CUDAGraphMode.NONE
        ):
            cudagraph_memory_estimate = self.model_runner.profile_cudagraph_memory()
        applied = (
            cudagraph_memory_estimate
            if envs.VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS
            else 0
        )
        return self.requested_memory - profile_result.non_kv_cache_memory - \\
            cudagraph_memory_estimate_applied
'''

ENVS = '''
environment_variables = {
    "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS": lambda: bool(
        int(os.getenv("VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS", "%s"))
    ),
}
'''


@pytest.mark.parametrize(("guard", "env", "expected"), [
    ("not current_platform.is_rocm()", "1", {"cuda": True, "rocm": False}),
    ("current_platform.is_cuda()", "1", {"cuda": True, "rocm": False}),
    ("current_platform.is_cuda_alike()", "1", {"cuda": True, "rocm": True}),
    ("current_platform.is_cuda_alike()", "0", {"cuda": False, "rocm": False}),
])
def test_graphs_in_budget(guard, env, expected):
    src = release(**{"vllm/v1/worker/gpu_worker.py": WORKER.replace("{guard}", guard),
                     "vllm/envs.py": ENVS % env})
    gate, evidence = rvs.graphs_in_budget(src)
    assert gate == expected
    assert evidence.startswith("vllm/v1/worker/gpu_worker.py:9 ")


def test_no_graph_profiling_means_not_in_budget():
    src = release(**{"vllm/v1/worker/gpu_worker.py": "class Worker:\n    pass\n"})
    assert rvs.graphs_in_budget(src)[0] == {"cuda": False, "rocm": False}


def test_encoder_only_detection():
    spec = ('class EncoderOnlyAttentionSpec(AttentionSpec):\n'
            '    def max_memory_usage_bytes(self, vllm_config):\n'
            '        # Encoder-only layers do not need KV cache\n'
            '        return 0\n')
    assert rvs.encoder_only_no_kv(release(**{"vllm/v1/kv_cache_interface.py": spec}))[0] is True
    runner = ('def get_kv_cache_spec(self):\n'
              '    for layer_name, attn_module in layers.items():\n'
              '        if attn_module.attn_type in (AttentionType.ENCODER,\n'
              '                                     AttentionType.ENCODER_ONLY):\n'
              '            continue\n')
    src = release(**{"vllm/v1/worker/gpu_model_runner.py": runner})
    assert rvs.encoder_only_no_kv(src) == (
        True, "vllm/v1/worker/gpu_model_runner.py:3 ENCODER_ONLY layers skipped (no KV spec)")
    assert rvs.encoder_only_no_kv(release())[0] is None


def test_messages_keep_placeholders_as_written():
    utils = '''
def request_memory(init_snapshot, cache_config):
    if init_snapshot.free_memory < requested_memory:
        raise ValueError(
            f"Free memory on device {init_snapshot.device_} "
            f"({format_gib(init_snapshot.free_memory)}/"
            f"{format_gib(init_snapshot.total_memory)} GiB) on startup "
            f"is less than desired GPU memory utilization "
            f"({gpu_memory_utilization:.2f}, {format_gib(requested_memory)} GiB)."
        )
'''
    planning = '''
def check_enough_kv_cache_memory(vllm_config, available_memory):
    if available_memory <= 0:
        raise ValueError("No available memory for the cache blocks. " + hint_text)
    if needed_memory > available_memory:
        raise ValueError(
            f"To serve at least one request with the model's max seq len "
            f"({max_model_len}), ({format_gib(needed_memory)} GiB KV cache is needed")
'''
    rd = rvs.Reader(release(**{"vllm/v1/worker/utils.py": utils,
                               "vllm/v1/core/kv_cache_planning.py": planning}))
    sem, evidence, msgs = rvs.read_semantics(rd)
    assert msgs["free_memory"] == (
        "Free memory on device {init_snapshot.device_} ({format_gib(init_snapshot.free_memory)}/"
        "{format_gib(init_snapshot.total_memory)} GiB) on startup is less than desired GPU "
        "memory utilization ({gpu_memory_utilization:.2f}, {format_gib(requested_memory)} GiB).")
    assert sem["free_memory_check"] is True
    assert evidence["messages.free_memory"] == "vllm/v1/worker/utils.py:4"
    assert msgs["max_seq_len"].startswith("To serve at least one request with the model's max "
                                          "seq len ({max_model_len}), (")
    assert msgs["no_cache_memory"] == "No available memory for the cache blocks. {hint_text}"
    assert sem["scheduler_checks"] == [
        "max_num_batched_tokens < max_model_len and (not enable_chunked_prefill)",
        "max_num_batched_tokens < max_num_seqs"]


def test_check_mode_skips_without_cached_sdist(tmp_path, capsys):
    code = rvs.main(["--check", "--versions", "0.33.0", "--cache", str(tmp_path),
                     "--out", str(tmp_path / "out")])
    assert code == 0
    assert "skipped" in capsys.readouterr().out


# ----------------------------------------------------------------------------- committed data

FILES = sorted(DATA.glob("*.json"))


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _load(version: str) -> dict:
    return json.loads((DATA / f"{version}.json").read_text())


def test_one_file_per_default_release():
    assert {f.stem for f in FILES} == set(rvs.DEFAULT_VERSIONS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_data_file_shape_and_determinism(path):
    text = path.read_text()
    data = json.loads(text)
    assert rvs.render(data) == text  # sorted keys, indent 1, trailing newline
    assert data["version"] == path.stem
    assert data["source"]["file"] == f"vllm-{path.stem}.tar.gz"
    assert len(data["source"]["sha256"]) == 64
    assert set(data) == {"version", "source", "serve_flags", "defaults", "batching_defaults",
                         "semantics", "messages", "rocm", "evidence"}
    flags = data["serve_flags"]
    assert flags["--max-model-len"]["type"] == "human_int"
    assert flags["--gpu-memory-utilization"]["type"] == "float"
    assert flags["--tensor-parallel-size"]["aliases"] == ["-tp"]
    assert flags["--enforce-eager"]["arity"] == "bool"
    assert flags["--served-model-name"]["arity"] == "many"
    assert flags["--compilation-config"]["arity"] == "json"
    assert "-q" in flags["--quantization"]["aliases"]
    assert all(e["arity"] in {"bool", "value", "many", "json"} for e in flags.values())
    for key in ("gpu_memory_utilization", "block_size", "max_num_seqs",
                "max_num_batched_tokens", "kv_cache_dtype", "dtype"):
        assert key in data["defaults"]
        assert f"defaults.{key}" in data["evidence"]
    for key in ("graphs_in_budget", "kv_sized_after_graphs", "encoder_only_no_kv",
                "free_memory_check", "scheduler_checks"):
        assert f"semantics.{key}" in data["evidence"]
    assert "max_num_batched_tokens < max_num_seqs" in data["semantics"]["scheduler_checks"]
    assert "Free memory on device" in data["messages"]["free_memory"]
    assert "max seq len" in data["messages"]["max_seq_len"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_known_version_history(path):
    version, data = _key(path.stem), json.loads(path.read_text())
    util = data["defaults"]["gpu_memory_utilization"]
    assert util == (0.92 if version >= (0, 20) else 0.9)
    tiers = [t["min_device_gib"] for t in data["batching_defaults"]]
    assert tiers == ([160, 70, 0] if version >= (0, 28) else [70, 0])
    graphs = data["semantics"]["graphs_in_budget"]
    assert graphs["rocm"] is (version >= (0, 26))
    assert graphs["cuda"] is (version >= (0, 20))
    # 0.13-0.17 leave the block size to the platform (None: not in the config class)
    assert data["defaults"]["block_size"] in ((64,) if version >= (0, 34) else (16, None))
    assert data["semantics"]["kv_sized_after_graphs"] is (version >= (0, 34))
    assert data["semantics"]["encoder_only_no_kv"] is True
    # MI300X (191.98 GiB) falls in the largest tier where it exists
    server = data["batching_defaults"][0]
    assert server["max_num_batched_tokens"] == (16384 if version >= (0, 28) else 8192)


def test_rocm_facts_from_the_dockerfile_and_the_installation_page():
    docker = "ARG BASE_IMAGE=rocm/dev-ubuntu-22.04:7.2.1-complete\nFROM x\n"
    page = ("vLLM supports AMD GPUs with ROCm 6.3 or above. Pre-built wheels are available for "
            "ROCm 7.0 and ROCm 7.2.1.\n\n| `rocm700` | 3.12 | 7.0 | >= 2.35 | `0.14.0` to "
            "`0.18.0` |\n")
    src = rvs.Source("vllm-0.22.1.tar.gz", "0" * 64, {rvs.ROCM_FILES[0]: docker,
                                                       rvs.ROCM_FILES[1]: page})
    facts, evidence = rvs.read_rocm(src)
    assert facts == {"image_rocm": "7.2.1", "wheel_variant": "rocm721", "wheel_rocm": "7.2.1",
                     "host_rocm_min": "6.3"}
    assert evidence["rocm.image_rocm"].startswith("docker/Dockerfile.rocm_base:1 ")
    page += "| `rocm100` | 3.12 | 10.0 | >= 2.35 | Nightly releases (default) |\n"
    src.texts[rvs.ROCM_FILES[1]] = page
    assert rvs.read_rocm(src)[0]["wheel_variant"] == "rocm100"
    assert rvs.read_rocm(rvs.Source("w.whl", "0" * 64, {}))[0]["image_rocm"] is None
