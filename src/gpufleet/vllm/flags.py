"""`vllm serve` flags: which exist, which take a value, and which the plan decides itself.

A service's `extra_args` are parsed against this table, never pasted: an unknown flag is an
input error naming the nearest known ones (vLLM would only say so at startup, after a rollout),
and a flag the plan decides (utilization, lengths, parallelism, host and port, ...) is an error
pointing at the inventory key to set instead, so the plan stays the single source of truth.

The table is every flag of every release read from vLLM's own source (gpufleet.vllm.versions:
data/releases/*.json); whether the fleet's release has a flag is the plan's check
(`missing_in_release`). Spelling follows vLLM's FlexibleArgumentParser: `--max_model_len` is
`--max-model-len`, `--flag=value` is `--flag value`, boolean flags also have a `--no-` form,
JSON-valued flags take dotted sub-keys (`--compilation-config.level 3`) and `-O3` is `-O 3`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpufleet.vllm import knobs, versions

BOOL, VALUE, MANY, JSON = "bool", "value", "many", "json"  # how a flag takes its arguments


def _table() -> tuple[dict[str, str], dict[str, str]]:
    """(canonical flag -> arity, short or alternative spelling -> canonical) over all releases
    read; where releases differ, the newest wins."""
    arity: dict[str, str] = {}
    short: dict[str, str] = {}
    for version in versions.supported():
        release = versions.release(version)
        for name, flag in release.serve_flags.items():
            arity[name] = flag["arity"]
        short.update(release.aliases)
    return arity, short


FLAGS, SHORT = _table()  # canonical `--flag` -> BOOL | VALUE | MANY | JSON; `-tp` -> flag


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
        if head.startswith("-O.") and head not in SHORT:  # -O.level=3: compilation config
            return "--compilation-config", word[3:], False
        if head.startswith("-O") and head not in SHORT and len(head) > 2:  # -O3 is -O 3
            return SHORT.get("-O", "--compilation-config"), word[2:], False
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
    whole = abbreviated(name)
    return (whole, attached, False) if whole else None


def abbreviated(name: str, flags: Iterable[str] | None = None) -> str | None:
    """argparse (and so vLLM) takes an unambiguous prefix of a long flag for the flag:
    `--kv-cache-memory` is `--kv-cache-memory-bytes`."""
    known = list(FLAGS if flags is None else flags)
    if name in known:
        return name
    matches = [flag for flag in known if flag.startswith(name)]
    return matches[0] if len(name) > 3 and len(matches) == 1 else None


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


def release_problems(words: Sequence[str], release: versions.Release) -> list[FlagProblem]:
    """What one release's own parser would refuse in well-formed `vllm serve` words: flags it
    lacks and values outside a flag's choices (read from that release's source)."""
    flags, _ = parse(words)
    problems = []
    for flag in flags:
        word = words[flag.index]
        name = _release_name(word, release)
        if name is None:
            close = difflib.get_close_matches(word.partition("=")[0], release.serve_flags, n=3)
            problems.append(FlagProblem(
                flag.index, f"vLLM {release.version} has no {word.partition('=')[0]} flag "
                "(its serve parser, read from its source)",
                f"did you mean {', '.join(close)}?" if close else "remove it, or use a vLLM "
                "release that has it (fleet.vllm_version)"))
            continue
        choices = release.serve_flags.get(name, {}).get("choices")
        bad = [v for v in flag.values if choices and v not in [str(c) for c in choices]]
        if bad:
            problems.append(FlagProblem(
                flag.index, f"vLLM {release.version}'s {name} takes "
                f"{', '.join(map(str, choices or []))}, not {bad[0]!r}",
                "pick one of its choices"))
    return problems


def _release_name(word: str, release: versions.Release) -> str | None:
    """The flag a word is in this release (its own aliases, prefixes and forms), or None."""
    head = word.partition("=")[0]
    if not head.startswith("--"):
        if head.startswith("-O") and "-O" in release.aliases:
            return release.aliases["-O"]
        return release.aliases.get(head)
    head = "--" + head[2:].replace("_", "-")
    names = [*release.serve_flags, *release.aliases]
    base = head.split(".", 1)[0]
    for candidate in (head, base, "--" + head[5:] if head.startswith("--no-") else None):
        if candidate is None:
            continue
        whole = abbreviated(candidate, names)
        if whole is not None:
            return release.aliases.get(whole, whole)
    return None
