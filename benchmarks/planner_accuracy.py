"""How well gpufleet's memory stage reproduces what vLLM printed in real, public cases.

    python benchmarks/planner_accuracy.py --cases ../shared/data/vllm_cases.yaml \
        [--cases tests/data/vllm_cases_more.yaml ...] --configs ../shared/data/hf-configs \
        [--configs tests/data/hf-configs ...] [--json]

Several --cases files are read as one set (ids must be unique); several --configs folders are
searched in the order given for `<org>--<name>/config.json`.

Each case (format of vllm_cases.yaml: model, GPU, flags -> what vLLM printed) is turned into an
`InstanceSpec` and run through `gpufleet.vllm.memory.estimate`. Rules, in the order they are applied
(the first one that fails names the skip reason):

* kind: `ok`, `error_kv`, `error_nomem`, `error_free` and `colocation` have an outcome the memory
  stage decides; `error_maxlen` (max_model_len above vLLM's derived limit, refused at config
  time) is predicted by the planner's own check (gpufleet.plan `max_model_len_above_model`:
  max_model_len > ModelFacts.max_position_embeddings, the derived limit), repeated here because
  memory.estimate does not check it; its GPU may be unknown (an MI300X is then assumed for the
  memory part). A `rope_scaling` (or `hf_overrides.rope_scaling`) setting is applied to the
  config before the limit is derived, as vLLM's --rope-scaling / --hf-overrides do; `oom`
  (a CUDA OOM after the checks), `observed_usage` (nvidia-smi numbers only)
  and `exotic_kv` (KV layouts gpufleet does not model exactly) are skipped.
* model: the first word of `model` is the id; `<org>--<name>/config.json` in --configs, else
  (also when that config cannot be read or lacks the checkpoint's `quantization_config`)
  gpufleet's catalog / HF cache. A bare family name ("TinyLlama") resolves when exactly one
  folder's model name starts with it. A model qualified as a "variant" or "not in excerpt" is
  not identified; a quantized checkpoint whose config.json lacks `quantization_config`, a
  config that gpufleet cannot read, and a model whose KV numbers are only a bound
  (`ModelFacts.kv_caveat`) are skipped.
* GPU: `gpu_mem_gib`, else the `gpu` string through GPU_TOTALS (values printed in the cases).
* version: `vllm_version`, else the comment on that line (`~v0.6.4`, `v0.2.5`), else the month
  of the comment or of the source's date through RELEASES; a comment or env that names the
  engine (V0 / V1, VLLM_USE_V1=1) moves the version into that engine's range, because memory.py
  selects V0 behaviour by version (< 0.8).
* co-location: every instance must be listed ("A (util x) + B (util y)", "A then B",
  "X (2 instances)" with "u1 / u2"); instances start one after another, each seeing what the
  earlier ones left free. Concurrent starts are not modelled.
* outcome: error kinds fail; `ok` starts unless the record also shows an error (then the case
  counts for the KV numbers only); co-location fails when the record shows an error.

* weights: every case that reports `weights_gib` (whatever its kind, also skipped ones) is
  compared with the planner's weights per rank: as memory.estimate computes them (models'
  defaults: ROCm, newest release) and with the case's platform and version passed to
  ModelFacts.weight_bytes_per_rank (what memory.py would do if it passed spec.platform and
  spec.vllm_version); within WEIGHTS_TOLERANCE_PCT counts as right.

Exit status 0 (also when targets are missed); 2 for an invalid case file or folder.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from gpufleet.errors import GpufleetError
from gpufleet.vllm.memory import (
    GIB,
    Estimate,
    InstanceSpec,
    baseline_bytes,
    estimate,
    is_v0,
    parse_version,
    with_free_memory,
)
from gpufleet.vllm.models import (
    ModelFacts,
    catalog_entry,
    derived_max_model_len,
    find_model,
    load_model_dir,
)

RUN_KINDS = ("ok", "error_kv", "error_nomem", "error_free", "colocation", "error_maxlen")
MAXLEN_ERROR = "max_model_len_above_model"  # gpufleet.plan's finding code for the refusal
WEIGHTS_TOLERANCE_PCT = 3.0
ASSUMED_GPU = "mi300x"  # error_maxlen cases refuse before memory; the GPU is often not named
SKIP_KINDS = {
    "oom": "outcome is a CUDA OOM after the startup checks",
    "observed_usage": "only nvidia-smi/rocm-smi usage reported",
    "exotic_kv": "KV layout not modelled exactly (exotic_kv)",
}
DEFAULT_BLOCK = 16

# Device totals (GiB, as cudaMemGetInfo / hipMemGetInfo report them), first match wins.
GPU_TOTALS: tuple[tuple[str, float, str], ...] = (
    (r"mi300x", 191.98, "facts §1/§5 (vllm-53961 prints 191.98)"),
    (r"h100", 79.10, "facts §1 (~79.1 GiB)"),
    (r"\bh20\b", 95.0, "vllm-51041 (95)"),
    (r"a100.*80 ?gb|a100-80", 79.25, "A100-80G prints 79.15-79.32 (10533, kvcached-29/110, omni)"),
    (r"a100.*40 ?gb|a100-40", 39.38, "vllm-16570 (39.38)"),
    (r"l40s", 44.42, "vllm-15815 (44.42)"),
    (r"3090", 23.58, "vllm-10517, vllm-14447 (23.58)"),
    (r"4090", 23.55, "vllm-13061: 0.98*T - 13.95 - 0.25 - 0.19 = 8.69 -> T = 23.55"),
    (r"a6000|6000 ada", 47.50, "48 GB GDDR6 cards; torch reports 47.5 GiB"),
    (r"\bt4\b", 14.58, "T4 16 GB; torch reports 14.58 GiB"),
    (r"\ba10g?\b", 21.99, "vllm-4242 (23609475072 B)"),
    (r"\bl4\b", 22.05, "pytorch-175666 (22.05)"),
)

# Month -> the vLLM release current then; only used when a case gives no version at all.
RELEASES: dict[str, str] = {
    "2023-09": "0.2.0", "2023-10": "0.2.0", "2023-11": "0.2.2", "2023-12": "0.2.5",
    "2024-01": "0.2.7", "2024-02": "0.3.1", "2024-03": "0.3.3", "2024-04": "0.4.1",
    "2024-05": "0.4.2", "2024-06": "0.5.0", "2024-07": "0.5.2", "2024-08": "0.5.4",
    "2024-09": "0.6.1", "2024-10": "0.6.3", "2024-11": "0.6.4", "2024-12": "0.6.4",
    "2025-01": "0.7.0", "2025-02": "0.7.2", "2025-03": "0.8.0", "2025-04": "0.8.4",
    "2025-05": "0.9.0", "2025-06": "0.9.1", "2025-07": "0.9.2", "2025-08": "0.10.1",
    "2025-09": "0.10.2", "2025-10": "0.11.0", "2025-11": "0.11.1", "2025-12": "0.12.0",
    "2026-01": "0.14.0", "2026-02": "0.15.0", "2026-03": "0.17.0", "2026-04": "0.19.0",
    "2026-05": "0.21.0", "2026-06": "0.22.0", "2026-07": "0.25.0", "2026-08": "0.27.0",
}  # fmt: skip
MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
# vLLM V1 keeps A100s in its small default tier even with 80 GB (facts §3.1: ">= 70 GiB and not
# A100"); memory.default_batching only sees the total, so A100 cases pass these explicitly.
A100_SMALL_TIER = (2048, 256)
V0_LAST, V1_FIRST = "0.7.3", "0.8.0"  # memory.is_v0: V0 below 0.8 (V1 default since 0.8.0)
FALLBACK_VERSION = "0.11.0"


class CaseFileError(Exception):
    """The case file or the config folder cannot be used at all (exit 2)."""


class Skip(Exception):
    """This case cannot be run; the message is the reason (counted in the summary)."""


@dataclass(frozen=True)
class Instance:
    facts: ModelFacts
    util: float | None


@dataclass(frozen=True)
class Prepared:
    case_id: str
    instances: tuple[Instance, ...]
    base: InstanceSpec  # the settings shared by the instances (facts of the first)
    starts: bool | None  # None: outcome unclear, KV numbers only
    kv_gib: tuple[float, ...]  # reported available KV per instance ('a / b'), may be empty
    tokens: int | None
    version: str
    maxlen_refused: bool = False  # max_model_len above the derived limit (plan's check)


@dataclass
class Result:
    case_id: str
    predicted_starts: bool
    actual_starts: bool | None
    error_kind: str | None
    kv_gib: float
    reported_kv_gib: float | None
    kv_error_pct_budget: float | None
    tokens: int
    reported_tokens: int | None
    tokens_error_pct: float | None
    version: str
    estimates: list[Estimate] = field(default_factory=list)

    @property
    def correct(self) -> bool | None:
        if self.actual_starts is None:
            return None
        return self.predicted_starts == self.actual_starts


# ---------------------------------------------------------------- reading the case file


def load_cases(path: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The cases, and the comment written on each case's `vllm_version` line."""
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except OSError as e:
        raise CaseFileError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise CaseFileError(f"{path}: not valid YAML: {e}") from None
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not all(isinstance(c, dict) and "id" in c for c in cases):
        raise CaseFileError(f"{path}: expected `cases:`, a list of records that have an `id`")
    return cases, version_comments(text)


def version_comments(text: str) -> dict[str, str]:
    comments: dict[str, str] = {}
    case_id = None
    for line in text.splitlines():
        if m := re.match(r"\s*- id:\s*(\S+)", line):
            case_id = m.group(1)
        elif case_id and re.match(r"\s*vllm_version:", line) and "#" in line:
            comments[case_id] = line.split("#", 1)[1].strip()
    return comments


# ---------------------------------------------------------------- turning a case into specs


def gpu_total_gib(case: dict[str, Any]) -> float:
    if isinstance(case.get("gpu_mem_gib"), int | float):
        return float(case["gpu_mem_gib"])
    name = str(case.get("gpu") or "").lower()
    for pattern, gib, _source in GPU_TOTALS:
        if re.search(pattern, name):
            return gib
    raise Skip("GPU total unknown")


def stated_version(case: dict[str, Any], comment: str) -> str | None:
    """The version the record or the comment on its version line states, if any."""
    return _version_text(str(case.get("vllm_version") or "")) or _version_text(comment)


def source_key(case: dict[str, Any]) -> str:
    """'vllm-project/vllm#10517' of 'vllm-project/vllm#10517 (comment by ...)': the thread."""
    m = re.match(r"[\w.-]+/[\w.-]+#\d+", str(case.get("source") or ""))
    return m.group(0) if m else str(case.get("id"))


def infer_version(case: dict[str, Any], comment: str, thread: str | None = None) -> str:
    """The version to run a case as (rule in the module doc string); `thread` is the version
    another case of the same source thread states."""
    version = stated_version(case, comment) or thread or _version_by_date(comment, case)
    version = version or FALLBACK_VERSION
    env = json.dumps(case.get("settings") or {})
    if re.search(r"\bV0\b", comment) and parse_version(version) >= parse_version(V1_FIRST):
        return V0_LAST
    v1 = re.search(r"\bV1\b", comment) or "VLLM_USE_V1=1" in env
    if v1 and parse_version(version) < parse_version(V1_FIRST):
        return V1_FIRST
    return version


def _version_text(text: str) -> str | None:
    m = re.search(r"(?:^|~v|\bv)(\d+\.\d+)(\.\d+|\.x)?", text)
    if not m:
        return None
    return m.group(1) + (m.group(2) if m.group(2) and m.group(2) != ".x" else ".0")


def _version_by_date(comment: str, case: dict[str, Any]) -> str | None:
    m = re.search(r"\b(20\d\d)-(\d\d)\b", comment) or re.search(
        r"\b(20\d\d)-(\d\d)-\d\d\b", str(case.get("source") or "")
    )
    month = f"{m.group(1)}-{m.group(2)}" if m else None
    if month is None and (w := re.search(r"\b([A-Z][a-z]+)\w* (20\d\d)\b", comment)):
        number = MONTHS.get(w.group(1)[:3].lower())
        month = f"{w.group(2)}-{number:02d}" if number else None
    return RELEASES.get(month) if month else None


def model_candidates(
    name: str, configs: Path | list[Path], overrides: dict[str, Any] | None = None
) -> list[ModelFacts]:
    """Facts of the named model: its folder in the --configs folders first (in order), then
    gpufleet's catalog; `overrides` (hf_overrides keys such as rope_scaling) re-derive the
    maximum model length from the config with them applied."""
    words = name.split()
    if not words:
        raise Skip("no model")
    if re.search(r"variant|not in excerpt|not stated", name):
        raise Skip("model checkpoint not identified")
    model_id = words[0]
    found: list[ModelFacts] = []
    problem = "no config.json for the model"
    folders = [configs] if isinstance(configs, Path) else configs
    folder = next((f for f in (_config_folder(model_id, d) for d in folders) if f), None)
    if folder is not None:
        try:
            facts = load_model_dir(folder, model_id)
            found.append(_overridden(facts, _read_config(folder), overrides))
        except GpufleetError as e:
            problem = f"config.json unusable ({getattr(e, 'what', e)})"
    if "/" in model_id:
        try:
            facts = find_model(model_id)
            raw = catalog_entry(model_id)["config"] if overrides else None
            found.append(_overridden(facts, raw, overrides))
        except (GpufleetError, OSError):
            pass
    if not found:
        raise Skip(problem)
    return found


def _read_config(folder: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _overridden(
    facts: ModelFacts, raw: dict[str, Any] | None, overrides: dict[str, Any] | None
) -> ModelFacts:
    """The facts with the limit derived from the config with `overrides` applied to the text
    config (vLLM applies --hf-overrides / --rope-scaling before deriving max_model_len)."""
    if not overrides or raw is None:
        return facts
    merged = dict(raw)
    inner = next((k for k in ("thinker_config", "text_config") if isinstance(raw.get(k), dict)),
                 None)  # fmt: skip
    if inner:
        merged[inner] = {**raw[inner], **overrides}
    else:
        merged.update(overrides)
    limit = derived_max_model_len(merged)
    return replace(facts, max_position_embeddings=limit)


def hf_overrides(case: dict[str, Any]) -> dict[str, Any] | None:
    """Config keys the case overrides: settings.rope_scaling (a mapping, or its YAML/JSON text
    as logs print it) and settings.hf_overrides."""
    settings = case.get("settings") or {}
    found: dict[str, Any] = {}
    extra = settings.get("hf_overrides")
    if isinstance(extra, str):
        extra = _mapping(extra)
    if isinstance(extra, dict):
        found.update(extra)
    rope = settings.get("rope_scaling")
    if isinstance(rope, str):
        rope = _mapping(rope)
    if isinstance(rope, dict):
        found["rope_scaling"] = rope
    return found or None


def _mapping(text: str) -> dict[str, Any] | None:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise Skip(f"setting not understood: {text[:40]}") from None
    return value if isinstance(value, dict) else None


def pick_facts(case: dict[str, Any], candidates: list[ModelFacts]) -> ModelFacts:
    """The first candidate that describes the checkpoint the case ran."""
    for facts in candidates:
        try:
            check_quantization(case, facts)
        except Skip:
            continue
        return facts
    check_quantization(case, candidates[0])  # raises the reason
    return candidates[0]


def _config_folder(model_id: str, configs: Path) -> Path | None:
    if "/" in model_id:
        folder = configs / model_id.replace("/", "--", 1)
        return folder if (folder / "config.json").is_file() else None
    hits = [
        d
        for d in configs.iterdir()
        if (d / "config.json").is_file()
        and d.name.split("--", 1)[-1].lower().startswith(model_id.lower())
    ]
    return hits[0] if len(hits) == 1 else None


def instances_of(case: dict[str, Any], configs: Path | list[Path]) -> tuple[Instance, ...]:
    text = str(case.get("model") or "")
    parts = re.split(r"\s+(?:\+|then)\s+", text)
    utils = _utils(case.get("gpu_memory_utilization"))
    count = re.search(r"\((\d+)\b[^)]*instances\)", text)
    if count:
        parts = [parts[0]] * int(count.group(1))
    if case.get("kind") == "colocation" and len(parts) < 2:
        raise Skip("co-location: the other instances are not described")
    if len(utils) == 1:
        utils = utils * len(parts)
    if len(utils) not in (0, len(parts)):
        raise Skip("co-location: one utilization per instance needed")
    found = []
    for i, part in enumerate(parts):
        m = re.search(r"\(util ([\d.]+)\)", part)
        util = float(m.group(1)) if m else (utils[i] if utils else None)
        name = re.sub(r"\(util [\d.]+\)", "", part)
        candidates = model_candidates(name, configs, hf_overrides(case))
        found.append(Instance(pick_facts(case, candidates), util))
    return tuple(found)


def _utils(value: Any) -> list[float]:
    if value is None:
        return []
    try:
        return [float(v) for v in str(value).split("/")]
    except ValueError:
        raise Skip(f"utilization '{value}' not understood") from None


def check_quantization(case: dict[str, Any], facts: ModelFacts) -> str | None:
    """The quantization to pass: the checkpoint's own (None) or online fp8."""
    stated = str(case.get("quantization") or "").split(" ")[0].lower()
    if not stated or stated in ("none", "null"):
        return None
    if facts.checkpoint_quantization:
        return None
    if stated == "fp8" and "checkpoint" not in str(case.get("quantization")):
        return "fp8"
    raise Skip("quantized checkpoint but its config.json has no quantization_config")


def outcome(case: dict[str, Any]) -> bool | None:
    error = (case.get("reported") or {}).get("error")
    kind = case.get("kind")
    if kind in ("ok", "colocation"):
        return None if (error and kind == "ok") else not error
    return False


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def prepare(
    case: dict[str, Any], configs: Path | list[Path], comment: str, thread: str | None = None
) -> Prepared:
    kind = case.get("kind")
    if kind in SKIP_KINDS:
        raise Skip(SKIP_KINDS[kind])
    if kind not in RUN_KINDS:
        raise Skip(f"unknown kind '{kind}'")
    if "simultaneous" in case.get("id", "") or "at once" in str(case.get("notes")):
        raise Skip("concurrent start not modelled")
    instances = instances_of(case, configs)
    if any(i.facts.kv_caveat for i in instances):
        raise Skip("KV layout not modelled exactly (model caveat)")
    if not case.get("max_model_len") and not instances[0].facts.max_position_embeddings:
        raise Skip("max_model_len unknown (not set, not in config.json)")
    try:
        total = gpu_total_gib(case)
    except Skip:
        if kind != "error_maxlen":
            raise
        total = gpu_total_gib({"gpu": ASSUMED_GPU})
    version = infer_version(case, comment, thread)
    base = base_spec(case, instances[0], total, version)
    reported = case.get("reported") or {}
    length = case.get("max_model_len")
    limits = [i.facts.max_position_embeddings for i in instances]
    refused = any(bool(length and limit and length > limit) for limit in limits)
    return Prepared(
        case["id"],
        instances,
        base,
        outcome(case),
        _kv_values(reported.get("available_kv_gib")),
        _tokens(reported, case),
        version,
        refused,
    )


def base_spec(case: dict[str, Any], first: Instance, total: float, version: str) -> InstanceSpec:
    settings = case.get("settings") or {}
    reported = case.get("reported") or {}
    block = settings.get("block_size") or reported.get("block_size") or DEFAULT_BLOCK
    seqs, tokens = settings.get("max_num_seqs"), settings.get("max_num_batched_tokens")
    if A100_SMALL_TIER and "a100" in str(case.get("gpu")).lower() and not is_v0(version):
        tokens, seqs = tokens or A100_SMALL_TIER[0], seqs or A100_SMALL_TIER[1]
    return InstanceSpec(
        facts=first.facts,
        gpu_total_bytes=int(total * GIB),
        gpu_memory_utilization=first.util,
        tensor_parallel_size=int(case.get("tp") or 1),
        dtype=str(case.get("dtype") or "auto").split(" ")[0],  # "float16 (--dtype half)"
        quantization=check_quantization(case, first.facts),
        kv_cache_dtype=case.get("kv_cache_dtype") or "auto",
        max_model_len=case.get("max_model_len"),
        max_num_seqs=seqs,
        max_num_batched_tokens=tokens,
        enforce_eager=bool(settings.get("enforce_eager")),
        vllm_version=version,
        block_size=int(block),
        platform=case_platform(case),
    )


def _kv_values(value: Any) -> tuple[float, ...]:
    if isinstance(value, int | float):
        return (float(value),)
    if isinstance(value, str):
        try:
            return tuple(float(v) for v in value.split("/"))
        except ValueError:
            return ()
    return ()


def _tokens(reported: dict[str, Any], case: dict[str, Any]) -> int | None:
    if isinstance(reported.get("kv_tokens"), int):
        return int(reported["kv_tokens"])
    blocks = reported.get("gpu_blocks")
    if isinstance(blocks, int) and blocks > 0:
        size = reported.get("block_size") or (case.get("settings") or {}).get("block_size")
        return blocks * int(size or DEFAULT_BLOCK)
    return None


# ---------------------------------------------------------------- running


def run_prepared(p: Prepared) -> Result:
    """Start the instances one after another on one GPU; the last one is the case's subject."""
    estimates: list[Estimate] = []
    occupied = 0
    for inst in p.instances:
        spec = replace(p.base, facts=inst.facts, gpu_memory_utilization=inst.util)
        if estimates:
            free = spec.gpu_total_bytes - occupied - baseline_bytes(spec)
            spec = with_free_memory(spec, free)
        est = estimate(spec)
        estimates.append(est)
        occupied += est.used_bytes
    last = estimates[-1]
    kv = last.kv_cache_bytes / GIB
    reported_kv = p.kv_gib[-1] if p.kv_gib else None
    kv_err = None if reported_kv is None else (kv - reported_kv) * GIB / last.budget_bytes * 100
    tok_err = None
    if p.tokens:
        tok_err = (last.kv_tokens - p.tokens) / p.tokens * 100
    return Result(
        p.case_id,
        all(e.starts for e in estimates) and not p.maxlen_refused,
        p.starts,
        MAXLEN_ERROR if p.maxlen_refused else _first_error(estimates),
        kv,
        reported_kv,
        kv_err,
        last.kv_tokens,
        p.tokens,
        tok_err,
        p.version,
        estimates,
    )


def _first_error(estimates: list[Estimate]) -> str | None:
    return next((e.error_kind for e in estimates if e.error_kind), None)


def run_file(
    cases_path: Path | list[Path], configs: Path | list[Path]
) -> dict[str, Any]:
    """Everything the report prints, as plain data (also the --json output). Several case files
    are one set; several config folders are searched in order."""
    folders = [configs] if isinstance(configs, Path) else list(configs)
    for folder in folders:
        if not folder.is_dir():
            raise CaseFileError(
                f"{folder}: not a folder (expected <org>--<name>/config.json inside)"
            )
    paths = [cases_path] if isinstance(cases_path, Path) else list(cases_path)
    cases: list[dict[str, Any]] = []
    comments: dict[str, str] = {}
    for path in paths:
        more, notes = load_cases(path)
        seen = {str(c["id"]) for c in cases}
        if dup := sorted(seen & {str(c["id"]) for c in more}):
            raise CaseFileError(f"{path}: case ids already read from another file: {dup[:3]}")
        cases += more
        comments.update(notes)
    threads: dict[str, str] = {}
    for case in cases:
        stated = stated_version(case, comments.get(case["id"], ""))
        if stated:
            threads.setdefault(source_key(case), stated)
    results: list[Result] = []
    skipped: dict[str, list[str]] = {}
    for case in cases:
        comment = comments.get(case["id"], "")
        try:
            prepared = prepare(case, folders, comment, threads.get(source_key(case)))
            results.append(run_prepared(prepared))
        except Skip as why:
            skipped.setdefault(str(why), []).append(str(case["id"]))
        except (GpufleetError, ValueError, TypeError) as e:  # a field gpufleet cannot take
            reason = f"setting not supported ({getattr(e, 'what', e)})"
            skipped.setdefault(reason, []).append(str(case["id"]))
    weights = [w for case in cases if (w := weights_row(case, folders, comments, threads))]
    return summarize(len(cases), results, skipped, weights)


def case_platform(case: dict[str, Any]) -> str:
    """rocm for AMD GPUs, else cuda (every other GPU the cases name is NVIDIA)."""
    text = f"{case.get('gpu') or ''} {json.dumps(case.get('settings') or {})}".lower()
    return "rocm" if re.search(r"\bmi\d{3}|\bamd\b|rocm|radeon", text) else "cuda"


def weights_row(
    case: dict[str, Any], folders: list[Path], comments: dict[str, str], threads: dict[str, str]
) -> dict[str, Any] | None:
    """Reported vs predicted weights per rank for a case that prints them, whatever its kind."""
    reported = _float((case.get("reported") or {}).get("weights_gib"))
    if reported is None:
        return None
    row: dict[str, Any] = {"id": str(case["id"]), "reported_gib": reported}
    try:
        facts = pick_facts(case, model_candidates(str(case.get("model") or ""), folders))
        comment = comments.get(case["id"], "")
        version = infer_version(case, comment, threads.get(source_key(case)))
        tp = int(case.get("tp") or 1)
        dtype = str(case.get("dtype") or "auto").split(" ")[0]
        quant = check_quantization(case, facts)
        platform = case_platform(case)
        # as memory.estimate calls it: the case's platform and release (MXFP4 padding)
        planner = facts.weight_bytes_per_rank(tp, 1, dtype, quant, platform, version)
        with_case = planner
    except Skip as why:
        return row | {"skipped": str(why)}
    except (GpufleetError, ValueError, TypeError) as e:
        return row | {"skipped": f"setting not supported ({getattr(e, 'what', e)})"}
    return row | {
        "version": version, "platform": platform,
        "planner_gib": round(planner / GIB, 2),
        "planner_error_pct": round((planner / GIB - reported) / reported * 100, 1),
        "case_platform_gib": round(with_case / GIB, 2),
        "case_platform_error_pct": round((with_case / GIB - reported) / reported * 100, 1),
    }  # fmt: skip


def _weights_summary(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    judged = [r for r in rows if key in r]
    within = [r for r in judged if abs(r[key]) <= WEIGHTS_TOLERANCE_PCT]
    worst = max(judged, key=lambda r: abs(r[key]), default=None)
    return {
        "reporting": len(rows), "predicted": len(judged), "within": len(within),
        "worst_pct": worst[key] if worst else None, "worst_id": worst["id"] if worst else None,
    }  # fmt: skip


def summarize(
    n_cases: int, results: list[Result], skipped: dict[str, list[str]],
    weights: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    judged = [r for r in results if r.correct is not None]
    correct = sum(1 for r in judged if r.correct)
    kv = [abs(r.kv_error_pct_budget) for r in results if r.kv_error_pct_budget is not None]
    kv_gib = [abs(r.kv_gib - r.reported_kv_gib) for r in results if r.reported_kv_gib is not None]
    tok = [abs(r.tokens_error_pct) for r in results if r.tokens_error_pct is not None]
    return {
        "cases_in_file": n_cases,
        "cases_run": len(results),
        "skipped": {k: sorted(v) for k, v in sorted(skipped.items())},
        "start_fail": {"correct": correct, "judged": len(judged),
                       "pct": round(100 * correct / len(judged), 1) if judged else None},
        "kv_gib": _stats(kv_gib, 2), "kv_pct_budget": _stats(kv, 1),
        "kv_tokens_pct": _stats(tok, 1),
        "weights": {"planner": _weights_summary(weights or [], "planner_error_pct"),
                    "case_platform": _weights_summary(weights or [], "case_platform_error_pct"),
                    "cases": weights or []},
        "cases": [_row(r) for r in results],
    }  # fmt: skip


def _stats(values: list[float], digits: int) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "worst": None}
    return {
        "n": len(values),
        "median": round(statistics.median(values), digits),
        "worst": round(max(values), digits),
    }


def _row(r: Result) -> dict[str, Any]:
    def rnd(v: float | None, d: int = 2) -> float | None:
        return None if v is None else round(v, d)

    return {
        "id": r.case_id, "version": r.version, "predicted_starts": r.predicted_starts,
        "actual_starts": r.actual_starts, "predicted_error": r.error_kind,
        "kv_gib": rnd(r.kv_gib), "reported_kv_gib": r.reported_kv_gib,
        "kv_error_pct_budget": rnd(r.kv_error_pct_budget, 1), "kv_tokens": r.tokens,
        "reported_tokens": r.reported_tokens, "tokens_error_pct": rnd(r.tokens_error_pct, 1),
    }  # fmt: skip


# ---------------------------------------------------------------- report


def render(s: dict[str, Any]) -> str:
    sf = s["start_fail"]
    lines = [
        f"cases in file: {s['cases_in_file']}",
        f"cases run (usable): {s['cases_run']}",
        f"skipped: {sum(len(v) for v in s['skipped'].values())}",
        *(f"  {len(ids):2d}  {why}" for why, ids in s["skipped"].items()),
        f"start/fail predicted correctly: {sf['correct']}/{sf['judged']} ({sf['pct']} %)",
        _stat_line("available KV error, GiB", s["kv_gib"], ""),
        _stat_line("available KV error, % of budget", s["kv_pct_budget"], " %"),
        _stat_line("KV tokens error", s["kv_tokens_pct"], " %"),
        _weights_line("weights per rank (the case's platform and release)",
                      s["weights"]["planner"]),
        "",
        f"{'case':44} {'ver':7} {'pred':5} {'real':5} {'kv GiB':>7} {'rep':>6} {'err%B':>6} "
        f"{'tokens':>9} {'rep':>9} {'err%':>6}  predicted error",
    ]
    lines += [_table_line(row) for row in s["cases"]]
    lines += _weights_table(s["weights"]["cases"])
    return "\n".join(lines)


def _weights_line(label: str, w: dict[str, Any]) -> str:
    if not w["predicted"]:
        return f"{label}: {w['reporting']} cases report weights, none predicted"
    return (
        f"{label}: {w['reporting']} cases report weights, {w['predicted']} predicted, "
        f"{w['within']} within {WEIGHTS_TOLERANCE_PCT:g} %, worst {w['worst_pct']} % "
        f"({w['worst_id']})"
    )


def _weights_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["", f"{'weights case':44} {'ver':8} {'plat':4} {'rep':>7} {'pred':>7} {'err%':>6} "
             f"{'w/case':>7} {'err%':>6}"]  # fmt: skip
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['id'][:44]:44} {'':8} {'':4} {r['reported_gib']:>7}  "
                         f"skipped: {r['skipped']}")  # fmt: skip
            continue
        lines.append(
            f"{r['id'][:44]:44} {r['version'][:8]:8} {r['platform']:4} {r['reported_gib']:>7} "
            f"{r['planner_gib']:>7} {r['planner_error_pct']:>6} {r['case_platform_gib']:>7} "
            f"{r['case_platform_error_pct']:>6}"
        )
    return lines


def _stat_line(label: str, st: dict[str, Any], unit: str) -> str:
    if not st["n"]:
        return f"{label}: no cases"
    return f"{label} (n={st['n']}): median {st['median']}{unit}, worst {st['worst']}{unit}"


def _table_line(row: dict[str, Any]) -> str:
    def cell(v: Any, width: int) -> str:
        if v is None:
            return "-".rjust(width)
        if isinstance(v, bool):
            return ("start" if v else "fail").rjust(width)
        return str(v).rjust(width)

    actual = row["actual_starts"]
    return (
        f"{row['id'][:44]:44} {row['version']:7} {cell(row['predicted_starts'], 5)} "
        f"{cell(actual, 5) if actual is not None else '    ?'} {cell(row['kv_gib'], 7)} "
        f"{cell(row['reported_kv_gib'], 6)} {cell(row['kv_error_pct_budget'], 6)} "
        f"{cell(row['kv_tokens'], 9)} {cell(row['reported_tokens'], 9)} "
        f"{cell(row['tokens_error_pct'], 6)}  {row['predicted_error'] or ''}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", required=True, type=Path, action="append",
        help="vllm_cases.yaml-style file (repeat for several: read as one set)",
    )
    parser.add_argument(
        "--configs", required=True, type=Path, action="append",
        help="folder of <org>--<name>/config.json (repeat for several: searched in order)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    try:
        summary = run_file(args.cases, args.configs)
    except CaseFileError as e:
        print(f"planner_accuracy: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
