"""Property: one hostile field never changes what a unit *is*.

Take the bundled example fleet (container and venv) and the render fixtures, replace one field
with a hostile string (newlines, \\r, NUL, `%`, `$`, quotes, backslashes, `[Service]`,
`ExecStartPre=...`, `../`, unicode), or a list field (extra_args, a custom command, env) with
hostile words. Then either loading, planning or rendering raises the tool's InputError, or the
units, read back the way systemd reads them, have exactly the sections and directive keys of
the clean twin, the same value for every directive the field does not feed, ExecStart= equal to
the plan's argv (render's launch()), env files that read back as the service's env, and every
file inside --out.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from support import FUZZ_FIXED, INVENTORIES, fuzz_examples
from test_render_hostile import FIXTURES, check_units_mean_the_plan, dump, parsed_unit

from gpufleet import inventory
from gpufleet.commands.render import destinations
from gpufleet.errors import InputError
from gpufleet.plan import Plan, build_plan
from gpufleet.render import RenderedFile, render_host

Data = dict[str, Any]
# Fragments that no quoting carries (the answer must be a refusal) ...
BREAKING = ["\n", "\r", "\0", "\r\n", "\\\n", "\t", "\x7f", "\x85", "\u2028",
            "\nExecStartPre=+/bin/sh -c id", "\nUser=root", "\nConflicts=ssh.service sshd.service"]
# ... and those quoting must carry (or a check refuse) on one line.
QUOTING = ["%", "%n", "%%", "%{x}", "$", "$HOME", "${X}", "$$", '"', "'", "\\", " ", ";", "#",
           "=", "[Service]", "[Unit]", "ExecStartPre=/bin/sh", "../", "../../x", "/",
           "/etc/passwd", "~", "é", "😀", "\ufeff", "+", "-", "@", "!", ":", "|", "`id`", "a", "7"]
PRINTABLE = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=4)
# Plausible starts make some hostile values pass the schema, so both answers get exercised.
STARTS = ["", "", "gpufleet", "/opt/x", "/var/lib/gpufleet/models", "Qwen/Qwen2.5-7B-Instruct",
          "h1", "snap", "--label", "/health", "rocm/vllm:x", "abc"]


def _hostile(fragments: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda start, parts: start + "".join(parts), st.sampled_from(STARTS),
                     st.lists(fragments, min_size=1, max_size=4))


ONE_LINE = _hostile(st.one_of(st.sampled_from(QUOTING), PRINTABLE))
HOSTILE = st.one_of(ONE_LINE, ONE_LINE, _hostile(st.one_of(st.sampled_from(BREAKING),
                                                           st.sampled_from(QUOTING), PRINTABLE)))
WORDS = st.lists(st.one_of(HOSTILE, st.sampled_from(["--flag", "value", "/bin/sh", "-c", ""])),
                 min_size=1, max_size=4)


def _berget(runtime: str) -> Data:
    """The example fleet, plus a custom service (it has none) for the command mutations."""
    data = yaml.safe_load((INVENTORIES / "berget.yml").read_text())
    data["fleet"]["runtime"] = runtime
    data["hosts"][_first_host(data)]["services"].append(
        {"name": "tool", "kind": "custom", "image": "registry.example/tool:1.2", "gpus": [3],
         "port": 9999, "memory_gib": 1.0, "command": ["/usr/local/bin/tool", "--port", "9999"]})
    return data


SOURCES: dict[str, Callable[[], Data]] = {
    "berget": lambda: _berget("container"),
    "berget-venv": lambda: _berget("venv"),
    "fixture-container": lambda: yaml.safe_load((FIXTURES / "container.yml").read_text()),
    "fixture-venv": lambda: yaml.safe_load((FIXTURES / "venv.yml").read_text()),
}


@dataclass(frozen=True)
class Mutation:
    """One field to replace, and the directives whose values it may legitimately change."""

    label: str
    feeds: frozenset[str]
    apply: Callable[[Data, Any], None]
    words: bool = False  # the hostile value is a list of words, not one string


def _first_host(data: Data) -> str:
    return next(iter(data["hosts"]))


def _service(data: Data, kind: str | None = None) -> Data:
    services = data["hosts"][_first_host(data)]["services"]
    return next((s for s in services if kind is None or s["kind"] == kind), services[0])


def _set_service(key: str, kind: str | None = None) -> Callable[[Data, Any], None]:
    return lambda data, value: _service(data, kind).__setitem__(key, value)


def _set_fleet(key: str) -> Callable[[Data, Any], None]:
    return lambda data, value: data["fleet"].__setitem__(key, value)


def _set_setting(key: str) -> Callable[[Data, Any], None]:
    return lambda data, value: data["fleet"].setdefault("settings", {}).__setitem__(key, value)


def _rename_host(data: Data, value: str) -> None:
    first = _first_host(data)
    data["hosts"] = {(value if name == first else name): host
                     for name, host in data["hosts"].items()}


def _env_value(data: Data, value: str) -> None:
    _service(data).setdefault("env", {})["GPUFLEET_T"] = value


def _env_key(data: Data, value: str) -> None:
    _service(data).setdefault("env", {})[value] = "1"


def _secret_key(data: Data, value: str) -> None:
    svc = _service(data)
    svc["secrets"] = {value: next(iter((svc.get("secrets") or {}).values()), "hf_token")}


def _command(data: Data, words: list[str]) -> None:
    _service(data, "custom")["command"] = words


EXEC = frozenset({"ExecStart"})
MUTATIONS = [
    Mutation("fleet.name", frozenset({"Description"}), _set_fleet("name")),
    Mutation("fleet.model_cache", frozenset({"Environment", "ExecStart", "ReadWritePaths"}),
             _set_fleet("model_cache")),
    Mutation("fleet.image", EXEC, _set_fleet("image")),
    Mutation("host name", frozenset({"Description"}), _rename_host),
    Mutation("host address", frozenset(), lambda d, v: d["hosts"][_first_host(d)].__setitem__(
        "address", v)),
    Mutation("service name", frozenset({"Description", "After", "Wants", "ExecStart",
                                        "ExecStartPre", "ExecStop", "EnvironmentFile"}),
             _set_service("name")),
    Mutation("model", frozenset({"Description", "ExecStart"}), _set_service("model", "llm")),
    Mutation("revision", EXEC, _set_service("revision", "llm")),
    Mutation("quantization", EXEC, _set_service("quantization", "llm")),
    Mutation("image", EXEC, _set_service("image", "docling")),
    Mutation("health_path", frozenset({"ExecStartPost"}), _set_service("health_path")),
    Mutation("env value", frozenset(), _env_value),
    Mutation("env key", frozenset(), _env_key),
    Mutation("secret env name", frozenset({"ExecStart", "ExecStartPost"}), _secret_key),
    Mutation("gpufleet_service_user", frozenset({"User", "Group"}),
             _set_setting("gpufleet_service_user")),
    Mutation("gpufleet_venv_dir", EXEC, _set_setting("gpufleet_venv_dir")),
    Mutation("gpufleet_docling_venv_dir", EXEC, _set_setting("gpufleet_docling_venv_dir")),
    Mutation("gpufleet_gpu_groups", frozenset({"SupplementaryGroups"}),
             _set_setting("gpufleet_gpu_groups"), words=True),
    Mutation("gpufleet_unit_read_write_paths", frozenset({"ReadWritePaths"}),
             _set_setting("gpufleet_unit_read_write_paths"), words=True),
    Mutation("extra_args (custom)", EXEC, _set_service("extra_args", "custom"), words=True),
    Mutation("extra_args (llm)", EXEC, _set_service("extra_args", "llm"), words=True),
    Mutation("extra_args (docling)", EXEC, _set_service("extra_args", "docling"), words=True),
    Mutation("command", EXEC, _command, words=True),
]


def pipeline(data: Data) -> tuple[Plan, dict[str, list[RenderedFile]]]:
    plan = build_plan(inventory.loads(dump(data), "fleet.yml"))
    return plan, {h.name: render_host(plan, h.name) for h in plan.hosts}


@cache
def clean_render(source: str) -> dict[str, list[RenderedFile]]:
    return pipeline(SOURCES[source]())[1]


def units_of(files: list[RenderedFile], renames: dict[str, str]) -> dict[str, str]:
    """Unit files by path, with a renamed service's paths mapped back to the clean names."""
    found = {}
    for f in files:
        if f.path.endswith((".service", ".target")):
            path = f.path
            for new, old in renames.items():
                path = path.replace(f"gpufleet-{new}.service", f"gpufleet-{old}.service")
            found[path] = f.content
    return found


def _event(text: str) -> None:
    """A statistic for --hypothesis-show-statistics (how many were refused, how many rendered)."""
    if currently_in_test_context():
        event(text)


def check_against_clean_twin(source: str, mutation: Mutation, data: Data, value: Any) -> None:
    try:
        plan, rendered = pipeline(data)
    except InputError:
        _event(f"{mutation.label}: refused")
        return  # refused with the tool's own error (exit 2): nothing rendered, nothing written
    _event(f"{mutation.label}: rendered")
    clean = clean_render(source)
    hosts = dict(zip(clean, rendered, strict=True))  # clean host name -> rendered host name
    renames = {}
    if mutation.label == "service name":
        renames = {value: _service(SOURCES[source]())["name"]}
    with tempfile.TemporaryDirectory() as out:
        planned = destinations(Path(out), rendered)  # raises if a file would leave --out
        root = Path(out).resolve()
        assert all(p.resolve().is_relative_to(root / host) for host, files in planned.items()
                   for p, _ in files)
    for clean_host, host in hosts.items():
        check_units_mean_the_plan(plan, host, rendered[host])
        ours, twins = units_of(rendered[host], renames), units_of(clean[clean_host], {})
        assert sorted(ours) == sorted(twins), f"{mutation.label}: files differ"
        for path, twin in twins.items():
            got, want = parsed_unit(ours[path]), parsed_unit(twin)
            assert sorted(got) == sorted(want), f"{mutation.label} {value!r}: {path} keys"
            for (section, key), values in want.items():
                if key not in mutation.feeds:
                    assert got[(section, key)] == values, (
                        f"{mutation.label} {value!r} changed {path} {section}.{key}")
                else:
                    assert len(got[(section, key)]) == len(values)


@settings(derandomize=FUZZ_FIXED, max_examples=fuzz_examples(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SOURCES)), st.sampled_from(MUTATIONS), st.data())
def test_one_hostile_field_is_refused_or_changes_only_what_it_feeds(
    source: str, mutation: Mutation, data: st.DataObject
):
    value = data.draw(WORDS if mutation.words else HOSTILE, label="hostile value")
    inv = copy.deepcopy(SOURCES[source]())
    mutation.apply(inv, value)
    check_against_clean_twin(source, mutation, inv, value)


FREE_TEXT = [m for m in MUTATIONS
             if m.label in ("command", "extra_args (custom)", "extra_args (docling)", "env value")]


@settings(derandomize=FUZZ_FIXED, max_examples=fuzz_examples(200), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SOURCES)), st.sampled_from(FREE_TEXT), st.data())
def test_free_text_that_the_schema_accepts_reaches_the_program_exactly(
    source: str, mutation: Mutation, data: st.DataObject
):
    """One-line text (quotes, `%`, `$`, backslashes, `;`, `#`, unicode): mostly accepted, so
    the quoting itself is what keeps the units equal to their twins and ExecStart= exact."""
    one_line = st.lists(st.one_of(ONE_LINE, st.sampled_from(["-x", "--y", "", " "])),
                        min_size=1, max_size=5)
    value = data.draw(one_line if mutation.words else ONE_LINE, label="one-line value")
    if mutation.label == "command":
        value = ["/usr/local/bin/tool", *value]
    inv = copy.deepcopy(SOURCES[source]())
    mutation.apply(inv, value)
    check_against_clean_twin(source, mutation, inv, value)


def test_the_mutations_hit_every_source():
    """Each mutation changes each source (or the source has no such field, then it adds one)."""
    for source, build in SOURCES.items():
        for mutation in MUTATIONS:
            data = build()
            mutation.apply(data, ["x"] if mutation.words else "x")
            assert data != build(), (source, mutation.label)


def test_values_the_schema_accepts_render_as_their_clean_twin():
    """A few mutations that must pass every check: the comparison itself is exercised."""
    for source in SOURCES:
        for label, value in [("env value", "it's \"$x\" \\ %n `id` # é"),
                             ("extra_args (custom)", ["%n", "$HOME", 'a"b', ";", "x\\y", " "]),
                             ("command", ["/usr/local/bin/tool", "--x=%%", "$$", "[Service]"]),
                             ("gpufleet_unit_read_write_paths", ["/run/fakegpu"])]:
            mutation = next(m for m in MUTATIONS if m.label == label)
            data = SOURCES[source]()
            mutation.apply(data, value)
            if mutation.label.startswith(("extra_args (custom)", "command")) and not any(
                    s["kind"] == "custom" for s in data["hosts"][_first_host(data)]["services"]):
                continue
            pipeline(data)  # accepted: no InputError
            check_against_clean_twin(source, mutation, data, value)
