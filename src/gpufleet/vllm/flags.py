"""`vllm serve` flags: which exist, which take a value, and which the plan decides itself.

A service's `extra_args` are parsed against this table, never pasted: an unknown flag is an
input error naming the nearest known ones (vLLM would only say so at startup, after a rollout),
and a flag the plan decides (utilization, lengths, parallelism, host and port, ...) is an error
pointing at the inventory key to set instead, so the plan stays the single source of truth.

The table is static. It holds every flag of the lab's vLLM test double
(lab/src/gpufleet_lab/vllm_double/vllm/args.py, which mirrors vLLM's own parser) plus the other
flags of `vllm serve --help` for the 0.9-0.19 releases; the product never imports the lab.
Spelling follows vLLM's FlexibleArgumentParser: `--max_model_len` is `--max-model-len`,
`--flag=value` is `--flag value`, boolean flags also have a `--no-` form, and JSON-valued
flags take dotted sub-keys (`--compilation-config.level 3`, `-O3`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpufleet.vllm import knobs

BOOL, VALUE, MANY, JSON = "bool", "value", "many", "json"  # how a flag takes its arguments

_FLAGS: dict[str, str] = {}
_SHORT: dict[str, str] = {}  # short or alternative spelling -> canonical long flag


def _add(arity: str, names: str) -> None:
    for name in names.split():
        flag, *aliases = name.split("|")
        _FLAGS[flag] = arity
        for alias in aliases:
            _SHORT[alias] = flag


# ---------------------------------------------------------------- the table

# API server (frontend)
_add(VALUE, """--host --port --uds --uvicorn-log-level --api-key --chat-template
    --chat-template-content-format --response-role --ssl-keyfile --ssl-certfile --ssl-ca-certs
    --ssl-cert-reqs --root-path --tool-call-parser --tool-parser-plugin --tool-server
    --log-config-file --max-log-len --h11-max-incomplete-event-size --h11-max-header-count
    --api-server-count|-asc --config --reasoning-parser --middleware --default-chat-template-kwargs
    --allowed-origins --allowed-methods --allowed-headers""")
_add(MANY, "--served-model-name --lora-modules")
_add(BOOL, """--disable-uvicorn-access-log --disable-log-requests --enable-log-requests
    --disable-log-stats --enable-auto-tool-choice --exclude-tools-when-tool-choice-none
    --allow-credentials --return-tokens-as-token-ids --disable-frontend-multiprocessing
    --enable-request-id-headers --disable-fastapi-docs --enable-prompt-tokens-details
    --enable-server-load-tracking --enable-force-include-usage --enable-tokenizer-info-endpoint
    --enable-log-outputs --log-error-stack --headless --enable-ssl-refresh
    --trust-request-chat-template""")
# model
_add(VALUE, """--model --revision --tokenizer --tokenizer-mode --config-format --load-format
    --download-dir --dtype --quantization|-q --max-model-len --task --runner --convert
    --generation-config --seed --hf-config-path --allowed-local-media-path --code-revision
    --rope-theta --tokenizer-revision --max-logprobs --logprobs-mode --hf-token
    --logits-processor-pattern --model-impl --override-attention-dtype --io-processor-plugin
    --max-seq-len-to-capture --mm-processor-cache-gb --mm-processor-cache-type
    --mm-shm-cache-max-object-size-mb --mm-encoder-tp-mode --video-pruning-rate
    --safetensors-load-strategy --pt-load-map-location --guided-decoding-backend""")
_add(MANY, "--allowed-media-domains --logits-processors --ignore-patterns")
_add(JSON, """--limit-mm-per-prompt --hf-overrides --override-pooler-config|--pooler-config
    --rope-scaling --override-generation-config --mm-processor-kwargs --media-io-kwargs
    --model-loader-extra-config --structured-outputs-config --speculative-config
    --kv-transfer-config --kv-events-config --compilation-config|-O --additional-config
    --eplb-config --default-mm-loras""")
_add(BOOL, """--trust-remote-code --enforce-eager --disable-sliding-window --disable-cascade-attn
    --skip-tokenizer-init --enable-prompt-embeds --enable-sleep-mode
    --disable-mm-preprocessor-cache --interleave-mm-strings --skip-mm-profiling --use-tqdm-on-load
    --guided-decoding-disable-fallback --guided-decoding-disable-any-whitespace
    --guided-decoding-disable-additional-properties --enable-reasoning""")
# parallelism
_add(VALUE, """--tensor-parallel-size|-tp --pipeline-parallel-size|-pp --data-parallel-size|-dp
    --decode-context-parallel-size|-dcp --data-parallel-rank|-dpn --data-parallel-start-rank|-dpr
    --data-parallel-size-local|-dpl --data-parallel-address|-dpa --data-parallel-rpc-port|-dpp
    --data-parallel-backend|-dpb --distributed-executor-backend --dbo-decode-token-threshold
    --dbo-prefill-token-threshold --num-redundant-experts --eplb-window-size --eplb-step-interval
    --expert-placement-strategy --max-parallel-loading-workers --worker-cls
    --worker-extension-cls""")
_add(BOOL, """--enable-expert-parallel --data-parallel-hybrid-lb --enable-dbo --enable-eplb
    --eplb-log-balancedness --ray-workers-use-nsight --disable-custom-all-reduce
    --enable-multimodal-encoder-data-parallel""")
# cache
_add(VALUE, """--gpu-memory-utilization --kv-cache-memory-bytes|--kv-cache-memory --kv-cache-dtype
    --block-size --swap-space --num-gpu-blocks-override --prefix-caching-hash-algo
    --cpu-offload-gb --mamba-cache-dtype --mamba-ssm-cache-dtype --attention-backend""")
_add(BOOL, "--enable-prefix-caching --calculate-kv-scales --kv-sharing-fast-prefill")
# LoRA, observability
_add(VALUE, """--max-loras --max-lora-rank --lora-extra-vocab-size --lora-dtype --max-cpu-loras
    --show-hidden-metrics-for-version --otlp-traces-endpoint""")
_add(MANY, "--collect-detailed-traces")
_add(BOOL, "--enable-lora --enable-lora-bias --fully-sharded-loras")
# scheduler
_add(VALUE, """--max-num-seqs --max-num-batched-tokens --max-num-partial-prefills
    --max-long-partial-prefills --long-prefill-token-threshold --num-lookahead-slots
    --scheduling-policy --scheduler-cls --max-cudagraph-capture-size --device""")
_add(MANY, "--cuda-graph-sizes")
_add(BOOL, """--enable-chunked-prefill --disable-chunked-mm-input --disable-hybrid-kv-cache-manager
    --async-scheduling""")

FLAGS: dict[str, str] = dict(_FLAGS)  # canonical `--flag` -> BOOL | VALUE | MANY | JSON
SHORT: dict[str, str] = dict(_SHORT)  # `-tp`, `--kv-cache-memory`, ... -> canonical flag

# Flags the plan decides: each names what to set in the inventory instead.
PLANNED: dict[str, str] = {
    **{k.flag: f"the service key `{k.key}`" for k in knobs.KNOBS},
    "--model": "the service key `model`",
    "--revision": "the service key `revision`",
    "--served-model-name": "nothing: the plan serves the model under its id (validate and the "
    "rollout's request check look for it)",
    "--host": "the key `bind` (service, host or fleet)",
    "--port": "the service key `port`",
    "--uds": "the service keys `bind` and `port` (health checks use TCP)",
    "--data-parallel-size": "one service per replica: the plan gives a service exactly "
    "tensor_parallel_size x pipeline_parallel_size GPUs",
    "--task": "the service key `kind` (llm, embed, rerank, whisper)",
    "--runner": "the service key `kind` (llm, embed, rerank, whisper)",
    "--convert": "the service key `kind` (llm, embed, rerank, whisper)",
    "--api-key": "`secrets: {VLLM_API_KEY: <fleet secret>}` (a key on the command line is "
    "visible to every user of the host)",
    "--hf-token": "`secrets: {HF_TOKEN: <fleet secret>}` (never on a command line)",
    "--download-dir": "fleet.model_cache",
    "--config": "the flags themselves in extra_args (a config file hides them from the plan)",
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NUMBER = re.compile(r"-\d+(\.\d*)?([eE][-+]?\d+)?|-\.\d+")  # argparse reads these as values


@dataclass(frozen=True)
class FlagProblem:
    """One thing wrong in an `extra_args` list: the word's index, what, and what to do."""

    index: int
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class Flag:
    """A flag as vLLM reads it: canonical name, the index of its word, its value(s)."""

    name: str
    index: int
    values: tuple[str, ...] = ()
    negated: bool = False  # the `--no-` form of a boolean flag


def control_character(word: str) -> str | None:
    """The first ASCII control character of a word (NUL, newline, ...), if any."""
    found = _CONTROL.search(word)
    return found.group(0) if found else None


def canonical(word: str) -> tuple[str, str | None, bool] | None:
    """`--max_model_len=8` -> ('--max-model-len', '8', False); `--no-enforce-eager` ->
    ('--enforce-eager', None, True); None when the word is not a flag vLLM knows."""
    head, eq, value = word.partition("=")
    attached = value if eq else None
    if not head.startswith("--"):
        if head.startswith("-O") and head not in SHORT and len(head) > 2:  # -O3, -O.level=3
            return "--compilation-config", word[2:], False
        name = SHORT.get(head)
        return (name, attached, False) if name else None
    name = "--" + head[2:].replace("_", "-")
    base = name.split(".", 1)[0]
    if base != name and FLAGS.get(SHORT.get(base, base)) == JSON:  # --compilation-config.level
        return SHORT.get(base, base), attached, False
    name = SHORT.get(name, name)
    if name in FLAGS:
        return name, attached, False
    if name.startswith("--no-"):
        positive = SHORT.get("--" + name[5:], "--" + name[5:])
        if FLAGS.get(positive) == BOOL:
            return positive, attached, True
    return None


def nearest(word: str, n: int = 3) -> list[str]:
    """Known flags spelled most like `word` (for the 'did you mean' hint)."""
    head = "--" + word.partition("=")[0].lstrip("-").replace("_", "-")
    return difflib.get_close_matches(head, [*FLAGS, *SHORT], n=n, cutoff=0.6)


def _is_option(word: str) -> bool:
    return word.startswith("-") and word != "-" and not _NUMBER.fullmatch(word)


def parse(words: Sequence[str]) -> tuple[list[Flag], list[FlagProblem]]:
    """Split `extra_args` into flags (with their values) and problems, as vLLM's parser would:
    unknown flags, positional words, missing values, values given to boolean flags."""
    flags: list[Flag] = []
    problems: list[FlagProblem] = []
    i = 0
    while i < len(words):
        word = words[i]
        if (char := control_character(word)) is not None:
            problems.append(FlagProblem(i, f"extra_args word {word!r} contains the control "
                                           f"character {char!r}",
                                        "each word is one argument on one line"))
            i += 1
            continue
        if not _is_option(word):
            problems.append(FlagProblem(
                i, f"extra_args passes the positional argument {word!r}: vLLM would take it as "
                "the model, which the plan decides",
                "set the service key `model`; a flag's value follows its flag"))
            i += 1
            continue
        parsed = canonical(word)
        if parsed is None:
            close = nearest(word)
            problems.append(FlagProblem(
                i, f"extra_args: {word.partition('=')[0]!r} is not a `vllm serve` flag",
                f"did you mean {', '.join(close)}?" if close
                else "see `vllm serve --help` for the flags of the fleet's vLLM version"))
            i += 1
            continue
        name, attached, negated = parsed
        arity = FLAGS[name]
        start = i
        i += 1
        values: list[str] = []
        if arity == BOOL:
            if attached is not None:
                problems.append(FlagProblem(start, f"extra_args: {name} takes no value "
                                                   f"(got {attached!r})",
                                            f"write {name} or --no-{name[2:]}"))
        elif attached is not None:
            values.append(attached)
        elif arity == MANY:
            while i < len(words) and not _is_option(words[i]):
                values.append(words[i])
                i += 1
        elif i < len(words) and not _is_option(words[i]):
            values.append(words[i])
            i += 1
        if arity != BOOL and not values:
            problems.append(FlagProblem(start, f"extra_args: {name} needs a value",
                                        f"write {name} VALUE or {name}=VALUE"))
        flags.append(Flag(name, start, tuple(values), negated))
    return flags, problems


def check(words: Sequence[str]) -> list[FlagProblem]:
    """Every problem of a vLLM service's `extra_args`, planned flags included."""
    flags, problems = parse(words)
    for flag in flags:
        if flag.name in PLANNED:
            shown = words[flag.index].partition("=")[0]
            problems.append(FlagProblem(flag.index, f"extra_args sets {shown}, which the plan "
                                                    "decides", f"use {PLANNED[flag.name]}"))
    return sorted(problems, key=lambda p: p.index)


def value_of(words: Iterable[str], name: str) -> str | None:
    """The (last) value given to flag `name` in well-formed `extra_args`, or None."""
    found = None
    flags, _ = parse(list(words))
    for flag in flags:
        if flag.name == name:
            found = flag.values[-1] if flag.values else ""
    return found
