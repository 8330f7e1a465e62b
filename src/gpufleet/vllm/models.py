"""Model facts: architecture numbers from a config.json (local folder, HF cache or bundled catalog).

Turns a Hugging Face `config.json` into what the memory stage needs: KV-cache bytes per token
(vLLM's page-size formula), parameter counts per tensor kind, and weight bytes as served.

Standard library only: this module is also copied into a test double that runs on bare hosts,
which is also why the per-architecture parameter counters live in this one file. Counts are exact
for Llama-style decoders and within ~1 % elsewhere (small biases, q/k norms and vision projectors
are approximated).
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import re
import stat
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from gpufleet.errors import InputError

DTYPE_BYTES: dict[str, float] = {
    "float32": 4, "fp32": 4, "float": 4,
    "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2,
    "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1, "float8_e4m3fn": 1, "float8_e5m2": 1,
    "int8": 1, "int4": 0.5, "fp4": 0.5, "mxfp4": 0.5,
}  # fmt: skip
SERVING_DTYPES = ("auto", "float32", "float", "bfloat16", "float16", "half")
KV_CACHE_DTYPES = ("auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc")
ONLINE_QUANTIZATION = ("fp8",)  # vLLM quantizes a 16-bit checkpoint on the fly only to fp8
VOCAB_PADDING = 64  # vLLM pads vocab-parallel embedding / lm head rows to a multiple of this
_GEMMA = ("gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n", "gemma3n_text", "gemma4",
          "gemma4_text")
_TIED_BY_DEFAULT = (*_GEMMA, "opt", "whisper")  # PretrainedConfig default when the key is absent
_SLIDING_PATTERN_DEFAULT = {"gemma2": 2, "gemma3": 6, "gemma3_text": 6}
_ENCODERS = ("bert", "roberta", "xlm-roberta", "xlm_roberta")
_FP4_WITH_SCALE = 0.5 + 1 / 32  # 4-bit values + one 8-bit scale per 32 (mxfp4 / DeepSeek fp4)
WHISPER_FRAMES = 1500  # 30 s of audio after the conv front end (max_source_positions)
_CAVEATS = {
    "deepseek_v4": "DeepSeek-V4 compresses KV (compress_ratios) beside a sliding window; "
    "kv_bytes_per_token is the uncompressed upper bound",
    "gemma4": "attention_k_eq_v full layers are counted with separate K and V (upper bound)",
}

# Sane upper bounds for config.json numbers: far above any real model, low enough that the
# per-layer loops and the arithmetic stay instant (a num_hidden_layers of 10**12 would hang).
MAX_LAYERS = 10_000
MAX_HEADS = 100_000
MAX_WIDTH = 1_000_000  # hidden sizes, head dims, low ranks
MAX_FFN = 10_000_000  # intermediate / ffn sizes
MAX_VOCAB = 10_000_000
MAX_EXPERTS = 100_000
MAX_POSITIONS = 1 << 31  # positions, sliding windows (tokens)
MAX_CHECKPOINT_BYTES = 1 << 50  # 1 PiB of weights
MAX_JSON_BYTES = 10 << 20  # a config.json is a few KiB, an index a few MiB
MAX_SAFETENSORS_HEADER = 100 << 20  # the safetensors format's own limit
_MAY_BE_ZERO = {
    "index_n_heads", "index_head_dim", "max_window_layers", "first_k_dense_replace",
    "n_shared_experts", "shared_expert_intermediate_size", "q_lora_rank", "type_vocab_size",
    "sliding_window_pattern", "n_routed_experts", "num_experts", "num_local_experts",
    "group_size", "num_kv_shared_layers", "hidden_size_per_layer_input",
}  # fmt: skip


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- model ids and revisions

MODEL_ID_PART_MAX = 96
_ID_PART = re.compile(r"[A-Za-z0-9._-]+")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_REF_FORBIDDEN = set("~^:?*[\\")
REVISION_MAX = 255


def check_model_id(model_id: str) -> str:
    """A Hugging Face model id (`org/name` or `name`), checked before it is used in a path.

    Each part has 1-96 of [A-Za-z0-9._-], does not start or end with '-' or '.', and the id has
    no '..' or '--' (the hub's own rules; '--' would also be ambiguous in the cache's
    models--org--name folders). Raises ValueError saying what is wrong.
    """
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"model id {_shown(model_id)} must be a non-empty string like org/name")
    if model_id.startswith(("/", ".", "~")) or ".." in model_id or "\\" in model_id:
        raise ValueError(
            f"model id {_shown(model_id)} looks like a file path, not a Hugging Face model id"
        )
    parts = model_id.split("/")
    if len(parts) > 2:
        raise ValueError(f"model id {_shown(model_id)} has more than one '/': use org/name")
    for part in parts:
        if not part or not _ID_PART.fullmatch(part):
            raise ValueError(
                f"model id {_shown(model_id)} is not org/name of letters, digits, '.', '_', '-'"
            )
        if len(part) > MODEL_ID_PART_MAX:
            raise ValueError(
                f"model id {_shown(model_id)}: each part has at most {MODEL_ID_PART_MAX} characters"
            )
        if part[0] in "-." or part[-1] in "-.":
            raise ValueError(
                f"model id {_shown(model_id)}: a part must not start or end with '-' or '.'"
            )
    if ".." in model_id or "--" in model_id:
        raise ValueError(f"model id {_shown(model_id)} must not contain '..' or '--'")
    return model_id


def check_revision(revision: str) -> str:
    """A model revision: a 40-hex commit, or a branch or tag name (git's ref-name rules: no
    '..', no control characters, spaces or ~^:?*[\\, no leading '-', no empty or dot-led
    '/'-separated parts, no '.lock' ending). Raises ValueError saying what is wrong."""
    if not isinstance(revision, str) or not revision:
        raise ValueError(f"revision {_shown(revision)} must be a non-empty string")
    if _COMMIT.fullmatch(revision):
        return revision
    if len(revision) > REVISION_MAX:
        raise ValueError(f"revision {_shown(revision)} is longer than {REVISION_MAX} characters")
    bad = [ch for ch in revision if not 0x21 <= ord(ch) <= 0x7E or ch in _REF_FORBIDDEN]
    if bad:
        raise ValueError(
            f"revision {_shown(revision)} contains {_shown(bad[0])}: use a commit hash (40 hex "
            "digits) or a branch or tag name without spaces, control characters or ~^:?*[\\"
        )
    if ".." in revision or "@{" in revision or revision == "@" or revision.startswith("-"):
        raise ValueError(
            f"revision {_shown(revision)} must not contain '..' or '@{{', nor start with '-'"
        )
    parts = revision.split("/")
    if any(not p or p.startswith(".") or p.endswith(".lock") for p in parts) or revision[-1] == ".":
        raise ValueError(
            f"revision {_shown(revision)}: '/'-separated parts must be non-empty, not start with "
            "'.', not end with '.lock', and the name must not end with '.'"
        )
    return revision


def kv_dtype_bytes(kv_cache_dtype: str | None, model_dtype_bytes: int) -> int:
    """Bytes per KV element for vLLM's --kv-cache-dtype (auto = the model dtype)."""
    if kv_cache_dtype in (None, "auto"):
        return model_dtype_bytes
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise InputError(
            f"unknown kv_cache_dtype '{kv_cache_dtype}'",
            hint=f"use one of: {', '.join(KV_CACHE_DTYPES)}",
        )
    return int(DTYPE_BYTES[kv_cache_dtype])


@dataclass(frozen=True)
class ParamSplit:
    """Parameters by how vLLM stores and shards them."""

    embedding: int = 0  # token embedding + untied lm head: vocab-parallel, 16-bit when quantized
    linear: int = 0  # attention, dense MLP, shared experts, vision tower: split 1/tp
    experts: int = 0  # routed MoE experts: split 1/tp (mxfp4 quantizes only these)
    small: int = 0  # norms, biases, routers, position tables: replicated, 16-bit
    # Gemma-3n / Gemma-4 "E" per-layer input embeddings (embed_tokens_per_layer, vocab x layers x
    # hidden_size_per_layer_input): a vocab-parallel table like `embedding` (16-bit, 1/tp), but
    # its own rows (vocab_size_per_layer_input), so it is kept apart from the token table
    layer_embedding: int = 0

    @property
    def total(self) -> int:
        return self.embedding + self.linear + self.experts + self.small + self.layer_embedding


@dataclass(frozen=True)
class ModelFacts:
    """Architecture facts of one model; KV numbers follow vLLM's AttentionSpec.page_size_bytes."""

    model_id: str
    architecture: str
    num_layers: int  # attention layers that hold KV (whisper: decoder layers)
    num_attention_heads: int
    num_kv_heads: int  # MLA: 1 (one latent vector per token, replicated on every rank)
    head_dim: int  # K head size (MLA: kv_lora_rank + qk_rope_head_dim)
    head_dim_v: int  # V head size (MLA: 0)
    hidden_size: int
    vocab_size: int
    # vLLM's derived maximum model length (`_get_and_verify_max_len`): the smallest of the
    # position keys, times the rope-scaling factor (`derived_max_model_len`); a max_model_len
    # above it is refused at config time. None: no key (vLLM then assumes 2048)
    max_position_embeddings: int | None
    torch_dtype: str | None
    is_mla: bool
    sliding_window: int | None
    num_sliding_layers: int
    param_count: int
    checkpoint_bytes: int | None
    checkpoint_quantization: str | None
    is_pooling: bool
    sources: tuple[str, ...]
    # Optional extras (defaults keep hand-built facts in other tests valid).
    sliding_num_kv_heads: int | None = None  # when sliding layers differ in shape (Gemma-4)
    sliding_head_dim: int | None = None
    tied_embeddings: bool = False
    params: ParamSplit | None = None
    quant_bytes_per_param: tuple[float, float] | None = None  # (linear, experts) of the checkpoint
    kv_caveat: str | None = None  # why the KV numbers are only a bound for this architecture
    encoder_tokens: int | None = None  # encoder-decoder: cross-attention KV per request (frames)
    # vLLM's default max_model_len when it differs from the derived limit above (longrope:
    # original_max_position_embeddings); None: the limit (max_position_embeddings) is the default
    default_max_model_len: int | None = None
    # (MoE layers, experts, hidden, intermediate) of routed experts, for the kernel padding of
    # mxfp4 experts (`mxfp4_padding_bytes`); None for dense models
    moe_shape: tuple[int, int, int, int] | None = None
    per_layer_vocab: int | None = None  # rows of the per-layer embedding table (vocab padding)

    def kv_bytes_per_token_layer(self, tp: int, kv_bytes: int) -> int:
        """KV bytes of one token in one full-attention layer on one TP rank."""
        _check_parallel(tp, 1)
        if self.is_pooling:
            return 0
        if self.is_mla:  # the latent is replicated, not sharded (max_tp_shards=1)
            return self.head_dim * kv_bytes
        return max(1, self.num_kv_heads // tp) * (self.head_dim + self.head_dim_v) * kv_bytes

    def kv_bytes_per_token(
        self, tp: int = 1, kv_cache_dtype: str | None = "auto", dtype: str | None = "auto"
    ) -> int:
        """KV bytes of one token on one TP rank, summed over all attention layers (pp=1)."""
        kv_bytes = kv_dtype_bytes(kv_cache_dtype, self.dtype_bytes(dtype))
        full = self.num_layers - self.num_sliding_layers
        return full * self.kv_bytes_per_token_layer(tp, kv_bytes) + (
            self.num_sliding_layers * self.kv_bytes_per_token_sliding_layer(tp, kv_bytes)
        )

    def kv_bytes_per_token_sliding_layer(self, tp: int, kv_bytes: int) -> int:
        """Like kv_bytes_per_token_layer, for a sliding-window layer (Gemma-4 shapes differ)."""
        if self.sliding_num_kv_heads is None or self.sliding_head_dim is None:
            return self.kv_bytes_per_token_layer(tp, kv_bytes)
        return max(1, self.sliding_num_kv_heads // tp) * 2 * self.sliding_head_dim * kv_bytes

    def dtype_bytes(self, dtype: str | None = "auto") -> int:
        """Bytes per weight/activation element for vLLM's --dtype."""
        if dtype in (None, "auto"):
            # vLLM's auto dtype is always 16-bit on GPUs: bf16/fp16 checkpoints as stored,
            # float32 checkpoints (embedders, rerankers, some fine-tunes) downcast.
            return 2
        if dtype not in SERVING_DTYPES:
            raise InputError(
                f"unknown dtype '{dtype}' for {self.model_id}",
                hint=f"use one of: {', '.join(SERVING_DTYPES)}",
            )
        return int(DTYPE_BYTES[dtype])

    def weight_bytes(self, dtype: str | None = "auto", quantization: str | None = None) -> int:
        """Whole-model weight bytes as vLLM holds them in GPU memory."""
        per_param = self._bytes_per_param(dtype, quantization)
        if self.checkpoint_bytes is None or self._quantized_online(quantization):
            return math.ceil(_dot(self._split(), per_param))
        if self.checkpoint_quantization:
            return self.checkpoint_bytes
        # unquantized checkpoint: same tensors, maybe another element size (fp32 -> bf16)
        stored = DTYPE_BYTES.get(self.torch_dtype or "bfloat16", 2)
        return round(self.checkpoint_bytes * self.dtype_bytes(dtype) / stored)

    def weight_bytes_per_rank(
        self, tp: int, pp: int, dtype: str | None = "auto", quantization: str | None = None,
        platform: str = "rocm", vllm_version: str | None = None,
    ) -> int:  # fmt: skip
        """Weight bytes on the fullest rank of a tp x pp group.

        Approximation: linears and experts split 1/tp; embedding and lm head are vocab-parallel
        (rows padded to 64, then 1/tp); norms and routers are replicated; pp gives each stage
        ceil(layers/pp) layers plus one vocab table (the vision tower is spread like layers);
        replicated KV-head projections when tp > kv heads are ignored (they are small).
        mxfp4 experts are padded to the MoE kernel's alignment (`mxfp4_padding_bytes`), which
        depends on the platform and the vLLM release (None: the newest rule).
        """
        _check_parallel(tp, pp)
        per_param = self._bytes_per_param(dtype, quantization)
        total = self.weight_bytes(dtype, quantization)
        rank_share = _dot(self._rank_split(tp, pp), per_param) / _dot(self._split(), per_param)
        padding = self.mxfp4_padding_bytes(tp, pp, platform, vllm_version)
        return math.ceil(total * rank_share) + padding

    def mxfp4_padding_bytes(
        self, tp: int, pp: int = 1, platform: str = "rocm", vllm_version: str | None = None
    ) -> int:
        """Extra bytes per rank from vLLM padding mxfp4 expert weights for its MoE kernels.

        vLLM allocates w13 (2 x intermediate x hidden) and w2 (hidden x intermediate) of every
        expert with hidden rounded up and intermediate_size // tp rounded up
        (`mxfp4_round_up_hidden_size_and_intermediate_size`, `mxfp4_alignment`); the checkpoint
        holds the unpadded shapes. 0 for anything but an mxfp4 checkpoint with known MoE shape.
        """
        _check_parallel(tp, pp)
        if self.checkpoint_quantization != "mxfp4" or self.moe_shape is None:
            return 0
        layers, experts, hidden, inter = self.moe_shape
        align_h, align_i = mxfp4_alignment(platform, vllm_version)
        part = inter // tp
        padded = _round_up(hidden, align_h) * _round_up(part, align_i)
        layers_rank = math.ceil(layers / pp)
        extra = layers_rank * experts * 3 * (padded - hidden * part)
        return math.ceil(extra * _FP4_WITH_SCALE)

    def _split(self) -> ParamSplit:
        return self.params or ParamSplit(linear=self.param_count)

    def _rank_split(self, tp: int, pp: int) -> ParamSplit:
        split = self._split()
        layer_share = math.ceil(max(self.num_layers, 1) / pp) / max(self.num_layers, 1)
        # The split says how many vocab tables the model has: two (input and output), one
        # when tied, one for encoders (no LM head: embedders and rerankers pool instead). With
        # pp > 1 the first stage holds the input table, the last the output one.
        held = round(split.embedding / max(self.vocab_size * self.hidden_size, 1))
        tables = 1 if pp > 1 else max(held, 1)
        rows = math.ceil(math.ceil(self.vocab_size / VOCAB_PADDING) * VOCAB_PADDING / tp)
        per_layer = 0  # the first stage holds the whole per-layer table (fullest rank)
        if split.layer_embedding:
            plv = self.per_layer_vocab or self.vocab_size
            ple_rows = math.ceil(math.ceil(plv / VOCAB_PADDING) * VOCAB_PADDING / tp)
            per_layer = ple_rows * (split.layer_embedding // plv)
        return ParamSplit(
            embedding=tables * rows * self.hidden_size if split.embedding else 0,
            linear=math.ceil(split.linear * layer_share / tp),
            experts=math.ceil(split.experts * layer_share / tp),
            small=split.small,
            layer_embedding=per_layer,
        )

    def _quantized_online(self, quantization: str | None) -> bool:
        """True when vLLM must quantize a 16-bit checkpoint while loading it."""
        # awq_marlin / gptq_marlin are kernels for awq / gptq checkpoints, not other formats
        method = quantization.removesuffix("_marlin") if quantization else None
        if method in (None, "none", self.checkpoint_quantization):
            return False
        if self.checkpoint_quantization:
            raise InputError(
                f"{self.model_id} is already quantized ({self.checkpoint_quantization}); "
                f"quantization '{quantization}' conflicts",
                hint="drop the quantization setting or set it to the checkpoint's method",
            )
        if method not in ONLINE_QUANTIZATION:
            raise InputError(
                f"vLLM cannot quantize {self.model_id} to '{quantization}' while loading",
                hint="use quantization: fp8, or pick a checkpoint that is already quantized",
            )
        return True

    def _bytes_per_param(
        self, dtype: str | None, quantization: str | None
    ) -> tuple[float, float, float, float]:
        """Bytes per parameter for (embedding, linear, experts, small)."""
        act = self.dtype_bytes(dtype)
        if self._quantized_online(quantization):
            return act, 1, 1, act  # fp8 linears; embeddings and norms stay 16-bit
        if not self.checkpoint_quantization:
            return act, act, act, act
        if self.quant_bytes_per_param is None:
            raise InputError(
                f"{self.model_id}: cannot size '{self.checkpoint_quantization}' weights "
                "without the checkpoint size",
                hint="point --config at the model folder with its model.safetensors.index.json",
            )
        linear, experts = self.quant_bytes_per_param
        return 2, linear, experts, 2  # quantizers keep embeddings, lm head and norms 16-bit


def _dot(split: ParamSplit, per_param: tuple[float, float, float, float]) -> float:
    embedding, linear, experts, small = per_param  # no zip(strict=): the double runs on 3.9
    return (
        (split.embedding + split.layer_embedding) * embedding + split.linear * linear
        + split.experts * experts + split.small * small
    )  # fmt: skip


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _version_key(version: str | None) -> tuple[int, ...]:
    """(major, minor, patch) of '0.10.1.1', 'v0.19.0', '0.11.0rc1'; newest for None."""
    if version is None:
        return (1 << 30,)
    parts = re.findall(r"\d+", version.split("+")[0])[:3]
    return tuple(int(p) for p in parts) if parts else (1 << 30,)


# (first release, hidden alignment, intermediate-per-partition alignment) of vLLM's mxfp4 MoE
# padding on ROCm for MI300X (gfx942) and gpt-oss's swigluoai activation, read from each
# release's quantization/mxfp4.py (<= 0.18) or fused_moe/oracle/mxfp4.py (>= 0.19):
#   0.10.1.1 `elif current_platform.is_rocm()`: intermediate round_up 128, hidden kept
#   0.10.2 both 128; 0.11.0 both 256; 0.11.2-0.18.1 both get_padding_alignment() = 128 unless
#   gfx950 (MI355X: 256); 0.19.0-0.34.0 both 256 (0.28+ keep 256 unless an AITER/Triton path
#   runs a SiLU/SiTU model, which gpt-oss is not). 0.11.1 was not read (taken as 0.11.0).
MXFP4_ROCM_ALIGNMENT: tuple[tuple[str, int, int], ...] = (
    ("0.0.0", 1, 128), ("0.10.2", 128, 128), ("0.11.0", 256, 256), ("0.11.2", 128, 128),
    ("0.19.0", 256, 256),
)  # fmt: skip
# CUDA (A100 / H100): the Marlin backend rounds intermediate to 128 and hidden to 256 (source,
# all releases read); the Triton backend on Hopper pads in triton_kernels' swizzle, and the
# public logs fit the same rule (gpt-oss-20b 13.64 GiB TP1 / 7.01 TP2 at 0.19.0, 120b 64.38-65.97).
# FlashInfer/TRT-LLM backends (Blackwell) align both to 128 or 256: not modelled.
MXFP4_CUDA_ALIGNMENT = (256, 128)


def mxfp4_alignment(platform: str = "rocm", vllm_version: str | None = None) -> tuple[int, int]:
    """(hidden, intermediate-per-partition) multiples vLLM pads mxfp4 experts to."""
    if platform != "rocm":
        return MXFP4_CUDA_ALIGNMENT
    key = _version_key(vllm_version)
    hidden, inter = MXFP4_ROCM_ALIGNMENT[0][1:]
    for first, h, i in MXFP4_ROCM_ALIGNMENT:
        if key >= _version_key(first):
            hidden, inter = h, i
    return hidden, inter


def _check_parallel(tp: int, pp: int) -> None:
    if tp < 1 or pp < 1:
        raise InputError(f"tensor/pipeline parallel sizes must be >= 1 (got tp={tp}, pp={pp})")


# ---------------------------------------------------------------- reading a config


def _limit(key: str) -> int:
    """The largest sane value of a config.json integer, by what the key counts."""
    if key.endswith("layers") or key in ("depth", "first_k_dense_replace"):
        return MAX_LAYERS
    if "intermediate" in key or "ffn" in key:
        return MAX_FFN
    if "heads" in key or key == "o_groups":
        return MAX_HEADS
    if "vocab" in key:
        return MAX_VOCAB
    if "experts" in key:
        return MAX_EXPERTS
    if "position" in key or key == "sliding_window":
        return MAX_POSITIONS
    return MAX_WIDTH


_Int = int  # `int` is also a method name of _Config


class _Config:
    """A config.json (text part merged up) with typed getters that fail with file and key."""

    def __init__(self, raw: dict[str, Any], where: str, prefix: str = ""):
        self.raw = raw
        self.where = where
        self.prefix = prefix  # how a nested object's keys are named in errors
        self.text = _text_config(raw)

    def get(self, key: str, default: Any = None) -> Any:
        value = self.text.get(key)
        return default if value is None else value

    def int(self, key: str, default: int | None = None) -> int:
        """A positive integer (0 too for the keys that may be 0) up to a sane bound."""
        value = self.get(key, default)
        if value is None:
            raise InputError(
                f"missing key '{self.prefix}{key}'",
                where=self.where,
                hint="copy the model's full config.json from its Hugging Face repo",
            )
        return self._checked(key, value)

    def opt_int(self, key: str, default: _Int | None = None) -> _Int | None:
        """Like int(), but None when the key is absent (or null) and there is no default."""
        value = self.get(key, default)
        return None if value is None else self._checked(key, value)

    def _checked(self, key: str, value: Any) -> _Int:
        name = f"{self.prefix}{key}"
        if not isinstance(value, int) or isinstance(value, bool):
            raise InputError(
                f"key '{name}' must be an integer, not {_shown(value)}",
                where=self.where,
                hint="copy the model's full config.json from its Hugging Face repo",
            )
        low, high = (0 if key in _MAY_BE_ZERO else 1), _limit(key)
        if not low <= value <= high:
            raise InputError(
                f"key '{name}' is {_shown(value)}: it must be {low} to {high:,}",
                where=self.where,
                hint="check the value against the model's config.json on Hugging Face",
            )
        return value

    def opt_str(self, *keys: str) -> str | None:
        """The first of `keys` that is set, as a string; None when none is."""
        for key in keys:
            value = self.get(key)
            if value is not None:
                if not isinstance(value, str):
                    raise InputError(
                        f"key '{self.prefix}{key}' must be a string, not {_shown(value)}",
                        where=self.where,
                    )
                return value
        return None

    def layer_types(self, layers: _Int) -> list[Any] | None:
        """`layer_types` (one entry per layer) cut to the layer count; None when absent."""
        types = self.get("layer_types")
        if types is None:
            return None
        if not isinstance(types, list) or len(types) < layers:
            raise InputError(
                f"key '{self.prefix}layer_types' must be a list with one entry per layer "
                f"({layers}), not {_shown(types)}",
                where=self.where,
            )
        return types[:layers]

    @property
    def model_type(self) -> str:
        return str(self.get("model_type", ""))


def _text_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Multimodal configs nest the language model; its keys win over the wrapper's."""
    merged = dict(raw)
    for outer in ("thinker_config", "text_config"):
        inner = merged.get(outer)
        if isinstance(inner, dict):
            merged = {**merged, **inner}
    return merged


def _family(c: _Config) -> str:
    """Which parameter counter and KV layout apply (by model_type, MLA by its keys)."""
    named = {"whisper": "whisper", "opt": "opt", "phi": "phi", "deepseek_v4": "deepseek_v4"}
    if c.model_type in _ENCODERS:
        return "encoder"
    return named.get(c.model_type) or ("mla" if c.get("kv_lora_rank") else "decoder")


def _tied(c: _Config) -> bool:
    return bool(c.get("tie_word_embeddings", c.model_type in _TIED_BY_DEFAULT))


def _sliding_layers(c: _Config, layers: int) -> int:
    """How many layers attend through the sliding window."""
    if _sliding_window(c) is None or c.get("use_sliding_window") is False:
        return 0
    types = c.layer_types(layers)
    if types is not None:
        return sum(1 for t in types if t == "sliding_attention")
    pattern = c.opt_int("sliding_window_pattern", _SLIDING_PATTERN_DEFAULT.get(c.model_type))
    if pattern:  # every pattern-th layer is global
        return layers - layers // pattern
    if c.get("use_sliding_window") and c.get("max_window_layers") is not None:
        return max(0, layers - c.int("max_window_layers"))  # Qwen2: layers from there on
    return layers  # Mistral-7B-v0.1 style: one window on every layer


def _sliding_window(c: _Config) -> int | None:
    """The window in tokens; None when absent (false or 0 also mean no window)."""
    if c.get("sliding_window") in (False, 0):
        return None
    return c.opt_int("sliding_window")


# ---------------------------------------------------------------- counting parameters


def _gated_mlp(hidden: int, inter: int) -> int:
    return 3 * hidden * inter  # gate, up, down


def _gqa_attention(c: _Config, layer: int) -> tuple[int, int]:
    """(linear, small) params of one q/k/v/o attention layer; Gemma-4 full layers differ."""
    h, heads = c.int("hidden_size"), c.int("num_attention_heads")
    kv, hd = c.int("num_key_value_heads", heads), c.int("head_dim", h // heads)
    v_heads = kv
    types = c.layer_types(c.int("num_hidden_layers")) if c.get("global_head_dim") else None
    if types is not None and types[layer] == "full_attention":
        hd, kv = c.int("global_head_dim"), c.int("num_global_key_value_heads", kv)
        # attention_k_eq_v: the checkpoint has no v_proj, but vLLM's QKVParallelLinear still
        # allocates the V slot and loads K into it (gemma4.py Gemma4Attention), so it counts
        v_heads = kv
    q, k, v = heads * hd, kv * hd, v_heads * hd
    bias = q + k + v if c.model_type.startswith("qwen2") else 0  # Qwen2 q/k/v carry biases
    return h * (q + k + v) + q * h, bias


def _mla_attention(c: _Config) -> tuple[int, int]:
    """(linear, small) params of one DeepSeek-V2/V3 multi-head latent attention layer."""
    h, heads, q_lora = c.int("hidden_size"), c.int("num_attention_heads"), c.opt_int("q_lora_rank")
    kv_lora, rope = c.int("kv_lora_rank"), c.int("qk_rope_head_dim")
    nope, v = c.int("qk_nope_head_dim"), c.int("v_head_dim")
    q = h * q_lora + q_lora * heads * (nope + rope) if q_lora else h * heads * (nope + rope)
    kv = h * (kv_lora + rope) + kv_lora * heads * (nope + v)
    return q + kv + heads * v * h, (q_lora or 0) + kv_lora


def _v4_attention(c: _Config) -> tuple[int, int]:
    """(linear, small) of one DeepSeek-V4 layer: low-rank q, one shared KV head, grouped o.

    Approximate: the compressor and indexer are counted as one q_lora -> index heads projection.
    """
    h, heads, hd = c.int("hidden_size"), c.int("num_attention_heads"), c.int("head_dim")
    q_lora, o_lora, groups = c.int("q_lora_rank"), c.int("o_lora_rank"), c.int("o_groups")
    index = q_lora * c.int("index_n_heads", 0) * c.int("index_head_dim", 0)
    linear = h * q_lora + q_lora * heads * hd + h * hd + heads * hd * o_lora + groups * o_lora * h
    return linear + index, q_lora + hd


def _mlp(c: _Config, layer: int) -> tuple[int, int, int]:
    """(linear, experts, small) params of one decoder MLP, dense or mixture-of-experts."""
    h = c.int("hidden_size")
    experts = (
        c.opt_int("n_routed_experts") or c.opt_int("num_experts") or c.opt_int("num_local_experts")
    )
    dense = None if isinstance(c.get("intermediate_size"), list) else c.opt_int("intermediate_size")
    moe_layer = experts and layer >= c.int("first_k_dense_replace", 0)
    only = c.get("mlp_only_layers", [])
    if not isinstance(only, list):
        raise InputError(f"key 'mlp_only_layers' must be a list, not {_shown(only)}",
                         where=c.where)  # fmt: skip
    if not experts or not moe_layer or layer in only:
        return _gated_mlp(h, _layer_intermediate(c, layer)), 0, 0
    inter = c.int("moe_intermediate_size", dense)
    shared = c.int("n_shared_experts", 0) * _gated_mlp(h, inter)
    shared += _gated_mlp(h, c.int("shared_expert_intermediate_size", 0))
    if c.get("enable_moe_block"):  # Gemma-4 runs a dense MLP beside the experts
        shared += _gated_mlp(h, c.int("intermediate_size"))
    return shared, experts * _gated_mlp(h, inter), h * experts  # router is replicated


def _layer_intermediate(c: _Config, layer: int) -> int:
    """The dense MLP width of one layer: Gemma-3n lists one per layer; Gemma-4 E2B doubles it
    on the KV-shared layers with use_double_wide_mlp (gemma4.py Gemma4DecoderLayer)."""
    sizes = c.get("intermediate_size")
    if isinstance(sizes, list):
        if len(sizes) <= layer:
            raise InputError(
                f"key 'intermediate_size' lists {len(sizes)} sizes for "
                f"{c.int('num_hidden_layers')} layers",
                where=c.where,
            )
        return c._checked("intermediate_size", sizes[layer])
    inter = c.int("intermediate_size")
    shared = c.int("num_kv_shared_layers", 0)
    first_shared = c.int("num_hidden_layers") - shared
    if c.get("use_double_wide_mlp") and shared and layer >= first_shared > 0:
        return 2 * inter
    return inter


def _per_layer_inputs(c: _Config) -> tuple[int, int, int]:
    """(table, linear, small) params of Gemma-3n / Gemma-4 "E" per-layer input embeddings
    (vLLM gemma3n.py / gemma4.py): the table embed_tokens_per_layer (vocab_size_per_layer_input
    x layers x hidden_size_per_layer_input, vocab-parallel), per_layer_model_projection (hidden
    -> layers x per-layer width, column-parallel) and its norm, and in every layer a replicated
    per_layer_input_gate (hidden -> width) and per_layer_projection (width -> hidden) with a
    norm. Replicated linears are counted as `small` (every rank holds them). 0 without PLE."""
    width = c.opt_int("hidden_size_per_layer_input")
    if not width:
        return 0, 0, 0
    h, layers = c.int("hidden_size"), c.int("num_hidden_layers")
    vocab = c.int("vocab_size_per_layer_input", c.int("vocab_size"))
    table = vocab * layers * width
    return table, h * layers * width, width + layers * (2 * h * width + h)


def _altup_laurel(c: _Config) -> tuple[int, int]:
    """(linear, small) of Gemma-3n's AltUp and LAuReL blocks (vLLM gemma3n.py): altup_projections
    and altup_unembed_projections ((n - 1) x hidden x hidden each, column-parallel), per layer a
    LAuReL low-rank pair (hidden x laurel_rank x 2) + norm, and the AltUp coefficient/router
    tensors (replicated). 0 for other models."""
    if not c.model_type.startswith("gemma3n"):
        return 0, 0
    h, layers = c.int("hidden_size"), c.int("num_hidden_layers")
    n, rank = c.int("altup_num_inputs", 4), c.int("laurel_rank", 64)
    linear = 2 * (n - 1) * h * h + layers * 2 * h * rank
    small = layers * (n * n + n * n * n + h * n + h + h + h)  # coefs, router + norm, scale, norm
    return linear, small


def _vision_tower(c: _Config) -> tuple[int, int]:
    """(linear, small) of a ViT encoder plus a projector into the text width; 0 if not given."""
    v = c.raw.get("vision_config")
    if not isinstance(v, dict):
        return 0, 0
    vc = _Config(v, c.where, "vision_config.")
    layers = vc.opt_int("num_hidden_layers") or vc.opt_int("depth")
    vh, vi = vc.opt_int("hidden_size"), vc.opt_int("intermediate_size")
    if not (layers and vh and vi):
        return 0, 0
    mlp = (3 if vc.model_type in ("pixtral", "qwen2_5_vl") else 2) * vh * vi
    patch = vc.int("num_channels", 3) * vc.int("patch_size", 14) ** 2 * vh
    return layers * (4 * vh * vh + mlp) + patch + vh * c.int("hidden_size"), layers * 4 * vh


def _decoder_split(c: _Config, family: str) -> ParamSplit:
    h, layers = c.int("hidden_size"), c.int("num_hidden_layers")
    norms = 4 if c.model_type in _GEMMA else 2  # Gemma adds pre/post feed-forward norms
    linear = experts = 0
    small = h  # final norm
    for layer in range(layers):
        attention = {"mla": _mla_attention, "deepseek_v4": _v4_attention}.get(family)
        a_linear, a_small = attention(c) if attention else _gqa_attention(c, layer)
        m_linear, m_experts, m_small = _mlp(c, layer)
        linear += a_linear + m_linear
        experts += m_experts
        small += a_small + m_small + norms * h
    v_linear, v_small = _vision_tower(c)
    ple_table, ple_linear, ple_small = _per_layer_inputs(c)
    a_linear, a_small = _altup_laurel(c)
    tables = 1 if _tied(c) else 2
    return ParamSplit(
        tables * c.int("vocab_size") * h, linear + v_linear + ple_linear + a_linear, experts,
        small + v_small + ple_small + a_small, ple_table,
    )  # fmt: skip


def _plain_decoder_split(c: _Config) -> ParamSplit:
    """OPT and Phi: fc1/fc2 MLP, biases everywhere, LayerNorm with bias."""
    h, layers, v = c.int("hidden_size"), c.int("num_hidden_layers"), c.int("vocab_size")
    inter = c.int("ffn_dim") if c.model_type == "opt" else c.int("intermediate_size")
    per_layer_small = 4 * h + inter + h + (4 * h if c.model_type == "opt" else 2 * h)
    small = layers * per_layer_small + 2 * h
    if c.model_type == "opt":  # learned positions with an offset of 2
        small += (c.int("max_position_embeddings") + 2) * h
    else:
        small += 0 if _tied(c) else v  # Phi's lm head has a bias
    tables = 1 if _tied(c) else 2
    return ParamSplit(tables * v * h, layers * (4 * h * h + 2 * h * inter), 0, small)


def _encoder_split(c: _Config) -> ParamSplit:
    """BERT / XLM-RoBERTa: embeddings, encoder layers, pooler or classifier dense."""
    h, layers, inter = c.int("hidden_size"), c.int("num_hidden_layers"), c.int("intermediate_size")
    types = c.int("type_vocab_size", 1 if "xlm" in c.model_type else 2)
    positions = (c.int("max_position_embeddings") + types) * h
    small = layers * (9 * h + inter) + positions + 3 * h
    linear = layers * (4 * h * h + 2 * h * inter) + h * h
    return ParamSplit(c.int("vocab_size") * h, linear, 0, small)


def _whisper_split(c: _Config) -> ParamSplit:
    """Whisper: conv front end + encoder, decoder with self and cross attention, tied head."""
    d, mels = c.int("d_model"), c.int("num_mel_bins")
    enc, dec = c.int("encoder_layers"), c.int("decoder_layers")
    enc_ffn, dec_ffn = c.int("encoder_ffn_dim"), c.int("decoder_ffn_dim")
    convs = 3 * mels * d + 3 * d * d  # two kernel-3 convolutions
    linear = convs + enc * (4 * d * d + 2 * d * enc_ffn) + dec * (8 * d * d + 2 * d * dec_ffn)
    positions = (c.int("max_source_positions") + c.int("max_target_positions")) * d
    small = enc * (8 * d + enc_ffn) + dec * (13 * d + dec_ffn) + positions + 6 * d
    return ParamSplit(c.int("vocab_size") * d, linear, 0, small)


def _param_split(c: _Config, family: str) -> ParamSplit:
    other = {"whisper": _whisper_split, "encoder": _encoder_split}
    split = other.get(family, _plain_decoder_split if family in ("opt", "phi") else None)
    return split(c) if split else _decoder_split(c, family)


# ---------------------------------------------------------------- quantized checkpoints


def _quant_bytes(qcfg: dict[str, Any], c: _Config) -> tuple[float, float] | None:
    """(linear, experts) bytes per parameter of a pre-quantized checkpoint; None if unknown."""
    q = _Config(qcfg, c.where, "quantization_config.")
    method = q.opt_str("quant_method")
    if method in ("awq", "gptq", "awq_marlin", "gptq_marlin", "marlin"):
        bits, group = _bits(q, "bits", 4), q.get("group_size", 128)
        if group != -1:  # -1: one scale per channel
            group = q.int("group_size", 128)
        per = bits / 8 + ((2 + bits / 8) / group if group > 0 else 0)  # fp16 scale + zero/group
        return per, per
    if method == "fp8":
        per = 1 + (4 / (128 * 128) if qcfg.get("weight_block_size") else 0)  # fp32 block scales
        return per, _FP4_WITH_SCALE if c.get("expert_dtype") == "fp4" else per
    if method == "mxfp4":  # gpt-oss: only the experts; attention and router stay bf16
        return 2, _FP4_WITH_SCALE
    if method == "compressed-tensors":
        groups = qcfg.get("config_groups") or {}
        groups = list(groups.values()) if isinstance(groups, dict) else []
        weights = [g["weights"] for g in groups if isinstance(g, dict) and "weights" in g]
        if weights and not isinstance(weights[0], dict):
            raise InputError("quantization_config.config_groups: 'weights' must be an object",
                             where=c.where)  # fmt: skip
        w = _Config(weights[0], c.where, "quantization_config.config_groups.*.weights.")
        bits = _bits(w, "num_bits", 8) if weights else 8
        return bits / 8, bits / 8
    if qcfg.get("bits") is not None:
        return _bits(q, "bits", 8) / 8, _bits(q, "bits", 8) / 8
    return None


def _bits(q: _Config, key: str, default: int) -> int:
    """A weight width in bits: 1 to 64."""
    bits = q.int(key, default)
    if bits > 64:
        raise InputError(f"key '{q.prefix}{key}' is {bits}: a weight has 1 to 64 bits",
                         where=q.where)  # fmt: skip
    return bits


# ---------------------------------------------------------------- maximum model length

# vLLM's ModelArchConfigConvertor.derive_max_model_len_and_key: the smallest of these keys
_MAX_LEN_KEYS = (
    "max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
    "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len",
)  # fmt: skip
_ROPE_UNSCALED = ("su", "longrope", "llama3")  # the limit is not multiplied for these


def derived_max_model_len(config: dict[str, Any], where: str = "config.json") -> int | None:
    """vLLM's derived maximum model length of a config.json (text part), or None without any
    length key (vLLM then assumes 2048).

    Follows vllm/config/model.py `_get_and_verify_max_len` (0.10.0 to 0.34.0 agree): the
    smallest of the length keys (`model_max_length` wins when set); then, unless the model type
    is Gemma-3 (its 128K is already scaled), each rope_scaling / rope_parameters entry whose
    rope_type is not su/longrope/llama3 sets the factor (default 1), and yarn replaces the
    base by original_max_position_embeddings; the base is multiplied by the factor.
    Legacy `type` is read as rope_type ('su' is longrope, 'mrope' default). A user-specified
    max_model_len above this is refused (unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)."""
    if not isinstance(config, dict):
        raise InputError("config must be a JSON object", where=where)
    text = _text_config(config)
    c = _Config(config, where)
    derived: float | None = None
    for key in _MAX_LEN_KEYS:
        if text.get(key) is not None:
            value = float(c.int(key))
            derived = value if derived is None else min(derived, value)
    if text.get("model_max_length") is not None:
        derived = float(c.int("model_max_length"))
    if derived is None:
        return None
    factor: float = 1.0
    for rp in _rope_entries(text, where):
        rope_type = _rope_type(rp)
        if "gemma3" in c.model_type or rope_type in _ROPE_UNSCALED:
            continue
        if rp.get("factor") is not None:
            factor = _positive_number(rp["factor"], "rope_scaling.factor", where)
        if rope_type == "yarn":
            original = rp.get("original_max_position_embeddings",
                              text.get("original_max_position_embeddings", derived))  # fmt: skip
            derived = _positive_number(original, "original_max_position_embeddings", where)
    result = int(derived * factor)
    if not 1 <= result <= MAX_POSITIONS:
        raise InputError(
            f"the derived maximum model length {result} is out of range (1 to {MAX_POSITIONS:,})",
            where=where,
            hint="check max_position_embeddings and rope_scaling in config.json",
        )
    return result


def _default_max_model_len(config: dict[str, Any], where: str) -> int | None:
    """vLLM's default max_model_len when it is not the derived limit: longrope models start at
    original_max_position_embeddings (to keep short prompts fast); None otherwise."""
    text = _text_config(config)
    if not any(_rope_type(rp) == "longrope" for rp in _rope_entries(text, where)):
        return None
    original = text.get("original_max_position_embeddings")
    if original is None:
        return None
    return int(_positive_number(original, "original_max_position_embeddings", where))


def _rope_entries(text: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """rope_parameters (transformers v5, maybe one per layer type) or rope_scaling (v4)."""
    rope = text.get("rope_parameters") or text.get("rope_scaling")
    if rope is None:
        return []
    if not isinstance(rope, dict):
        raise InputError(f"key 'rope_scaling' must be an object, not {_shown(rope)}", where=where)
    if all(isinstance(v, dict) for v in rope.values()) and rope:
        return list(rope.values())  # nested: {"full_attention": {...}, "sliding_attention": ...}
    return [rope]


def _rope_type(rp: dict[str, Any]) -> str:
    kind = str(rp.get("rope_type", rp.get("type", "default")))
    return {"su": "longrope", "mrope": "default"}.get(kind, kind)


def _positive_number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"key '{key}' must be a positive number, not {_shown(value)}",
                         where=where)  # fmt: skip
    if value > MAX_POSITIONS:
        raise InputError(f"key '{key}' is {_shown(value)}: it must be 1 to {MAX_POSITIONS:,}",
                         where=where)  # fmt: skip
    return float(value)


# ---------------------------------------------------------------- building facts


def _attention_shape(c: _Config, family: str) -> dict[str, Any]:
    """KV-relevant numbers, as vLLM's model_arch_config_convertor derives them."""
    if family == "whisper":  # KV lives in the decoder's self-attention
        heads, d = c.int("decoder_attention_heads"), c.int("d_model")
        return {
            "num_layers": c.int("decoder_layers"), "num_attention_heads": heads,
            "num_kv_heads": heads, "head_dim": d // heads, "head_dim_v": d // heads,
            "hidden_size": d, "max_position_embeddings": c.opt_int("max_target_positions"),
            # each request's cross-attention holds the encoder's frames in every decoder
            # layer (vLLM's CrossAttentionSpec, max_encoder_len = max_source_positions)
            "encoder_tokens": c.opt_int("max_source_positions") or WHISPER_FRAMES,
        }  # fmt: skip
    h, heads = c.int("hidden_size"), c.int("num_attention_heads")
    shape = {
        "num_layers": c.int("num_hidden_layers"), "num_attention_heads": heads,
        "hidden_size": h, "max_position_embeddings": derived_max_model_len(c.raw, c.where),
    }  # fmt: skip
    if family == "mla":
        latent = c.int("kv_lora_rank") + c.int("qk_rope_head_dim")
        return shape | {"num_kv_heads": 1, "head_dim": latent, "head_dim_v": 0}
    if family == "deepseek_v4":
        hd = c.int("head_dim")
        return shape | {
            "num_kv_heads": 1,
            "head_dim": hd,
            "head_dim_v": 0,
            "kv_caveat": _CAVEATS[family],
        }
    kv, hd = c.int("num_key_value_heads", heads), c.int("head_dim", h // heads)
    if not c.get("global_head_dim"):
        return shape | {"num_kv_heads": kv, "head_dim": hd, "head_dim_v": hd}
    full_hd = c.int("global_head_dim")  # Gemma-4: full layers have their own KV shape
    return shape | {
        "num_kv_heads": c.int("num_global_key_value_heads", kv), "head_dim": full_hd,
        "head_dim_v": full_hd, "sliding_num_kv_heads": kv, "sliding_head_dim": hd,
        "kv_caveat": _CAVEATS["gemma4"],
    }  # fmt: skip


def _facts_from_config(
    raw: dict[str, Any], *, model_id: str, where: str, sources: tuple[str, ...],
    checkpoint_bytes: int | None,
) -> ModelFacts:  # fmt: skip
    if not isinstance(raw, dict):
        raise InputError("config must be a JSON object", where=where)
    c = _Config(raw, where)
    family = _family(c)
    shape = _attention_shape(c, family)
    if shape["head_dim"] < 1:  # derived as hidden size // heads
        raise InputError(
            f"the attention heads ({shape['num_attention_heads']}) outnumber the hidden size "
            f"({shape['hidden_size']}): no head size is left",
            where=where,
            hint="check hidden_size, the head counts and head_dim in config.json",
        )
    split = _param_split(c, family)
    qcfg = raw.get("quantization_config")
    qcfg = qcfg if isinstance(qcfg, dict) else {}
    v4 = family == "deepseek_v4"  # its window sits inside compressed attention (caveat)
    archs = raw.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    return ModelFacts(
        model_id=model_id,
        architecture=arch or c.model_type or "unknown",
        vocab_size=c.int("vocab_size"),
        torch_dtype=c.opt_str("torch_dtype", "dtype"),
        is_mla=family == "mla" or v4,
        sliding_window=_sliding_window(c),
        num_sliding_layers=_sliding_layers(c, shape["num_layers"]) if not v4 else 0,
        param_count=split.total,
        checkpoint_bytes=checkpoint_bytes,
        checkpoint_quantization=_Config(qcfg, where, "quantization_config.").opt_str(
            "quant_method"
        ),
        is_pooling=family == "encoder",
        sources=(*sources, "computed: param_count and KV bytes from the architecture"),
        tied_embeddings=_tied(c),
        params=split,
        quant_bytes_per_param=_quant_bytes(qcfg, c) if qcfg else None,
        default_max_model_len=_default_max_model_len(raw, where),
        moe_shape=_moe_shape(c, family),
        per_layer_vocab=c.opt_int("vocab_size_per_layer_input")
        if c.opt_int("hidden_size_per_layer_input") else None,
        **shape,
    )


def _moe_shape(c: _Config, family: str) -> tuple[int, int, int, int] | None:
    """(MoE layers, routed experts, hidden, expert intermediate) for the mxfp4 padding."""
    if family != "decoder":
        return None
    experts = (
        c.opt_int("n_routed_experts") or c.opt_int("num_experts") or c.opt_int("num_local_experts")
    )
    if not experts:
        return None
    layers = c.int("num_hidden_layers")
    only = c.get("mlp_only_layers", [])
    first = c.int("first_k_dense_replace", 0)
    moe_layers = sum(
        1 for i in range(layers) if i >= first and not (isinstance(only, list) and i in only)
    )
    inter = c.int("moe_intermediate_size", c.int("intermediate_size"))
    return moe_layers, experts, c.int("hidden_size"), inter


# ---------------------------------------------------------------- model folders


def _kind(path: Path) -> str | None:
    """'dir', 'file' (regular), 'other' or None (absent), following symlinks; a path that
    cannot be looked at is an InputError, not a traceback."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise InputError(f"cannot access: {e.strerror or e}", where=str(path)) from None
    except ValueError as e:  # an embedded NUL byte
        raise InputError(f"not a usable path: {e}", where=_shown(str(path))) from None
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def _read_bytes(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file; a larger one is an InputError."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror or e}", where=str(path)) from None
    if len(data) > limit:
        raise InputError(
            f"the file is larger than {limit >> 20} MiB",
            where=str(path),
            hint="a config.json is a few KiB: re-download it from the model's Hugging Face repo",
        )
    return data


def _read_json(path: Path) -> Any:
    data = _read_bytes(path, MAX_JSON_BYTES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(
            f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})",
            where=str(path),
            hint="re-download the file from the model's Hugging Face repo",
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"invalid JSON: {e.msg}",
            where=f"{path}:{e.lineno}:{e.colno}",
            hint="re-download the file from the model's Hugging Face repo",
        ) from None
    except (ValueError, RecursionError) as e:  # 5000-digit integers, 100000-deep nesting
        raise InputError(
            f"invalid JSON: {_shown(str(e), 100)}"
            if isinstance(e, ValueError)
            else "invalid JSON: nested too deeply",
            where=str(path),
            hint="re-download the file from the model's Hugging Face repo",
        ) from None


def _bad_checkpoint(path: Path, what: str) -> InputError:
    return InputError(
        what,
        where=str(path),
        hint="the weight size is read from this file: re-download it from the model's Hugging "
        "Face repo, or remove it to size the weights from config.json",
    )


def _checkpoint_bytes(folder: Path) -> tuple[int | None, str | None]:
    """Tensor bytes from model.safetensors.index.json, or a single model.safetensors header.

    A size that does not add up (negative, not a number, a header longer than the file) is an
    InputError naming the file: never a negative or made-up weight size."""
    index = folder / "model.safetensors.index.json"
    kind = _kind(index)
    if kind == "file":
        metadata = _read_json(index)
        if not isinstance(metadata, dict):
            raise _bad_checkpoint(index, "the index must be a JSON object")
        meta = metadata.get("metadata")
        if meta is None:
            return None, None
        if not isinstance(meta, dict):
            raise _bad_checkpoint(index, f"key 'metadata' must be an object, not {_shown(meta)}")
        total = meta.get("total_size")
        if total is None:
            return None, None
        if isinstance(total, bool) or not isinstance(total, int):
            raise _bad_checkpoint(
                index, f"key 'metadata.total_size' must be an integer (bytes), not {_shown(total)}"
            )
        if not 0 < total <= MAX_CHECKPOINT_BYTES:
            raise _bad_checkpoint(
                index, f"key 'metadata.total_size' is {total}: it must be 1 to "
                f"{MAX_CHECKPOINT_BYTES:,} bytes",
            )  # fmt: skip
        return total, str(index)
    if kind == "other":
        raise _bad_checkpoint(index, "not a regular file")
    single = folder / "model.safetensors"
    kind = _kind(single)
    if kind == "other":
        raise _bad_checkpoint(single, "not a regular file")
    if kind != "file":
        return None, None
    try:
        size = single.stat().st_size
        with single.open("rb") as f:  # 8-byte little-endian header length, then JSON header
            head = f.read(9)
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror or e}", where=str(single)) from None
    if len(head) < 9:
        raise _bad_checkpoint(single, f"{size} bytes is too small for a safetensors file")
    header = struct.unpack("<Q", head[:8])[0]
    if head[8:9] != b"{" or header > min(size - 8, MAX_SAFETENSORS_HEADER):
        raise _bad_checkpoint(
            single, f"not a safetensors file: its header claims {header:,} bytes of the "
            f"{size:,}-byte file (truncated or another format)",
        )  # fmt: skip
    tensors = size - 8 - header
    if tensors <= 0:
        raise _bad_checkpoint(single, "the safetensors file holds no tensor data")
    if tensors > MAX_CHECKPOINT_BYTES:
        raise _bad_checkpoint(single, f"{tensors:,} bytes of tensors is beyond any model")
    return tensors, str(single)


def load_model_dir(path: str | Path, model_id: str | None = None) -> ModelFacts:
    """Facts of a model folder holding config.json (and optionally safetensors files)."""
    folder = Path(path)
    kind = _kind(folder)
    if kind is None:
        raise InputError(
            "model folder not found",
            where=str(folder),
            hint="point --config at a folder that holds the model's config.json",
        )
    if kind != "dir":
        raise InputError(
            "not a folder",
            where=str(folder),
            hint="point --config at the folder that holds config.json, not at a file",
        )
    config = folder / "config.json"
    kind = _kind(config)
    if kind is None:
        raise InputError(
            "config.json not found in the model folder",
            where=str(config),
            hint="download config.json from the model's Hugging Face repo into this folder",
        )
    if kind != "file":
        raise InputError(
            "config.json is not a regular file",
            where=str(config),
            hint="download config.json from the model's Hugging Face repo into this folder",
        )
    raw = _read_json(config)
    size, size_source = _checkpoint_bytes(folder)
    sources = (str(config),) + ((size_source,) if size_source else ())
    return _facts_from_config(
        raw, model_id=model_id or folder.name or str(folder), where=str(config),
        sources=sources, checkpoint_bytes=size,
    )  # fmt: skip


# ---------------------------------------------------------------- HF cache and catalog


def _hf_snapshot(model_id: str, revision: str | None, hf_home: str | Path | None) -> Path | None:
    """The cached snapshot folder of model_id (HF hub cache layout), if it has a config."""
    if hf_home is not None:
        hub = Path(hf_home) / "hub"
    elif os.environ.get("HF_HUB_CACHE"):
        hub = Path(os.environ["HF_HUB_CACHE"])
    else:
        hub = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"
    # model_id and revision are checked (find_model): neither can leave the cache folder
    repo = hub / ("models--" + model_id.replace("/", "--"))
    ref = repo / "refs" / (revision or "main")
    if _kind(ref) == "file":
        commit = _read_bytes(ref, 1024).decode("utf-8", "replace").strip()
        try:
            check_revision(commit)
        except ValueError:
            commit = ""
        if "/" in commit or not commit:
            raise InputError(
                f"the Hugging Face cache ref does not name a commit: {_shown(commit)}",
                where=str(ref),
                hint="re-download the model, or delete the broken cache folder",
            )
    else:  # no such branch or tag in the cache: the revision may be the commit itself
        commit = revision if revision and "/" not in revision else ""
    snapshot = repo / "snapshots" / commit
    return snapshot if commit and _kind(snapshot / "config.json") == "file" else None


@functools.cache  # package data: read once a process
def _catalog_files() -> dict[str, Any]:
    """model id -> catalog file (org--name.json), bundled as package data."""
    folder = resources.files("gpufleet.vllm") / "catalog"
    return {
        f.name[: -len(".json")].replace("--", "/", 1): f
        for f in folder.iterdir()
        if f.name.endswith(".json")
    }


@functools.cache
def _catalog_by_lower_id() -> dict[str, Any]:
    return {k.lower(): v for k, v in _catalog_files().items()}


def catalog_ids() -> list[str]:
    """Model ids the bundled catalog knows, sorted."""
    return sorted(_catalog_files(), key=str.lower)


def _unknown_model(model_id: str) -> InputError:
    close = difflib.get_close_matches(model_id, catalog_ids(), n=3, cutoff=0.6)
    maybe = f"did you mean {', '.join(close)}? " if close else ""
    return InputError(
        f"unknown model '{model_id}': not in the Hugging Face cache nor in the bundled catalog",
        hint=f"{maybe}download it (huggingface-cli download {model_id} config.json), "
        "point at its folder with --config DIR, or list known ids with `gpufleet models`",
    )


def catalog_entry(model_id: str) -> dict[str, Any]:
    """The raw catalog record (config subset, checkpoint_bytes, sources) for model_id."""
    entry = _catalog_by_lower_id().get(model_id.lower())
    if entry is None:
        raise _unknown_model(model_id)
    record: dict[str, Any] = json.loads(entry.read_text(encoding="utf-8"))
    return record


@functools.lru_cache(maxsize=1024)  # the catalog never changes within a process
def _facts_from_catalog(model_id: str) -> ModelFacts:
    record = catalog_entry(model_id)
    return _facts_from_config(
        record["config"], model_id=record["model_id"],
        where=f"gpufleet catalog: {record['model_id']}",
        sources=(f"gpufleet catalog: {record['model_id']}", *record.get("sources", [])),
        checkpoint_bytes=record.get("checkpoint_bytes"),
    )  # fmt: skip


def find_model(
    model_id: str, revision: str | None = None, *, hf_home: str | Path | None = None
) -> ModelFacts:
    """Facts for a model id: the local HF cache first, then the bundled catalog; no network.

    The id and revision are checked first (check_model_id, check_revision): they become parts
    of a path into the cache and must never climb out of it."""
    try:
        check_model_id(model_id)
    except ValueError as e:
        raise InputError(
            str(e),
            hint="give a Hugging Face model id such as meta-llama/Llama-3.1-8B-Instruct; for a "
            "local folder use --config DIR (or model_path: in the inventory)",
        ) from None
    if revision is not None:
        try:
            check_revision(revision)
        except ValueError as e:
            raise InputError(
                str(e), hint="pin a commit hash (40 hex digits) or a branch or tag name"
            ) from None
    snapshot = _hf_snapshot(model_id, revision, hf_home)
    if snapshot is not None:
        return load_model_dir(snapshot, model_id)
    return _facts_from_catalog(model_id)
