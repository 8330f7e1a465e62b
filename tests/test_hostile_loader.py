"""Hostile inventories: whatever the bytes, loading ends in an InputError (exit 2) or succeeds,
fast, with file:line, never a traceback; messages print as plain text, never as rich markup."""

from __future__ import annotations

import codecs
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import FUZZ_FIXED, fuzz_examples, run_cli

from gpufleet import inventory, yamlsource
from gpufleet.errors import InputError
from gpufleet.yamlsource import MAX_FILE_BYTES, load_bytes, load_file, load_text

GOOD = textwrap.dedent("""\
    fleet:
      name: lab
    hosts:
      h1:
        address: h1.test.example
        gpu_count: 2
        services:
          - name: small
            kind: llm
            model: Qwen/Qwen2.5-0.5B-Instruct
            gpus: [0]
            port: 8000
            gpu_memory_utilization: 0.3
            max_model_len: 4096
""")


@pytest.fixture(autouse=True, params=["libyaml", "pure-python"])
def event_source(request, monkeypatch):
    """Every test runs on both event sources: libyaml's (when built in) and PyYAML's own."""
    if request.param == "libyaml" and not yamlsource.USE_LIBYAML:
        pytest.skip("PyYAML is built without libyaml")
    monkeypatch.setattr(yamlsource, "USE_LIBYAML", request.param == "libyaml")
    return request.param


def error_of(text: str) -> InputError:
    with pytest.raises(InputError) as info:
        load_text(text, "inv.yml")
    return info.value


def bytes_error(data: bytes) -> InputError:
    with pytest.raises(InputError) as info:
        load_bytes(data, "inv.yml")
    return info.value


# ---------------------------------------------------------------- aliases


@pytest.mark.parametrize(
    "text",
    ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a\n  b:\n    c: *a\n", "- &x [1, [2, *x]]\n"],
)
def test_recursive_alias_is_an_input_error(text):
    err = error_of(text)
    assert "recursive alias" in err.what
    assert err.where and err.where.startswith("inv.yml:1:")


def billion_laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_stops_fast():
    start = time.monotonic()
    err = error_of(billion_laughs())
    assert time.monotonic() - start < 5
    assert "expand the document by more than" in err.what
    assert err.where and err.where.startswith("inv.yml:")


def test_alias_count_is_bounded():
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * 5000) + "]\n"
    err = error_of(text)
    assert "aliases" in err.what
    assert err.where and err.where.startswith("inv.yml:2:")


def test_deep_nesting_is_bounded():
    err = error_of("a: " + "[" * 100_000)
    assert "nest" in err.what  # libyaml stops at its own limit of 1000, the composer at 32
    err = error_of("".join(f"{' ' * i}k{i}:\n" for i in range(200)))
    assert "nested more than" in err.what


def test_plain_aliases_still_work_and_keep_positions():
    located = load_text("base: &env {A: '1'}\nother: *env\nlist: &l [1, 2]\nagain: *l\n", "i.yml")
    assert located.data == {
        "base": {"A": "1"},
        "other": {"A": "1"},
        "list": [1, 2],
        "again": [1, 2],
    }
    assert located.where(("other",)) == "i.yml:1:7"  # an alias points at its anchor
    assert located.where(("again", 1)) == "i.yml:3:14"


def test_merge_keys_are_refused_clearly():
    err = error_of("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n")
    assert "merge keys" in err.what
    assert err.where == "inv.yml:3:3"


# ---------------------------------------------------------------- tags


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("a: !!python/object:os.system x\n", "!!python/object:os.system"),
        ("a: !!python/object/apply:os.system [echo hi]\n", "!!python/object/apply:os.system"),
        ("a: !!python/name:os.system\n", "!!python/name:os.system"),
        ("a: !!binary aGVsbG8=\n", "!!binary"),
        ("a: !!set {x, y}\n", "!!set"),
        ("a: !!omap [{x: 1}]\n", "!!omap"),
        ("a: !!timestamp 2024-01-01\n", "!!timestamp"),
        ("a: !custom value\n", "!custom"),
        ("%TAG !e! tag:example.com,2000:\n---\na: !e!thing x\n", "tag:example.com,2000:thing"),
    ],
)
def test_tags_outside_the_core_schema_are_refused(text, tag):
    err = error_of(text)
    assert f"YAML tag {tag} is not allowed" in err.what
    assert err.where and err.where.startswith("inv.yml:")
    assert "plain YAML values" in (err.hint or "")


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("a: !!int abc\n", "not a valid int"),
        ("a: !!int ''\n", "not a valid int"),
        ("a: !!float ''\n", "not a valid float"),
        ("a: !!bool maybe\n", "not a valid bool"),
        ("a: !!float x\n", "not a valid float"),
        ("a: !!str [1, 2]\n", "does not apply to a list"),
        ("a: !!map x\n", "does not apply to a plain value"),
        ("a: !!seq {b: 1}\n", "does not apply to a mapping"),
    ],
)
def test_core_tags_on_the_wrong_value(text, what):
    err = error_of(text)
    assert what in err.what
    assert err.where == "inv.yml:1:4"


def test_core_tags_still_work():
    data = load_text("a: !!str 123\nb: !!int '7'\nc: !!float 1\nd: !!null ''\n", "i.yml").data
    assert data == {"a": "123", "b": 7, "c": 1.0, "d": None}


def test_implicit_dates_stay_text():
    assert load_text("rocm: 2024-01-01\n", "i.yml").data == {"rocm": "2024-01-01"}


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "value", [".nan", ".NaN", ".inf", "-.inf", "+.Inf", "1.0e+400", "-1.5e+999"]
)
def test_non_finite_numbers_are_refused(value):
    err = error_of(f"fleet:\n  x: {value}\n")
    assert "not a finite number" in err.what
    assert err.where == "inv.yml:2:6"


@pytest.mark.parametrize("digits", [20, 5000, 100_000])
def test_huge_integers_are_refused(digits):
    start = time.monotonic()
    err = error_of("port: " + "9" * digits + "\n")
    assert time.monotonic() - start < 5
    assert "too large" in err.what
    assert err.where == "inv.yml:1:7"


# ---------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("bom", "name"),
    [
        (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"),
        (codecs.BOM_UTF32_LE, "UTF-32"),
        (codecs.BOM_UTF32_BE, "UTF-32"),
    ],
)
def test_utf16_and_utf32_are_named(bom, name):
    codec = {"UTF-16": "utf-16", "UTF-32": "utf-32"}[name]
    data = bom + "fleet: {name: lab}\n".encode(codec)[len(bom) :]
    err = bytes_error(data)
    assert f"{name} encoded" in err.what
    assert err.where == "inv.yml"
    assert "UTF-8" in (err.hint or "")


def test_utf16_without_bom_points_at_the_nul_byte():
    err = bytes_error("a: 1\n".encode("utf-16-le"))
    assert "NUL" in err.what
    assert err.where == "inv.yml:1:2"


def test_invalid_utf8_names_line_and_byte():
    err = bytes_error(b"fleet:\n  name: caf\xe9\n")
    assert "not valid UTF-8" in err.what and "0xe9" in err.what
    assert err.where == "inv.yml:2:12"


def test_utf8_bom_is_accepted():
    assert load_bytes(codecs.BOM_UTF8 + b"a: 1\n", "i.yml").data == {"a": 1}


@pytest.mark.parametrize(
    ("char", "what"),
    [("\x00", "NUL"), ("\x07", "U+0007"), ("\x1b", "U+001B"), ("\x7f", "U+007F"),
     ("\ud800", "surrogate"), ("\ufffe", "U+FFFE")],
)  # fmt: skip
def test_control_characters_are_located(char, what):
    err = error_of(f"fleet:\n  name: ab{char}c\n")
    assert what in err.what
    assert err.where == "inv.yml:2:11"


def test_file_size_is_capped(tmp_path):
    big = tmp_path / "big.yml"
    big.write_bytes(b"# " + b"x" * MAX_FILE_BYTES + b"\n")
    with pytest.raises(InputError, match="larger than"):
        load_file(big)


def test_folder_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        load_file(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        load_file(tmp_path / "nope.yml")


def test_dev_zero_is_bounded():
    start = time.monotonic()
    with pytest.raises(InputError):
        load_file("/dev/zero")
    assert time.monotonic() - start < 5


# ---------------------------------------------------------------- the CLI: exit 2, no traceback


@pytest.mark.parametrize(
    "text",
    [
        billion_laughs(),
        "a: &a [*a]\n",
        "fleet: !!python/object/apply:os.system [echo pwned]\n",
        "fleet: !!binary aGVsbG8=\n",
        "fleet:\n  name: lab\x00\n",
        "fleet: {name: .nan}\n",
        "fleet: " + "[" * 50_000 + "\n",
    ],
)
def test_plan_exits_2_without_traceback(tmp_path, text):
    path = tmp_path / "inv.yml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = run_cli("plan", str(path))
    assert result.exit_status == 2
    assert result.stderr.startswith("error: ")
    assert str(path) + ":" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "encoded", ["fleet: {name: lab}\n".encode("utf-16"), b"fleet: {name: \xff}\n"]
)
def test_plan_on_other_encodings_exits_2(tmp_path, encoded):
    path = tmp_path / "inv.yml"
    path.write_bytes(encoded)
    result = run_cli("plan", str(path))
    assert result.exit_status == 2
    assert "UTF" in result.stderr


# ---------------------------------------------------------------- messages are plain text


@pytest.mark.parametrize("name", ["[/x]", "[red]", "[bold]big[/bold]", "[/]", "[link=x]y"])
def test_markup_in_an_echoed_value_prints_literally(tmp_path, name):
    path = tmp_path / "inv.yml"
    path.write_text(GOOD.replace("name: small", f"name: '{name}'"), encoding="utf-8")
    result = run_cli("plan", str(path))
    assert result.exit_status == 2
    assert name in result.stderr  # shown as written: not parsed, not swallowed as a style


def test_markup_in_model_and_unknown_key_prints_literally(tmp_path):
    path = tmp_path / "inv.yml"
    text = GOOD.replace("model: Qwen/Qwen2.5-0.5B-Instruct", "model: '[/x][red]acme/m'")
    path.write_text(text, encoding="utf-8")
    result = run_cli("plan", str(path))
    assert result.exit_status == 2
    assert "[/x][red]acme/m" in result.stderr
    path.write_text(GOOD.replace("port: 8000", "'[/bold]': 1\n        port: 8000"))
    result = run_cli("plan", str(path))
    assert result.exit_status == 2
    assert "unknown key '[/bold]'" in result.stderr


def test_markup_in_a_host_name_prints_literally_in_the_plan(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(GOOD.replace("  h1:", "  '[bold]h1[/x]':"), encoding="utf-8")
    result = run_cli("plan", str(path))
    assert result.exit_status == 2  # not a host name; the message shows it literally
    assert "[bold]h1[/x]" in result.stderr


def test_estimate_markup_in_model_id_and_folder(tmp_path):
    result = run_cli("estimate", "--model", "[/x][red]oops")
    assert result.exit_status == 2
    assert "[/x][red]oops" in result.stderr
    result = run_cli("estimate", "--config", str(tmp_path / "[red]missing"))
    assert result.exit_status == 2
    assert "[red]missing" in result.stderr


# ---------------------------------------------------------------- fuzzing


YAMLISH = st.lists(
    st.sampled_from(
        [
            "fleet", "hosts", "name", "services", ":", ": ", " ", "  ", "\n", "- ", "-", "&a ",
            "*a", "&b ", "*b", "!!python/object:os.system ", "!!binary ", "!!set ", "!!int ",
            "!!str ", "!x ", "!", "%TAG ! tag:x,1:\n", "%YAML 1.1\n", "[", "]", "{", "}", ",",
            "'", '"', "#", "---\n", "...\n", "|", ">", "? ", "<<: ", "\t", "\x00", "\x1b",
            "\ufeff", "1e400", ".nan", "-.inf", "0x1F", "0o7", "1_000", "1:30", "9" * 5000,
            "~", "null", "yes", "2024-01-01", "\\u0000", "[/x]", "[red]", "=",
        ]
    ),
    max_size=60,
).map("".join)  # fmt: skip


def _loads_or_input_error(text: str) -> None:
    start = time.monotonic()
    try:
        inventory.loads(text, "fuzz.yml")
    except InputError as exc:
        assert str(exc)  # renders
    assert time.monotonic() - start < 5


@settings(derandomize=FUZZ_FIXED, max_examples=fuzz_examples(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(st.one_of(YAMLISH, st.text(max_size=300)))
def test_fuzz_text_gives_only_input_errors(text):
    _loads_or_input_error(text)


@settings(derandomize=FUZZ_FIXED, max_examples=fuzz_examples(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(st.binary(max_size=300))
def test_fuzz_bytes_gives_only_input_errors(data):
    start = time.monotonic()
    try:
        located = load_bytes(data, "fuzz.yml")
        inventory.loads(data.decode("utf-8"), "fuzz.yml")
        assert located.filename == "fuzz.yml"
    except InputError as exc:
        assert str(exc)
    assert time.monotonic() - start < 5


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(["nan", "inf", "-inf", "1e400", "[/x]", "0", "-1"]),
)  # fmt: skip
KEYS = ["name", "port", "gpus", "gpu_memory_utilization", "max_model_len", "model", "revision",
        "tensor_parallel_size", "kind", "memory_gib", "env", "gpu_count"]  # fmt: skip


@settings(derandomize=FUZZ_FIXED, max_examples=fuzz_examples(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(st.sampled_from(KEYS), st.one_of(SCALARS, st.lists(SCALARS, max_size=3)))
def test_fuzz_values_in_a_valid_inventory(key, value):
    import yaml

    shown = yaml.safe_dump(value, default_flow_style=True, allow_unicode=False).strip()
    shown = shown.removesuffix("\n...").strip()
    text = GOOD.replace("port: 8000", f"port: 8000\n        {key}: {shown}", 1)
    if key == "port":
        text = GOOD.replace("port: 8000", f"port: {shown}", 1)
    _loads_or_input_error(text)


def test_a_fleet_of_a_thousand_hosts_loads():
    """Bounds are sized for real fleets: 1,000 hosts x 12 services is well inside them."""
    service = "{name: s%d, kind: llm, model: m/x, gpus: [%d], port: %d, max_model_len: 4096}"
    lines = ["hosts:"]
    for h in range(1000):
        lines.append(f"  h{h}:\n    address: h{h}.example\n    services:")
        lines += [f"      - {service % (s, s % 8, 8000 + s)}" for s in range(12)]
    located = load_text("\n".join(lines) + "\n", "inv.yml")
    assert len(located.data["hosts"]) == 1000
    assert located.data["hosts"]["h999"]["services"][11]["port"] == 8011


def test_alias_bomb_inside_a_large_file_is_still_bounded():
    """The alias allowance is on top of what the file writes out, not a share of it."""
    padding = "".join(f"p{i}: {i}\n" for i in range(50_000))
    err = error_of(padding + billion_laughs())
    assert "expand the document by more than" in err.what
