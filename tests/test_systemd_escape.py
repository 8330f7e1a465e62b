"""gpufleet.systemd: writers systemd reads back exactly, and the reader that says so.

Round trips run with hypothesis over arbitrary text (everything but NUL, \\n and \\r, which no
quoting carries); where this machine has systemd, a batch of the same cases is read by systemd
itself (`systemd --test` dumps each parsed command line, the environment.d generator prints
what an env file holds) and must agree with the reader.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import FUZZ_FIXED, fuzz_examples

from gpufleet.systemd import (
    EXEC_PREFIXES,
    Directive,
    ExecCommand,
    directive_value,
    env_file_line,
    environment_assignment,
    exec_command,
    read_env_file,
    read_environment,
    read_exec,
    read_unit,
    read_words,
    resolve_specifiers,
    word_list,
)

HOSTILE = ["\t", " ", "  ", '"', "'", "\\", "\\\\", "\\n", "%", "%%", "%n", "%{x}", "$", "$$",
           "$HOME", "${HOME}", "$(id)", "`id`", ";", "\\;", "#", "=", "[Service]", "ExecStartPre=",
           "+/bin/sh", "-", "@", "!", ":", "|", "../", "é", "😀", "\u2028", "\x7f", "\x85", "\x01",
           "\x0b", "\x0c", "\ufeff", "\u00a0"]
TEXT = st.text(st.characters(blacklist_characters="\n\r\0", blacklist_categories=("Cs",)))
HOSTILE_TEXT = st.lists(st.one_of(st.sampled_from(HOSTILE), TEXT), max_size=6).map("".join)
COMPONENT = st.text(st.characters(blacklist_characters="/\"'\\$\n\r\0",
                                  blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
PROGRAM = st.one_of(
    st.lists(COMPONENT.filter(lambda c: c not in (".", "..")), min_size=1, max_size=4)
    .map(lambda parts: "/" + "/".join(parts)),
    COMPONENT.filter(lambda c: c not in (".", "..", ";") and c[0] not in EXEC_PREFIXES
                     and "/" not in c),
)
ENV_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
HYPOTHESIS = settings(derandomize=FUZZ_FIXED, max_examples=fuzz_examples(300), deadline=None)


def exec_words(value: str) -> tuple[str, ...]:
    """The argv of a one-command Exec*= value (as the unit's parser hands it over)."""
    (command,) = read_exec(value)
    assert command.prefixes == ""
    return command.argv


def exec_line_words(line: str) -> tuple[str, ...]:
    """The argv of an ExecStart= line as written into a unit (continuations and all)."""
    (directive,) = read_unit(f"[Service]\nExecStart={line}\n")
    return exec_words(directive.value)


# ---------------------------------------------------------------- round trips


@HYPOTHESIS
@given(PROGRAM, st.lists(HOSTILE_TEXT, max_size=8), st.sets(st.integers(1, 8)))
def test_exec_command_round_trips(program: str, args: list[str], wrap: set[int]):
    words = [program, *args]
    line = exec_command(words, wrap=wrap)
    assert exec_line_words(line) == tuple(words)
    unit = read_unit(f"[Service]\nExecStart={line}\nRestart=no\n")
    assert [(d.key, exec_words(d.value) if d.key == "ExecStart" else d.value) for d in unit] == [
        ("ExecStart", tuple(words)), ("Restart", "no")]


@HYPOTHESIS
@given(ENV_NAME, HOSTILE_TEXT, st.booleans())
def test_env_file_line_round_trips(key: str, value: str, literal: bool):
    text = f"# comment\nA=1\n{env_file_line(key, value, literal=literal)}\nZZ_=2\n"
    assert read_env_file(text, literal=literal) == {"A": "1", key: value, "ZZ_": "2"}


@HYPOTHESIS
@given(HOSTILE_TEXT)
def test_directive_value_round_trips_or_refuses(text: str):
    try:
        written = directive_value(text)
    except ValueError:
        assert any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in text) \
            or text != text.strip(" ") or text.endswith("\\")
        return
    (description, after) = read_unit(f"[Unit]\nDescription={written}\nAfter=x\n")
    assert (description.key, resolve_specifiers(description.value)) == ("Description", text)
    assert (after.key, after.value) == ("After", "x")  # nothing ran on into the next line


@HYPOTHESIS
@given(st.lists(HOSTILE_TEXT, max_size=6), ENV_NAME, HOSTILE_TEXT)
def test_list_settings_round_trip(words: list[str], key: str, value: str):
    assert read_words(word_list(words)) == words
    assert read_environment(environment_assignment(key, value)) == {key: value}


@HYPOTHESIS
@given(st.lists(HOSTILE_TEXT, min_size=1, max_size=4), st.sampled_from(["\n", "\r", "\0"]),
       st.integers(0, 3))
def test_line_ends_are_refused_everywhere(words: list[str], end: str, at: int):
    words[at % len(words)] += end
    bad = words[at % len(words)]
    for write in (lambda: exec_command(["/bin/x", *words]), lambda: word_list(words),
                  lambda: environment_assignment("K", bad), lambda: directive_value(bad),
                  lambda: env_file_line("K", bad), lambda: env_file_line("K", bad, literal=True)):
        with pytest.raises(ValueError, match="would end the line|control character"):
            write()


# ---------------------------------------------------------------- what the writers refuse


@pytest.mark.parametrize("program", ["+/bin/sh", "-/bin/true", "@/bin/sh", "!/bin/sh", ":/bin/x",
                                     "|/bin/x", "!!/bin/sh", "", "/", "//bin/sh", "/bin/../sh",
                                     "/bin/./sh", "/bin/", "bin/sh", ".", "..", ";",
                                     '/bin/"sh"', "/bin/sh\\", "/bin/$x", "/bin/s\th"])
def test_program_words_that_systemd_would_misread_are_refused(program: str):
    with pytest.raises(ValueError, match="program"):
        exec_command([program, "arg"])


def test_prefix_characters_inside_arguments_are_plain_words():
    line = exec_command(["/usr/bin/env", "+x", "-y", "@z", ";", "!", "|"])
    assert exec_words(line) == ("/usr/bin/env", "+x", "-y", "@z", ";", "!", "|")


@pytest.mark.parametrize("key", ["", "1A", "A-B", "A B", "A=B", "Ä", "A\n"])
def test_env_keys_must_be_posix_names(key: str):
    for write in (lambda: env_file_line(key, "v"), lambda: environment_assignment(key, "v")):
        with pytest.raises(ValueError, match="environment variable name"):
            write()


def test_env_file_messages_never_show_the_value():
    with pytest.raises(ValueError) as info:
        env_file_line("HF_TOKEN", "hf_SECRET\0rest")
    assert "SECRET" not in str(info.value) and "HF_TOKEN" in str(info.value)


def test_directive_value_refuses_what_would_end_or_continue_the_line():
    for text in ["a\nExecStartPre=/bin/sh", "a\rb", "a\0b", "tab\there", "ends\\", " lead",
                 "trail ", "a\u2028b", "a\x85b"]:
        with pytest.raises(ValueError):
            directive_value(text)
    assert directive_value("50% of gpu-01 \\\\") == "50%% of gpu-01 \\\\"


# ---------------------------------------------------------------- readable output


def test_plain_words_stay_unquoted_and_specials_are_doubled():
    assert exec_command(["/opt/v/bin/vllm", "serve", "org/m", "--port", "8000", "a=b,c:d@e+f"]) \
        == "/opt/v/bin/vllm serve org/m --port 8000 a=b,c:d@e+f"
    assert exec_command(["/bin/x", "50%", "$HOME", "a b", "", "{\"k\": 1}", "it's"]) == (
        '/bin/x 50%% "$$HOME" "a b" "" \'{"k": 1}\' "it\'s"')
    assert exec_command(["/bin/x", "a\tb", "\x01"]) == '/bin/x "a\\tb" "\\x01"'
    assert exec_command(["/bin/x", "--a", "1", "--b"], wrap={1, 3}) == (
        "/bin/x \\\n    --a 1 \\\n    --b")
    assert env_file_line("A", "plain") == "A=plain"
    assert env_file_line("A", "") == "A="
    assert env_file_line("A", "two words") == "A='two words'"
    assert env_file_line("A", "it's $x") == 'A="it\'s \\$x"'
    assert environment_assignment("HF_HOME", "/var/lib/x") == "HF_HOME=/var/lib/x"
    assert environment_assignment("A", "$x 50%") == '"A=$x 50%%"'


# ---------------------------------------------------------------- the reader, as systemd reads


def test_reader_sections_comments_and_continuations():
    text = ("# top\n[Unit]\nDescription = a  b \n; c\n[Service]\nExecStart=/bin/x a \\\n"
            "  # skipped inside a continuation\n    b\\\\\nEnvironment=A=1\r\nX=y\rZ=\\\nq\0W=w\n")
    assert read_unit(text) == [
        Directive("Unit", "Description", "a  b", 3),
        Directive("Service", "ExecStart", "/bin/x a      b\\\\", 6),
        Directive("Service", "Environment", "A=1", 9),
        Directive("Service", "X", "y", 10),
        Directive("Service", "Z", "q", 11),
        Directive("Service", "W", "w", 13),
    ]
    assert read_exec("/bin/x a      b\\\\") == [ExecCommand("", "/bin/x", ("/bin/x", "a", "b\\"))]


def test_a_newline_in_a_value_would_start_a_directive():
    """Why line ends are refused: the hostile text becomes a directive of its own."""
    unit = read_unit("[Service]\nUser=gpufleet\nExecStartPre=+/bin/sh -c id\n")
    assert [(d.key, d.value) for d in unit] == [("User", "gpufleet"),
                                               ("ExecStartPre", "+/bin/sh -c id")]
    assert read_exec(unit[1].value)[0].prefixes == "+"


def test_reader_exec_semantics():
    assert read_exec("-/bin/a x ; /bin/b \\; y") == [
        ExecCommand("-", "/bin/a", ("/bin/a", "x")),
        ExecCommand("", "/bin/b", ("/bin/b", ";", "y"))]
    assert read_exec("@/bin/a name 'x y' \"q\\\"\" %%n $$HOME \\x41\\101\\u00e9") == [
        ExecCommand("@", "/bin/a", ("name", "x y", 'q"', "%n", "$HOME", "AAé"))]
    for bad in ["/bin/a %n", "/bin/a $HOME", "/bin/a ${X}", "/bin/a 'open", "/bin/a \\q",
                "/bin/a \\x00", "/bin/a \\xff"]:
        with pytest.raises(ValueError):
            read_exec(bad)


def test_reader_env_file_semantics():
    text = ("# c \\\nSKIPPED=1\n; c\n  A = 1  \nB='x  y' \"z\"\nC=\"a\\\"\\$\\n\"\nD=p\\\nq\n"
            "E\nF=\\ lead\nG=\nH=tail  \nI=a\0J=cut")
    assert read_env_file(text) == {"A": "1", "B": "x  yz", "C": 'a"$\\n', "D": "pq",
                                   "F": " lead", "G": "", "H": "tail", "I": "a"}
    assert read_env_file("A= keep 'this' \nB=x=y\n", literal=True) == {
        "A": " keep 'this' ", "B": "x=y"}


# ---------------------------------------------------------------- systemd itself

SYSTEMD = Path("/usr/lib/systemd/systemd")
ENV_GENERATOR = Path("/usr/lib/systemd/user-environment-generators/"
                     "30-systemd-environment-d-generator")


def _as_unprivileged() -> list[str]:
    """`systemd --test` refuses to run as root: drop to nobody."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to run systemd --test as nobody")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _shell_words(text: str) -> list[str]:
    """Undo systemd's shell_maybe_quote (how its dumps print argv and values)."""
    escapes = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}

    def unescape(m: re.Match[str]) -> str:
        code = m.group(1)
        if re.fullmatch(r"[0-7]{3}", code):
            return chr(int(code, 8))
        if code.startswith("x"):
            return chr(int(code[1:], 16))
        return escapes.get(code, code)

    words = []
    for quoted, bare in re.findall(r'"((?:[^"\\]|\\.)*)"|([^ ]+)', text):
        words.append(bare or re.sub(r"\\([0-7]{3}|x[0-9a-fA-F]{2}|.)", unescape, quoted))
    return words


CROSS_CHECK = [
    ["/bin/echo", "a b", 'c"d', "it's", "both'\"", "50%", "$HOME", "\\", ";", "", "x\ty",
     "é😀", "\x01\x7f", "%n", "\\;", "#x", "a  b ", " lead", "${X}", "$$", "[Service]"],
    ["/opt/my tool/bin/x", "--json", '{"a": [1, 2]}', "--", "-", "+x"],
    ["vllm", "serve", "org/m", "--port", "8000"],
    ["/usr/bin/%%odd", "\u2028", "\x85", "\x0b\x0c", "\ufeff", "a\\", "'", '"'],
]


@pytest.mark.skipif(not SYSTEMD.exists(), reason="needs systemd")
def test_systemd_reads_command_lines_and_environment_as_the_reader(request):
    @settings(derandomize=FUZZ_FIXED, max_examples=fuzz_examples(60), deadline=None)
    @given(PROGRAM.filter(lambda p: p.startswith("/") and p.strip() == p),
           st.lists(HOSTILE_TEXT, max_size=5))
    def collect(program: str, args: list[str]) -> None:
        CASES.append([program, *args])

    CASES: list[list[str]] = [list(c) for c in CROSS_CHECK]
    collect()
    env = [("A", "x y$Z %%\"'\\"), ("B", ""), ("C", " lead and trail ")]
    lines = ["[Unit]", "Description=" + directive_value("cross %check"), "[Service]",
             "Type=oneshot", *(f"ExecStartPre={exec_command(c, wrap={2})}" for c in CASES),
             *(f"Environment={environment_assignment(k, v)}" for k, v in env),
             "ExecStart=/bin/true"]
    text = "\n".join(lines) + "\n"
    # Readable by nobody (pytest's tmp_path is not): a folder of its own under /tmp.
    units = Path(tempfile.mkdtemp(prefix="gpufleet-units-"))
    request.addfinalizer(lambda: shutil.rmtree(units, ignore_errors=True))
    units.chmod(0o755)
    (units / "t.service").write_text(text)
    (units / "t.service").chmod(0o644)
    try:
        dump = subprocess.run(
            [*_as_unprivileged(), str(SYSTEMD), "--test", "--system", "--unit=t.service",
             "--no-pager"], capture_output=True, text=True, timeout=120,
            env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:", "SYSTEMD_LOG_LEVEL": "warning"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"systemd --test did not run: {exc}")
    block = dump.stdout.split("-> Unit t.service:", 1)
    if dump.returncode != 0 or len(block) != 2:
        pytest.skip(f"systemd --test gave no dump here: {dump.stderr.strip()[:200]}")
    ours = block[1].split("\n\t-> Unit ", 1)[0]
    assert "t.service" not in dump.stderr, dump.stderr  # no warning about our unit at all
    got = [_shell_words(line.split("Command Line: ", 1)[1])
           for line in ours.split("\n") if "Command Line: " in line][:-1]  # less ExecStart=
    # systemd substitutes variables only when the command runs: its dump still shows `$$`.
    ours_read = [[w.replace("$", "$$") for w in exec_words(d.value)]
                 for d in read_unit(text) if d.key == "ExecStartPre"]
    assert got == ours_read == [[w.replace("$", "$$") for w in c] for c in CASES]
    environment = [line.split("Environment: ", 1)[1] for line in ours.split("\n")
                   if line.startswith("\t\tEnvironment: ")]
    assert environment == [f"{k}={v}" for k, v in env]
    assert "\t\tDescription: cross %check" in ours


@pytest.mark.skipif(not ENV_GENERATOR.exists(), reason="needs systemd's environment.d generator")
def test_systemd_reads_env_files_as_the_reader(tmp_path: Path):
    """environment.d files use EnvironmentFile='s parser (then expand $VAR: cases avoid `$`)."""
    @settings(derandomize=FUZZ_FIXED, max_examples=fuzz_examples(80), deadline=None)
    @given(HOSTILE_TEXT.filter(lambda v: "$" not in v))
    def collect(value: str) -> None:
        VALUES.append(value)

    VALUES: list[str] = ["", "plain", "two words", "it's", 'a"b', "\\", "tab\there", " lead ",
                         "#not a comment", "x=y", "é😀", "`id`", "\x01\x7f", "\u00a0"]
    collect()
    text = "".join(env_file_line(f"GPUFLEET_T{i}", v) + "\n" for i, v in enumerate(VALUES))
    folder = tmp_path / "environment.d"
    folder.mkdir()
    (folder / "50-t.conf").write_text(text)
    result = subprocess.run([str(ENV_GENERATOR)], capture_output=True, text=True, timeout=60,
                            env={"XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path / "no"),
                                 "XDG_CONFIG_DIRS": str(tmp_path / "no")})
    assert result.returncode == 0, result.stderr
    got = {}
    for line in result.stdout.split("\n"):
        if line.startswith("GPUFLEET_T"):
            key, _, value = line.partition("=")
            got[key] = "".join(_shell_words(value)) if value else ""
    expected = {f"GPUFLEET_T{i}": v for i, v in enumerate(VALUES)}
    assert read_env_file(text) == expected
    # The generator drops values that are empty after parsing and prints the rest quoted.
    assert got == {k: v for k, v in expected.items() if k in got}
    assert len(got) >= len(VALUES) - sum(1 for v in VALUES if not v.strip(" \t"))
