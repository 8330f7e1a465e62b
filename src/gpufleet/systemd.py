"""systemd's file syntax: write values so systemd reads back exactly what was meant, and read
unit and env files the way systemd does.

Writers (render's templates use nothing else for a value that is not a constant):

- `exec_command(words)`: an `Exec*=` command line (systemd.service(5), "Command lines").
- `word_list(words)`, `environment_assignment(key, value)`: the space-separated, quoted list
  settings (`ReadWritePaths=`, `SupplementaryGroups=`, `Environment=`).
- `directive_value(text)`: a verbatim one-line value (`Description=`, `User=`, a comment).
- `env_file_line(key, value)`: one line of an `EnvironmentFile=` (or, `literal=True`, of a
  docker/podman `--env-file`, which takes the rest of the line as it is).

Each refuses with ValueError what no quoting can carry: a newline, a carriage return or a NUL ends
the line (systemd reads `\\r` and NUL as line ends too), a program word with an Exec prefix
(`+` runs it with full privileges). Messages never repeat an env value: it may be a secret.

Readers (systemd 252, Debian 12, as src/shared/conf-parser.c, src/basic/extract-word.c,
src/core/load-fragment.c and src/basic/env-file.c do it) are strict: where systemd would warn and
ignore (an unknown escape, an unbalanced quote, an unresolved specifier) they raise ValueError,
so a test that reads a rendered file back finds any such slip.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass

EXEC_PREFIXES = "@-:+!|"  # systemd.service(5): `-` ignore failure, `+` full privileges, ...
WHITESPACE = " \t\n\r"  # systemd's WHITESPACE: word separators, stripped around values
_LINE_ENDS = {"\n": "a newline", "\r": "a carriage return", "\0": "a NUL byte"}
_BARE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")  # needs no quotes anywhere (no `#`, `;`, `$`)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # POSIX: what systemd keeps in an environment
_ESCAPES = {"\a": "a", "\b": "b", "\t": "t", "\v": "v", "\f": "f"}
_UNESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
              "\\": "\\", '"': '"', "'": "'", "s": " "}

# ---------------------------------------------------------------- writers


def exec_command(words: Sequence[str], *, wrap: Collection[int] = ()) -> str:
    """An Exec*= command line that systemd splits back into exactly `words`.

    Each word is quoted only when it needs it; `%` is doubled (specifiers) and `$` doubled
    (environment substitution) everywhere. The program (first word) must be an absolute,
    normalised path or a plain file name, without an Exec prefix character or `$`. `wrap`: the
    indices of words that start a continued line (readability only).
    """
    if not words:
        raise ValueError("an empty command line")
    for i, word in enumerate(words):
        _refuse_line_ends(word, f"word {i + 1} ({_shown(word)}) of the command line")
    parts = [_program(words[0])]
    for i, word in enumerate(words[1:], start=1):
        parts.append(" \\\n    " if i in wrap else " ")
        parts.append(_quote(word, dollars=True))
    return "".join(parts)


def word_list(words: Sequence[str]) -> str:
    """A list setting (ReadWritePaths=, SupplementaryGroups=, Environment=): words quoted as
    needed, `%` doubled; `$` stays (these settings do not substitute variables)."""
    for word in words:
        _refuse_line_ends(word, f"the word {_shown(word)}")
    return " ".join(_quote(word, dollars=False) for word in words)


def environment_assignment(key: str, value: str) -> str:
    """One `KEY=value` word of an Environment= line."""
    _check_env_name(key)
    _refuse_line_ends(value, f"the value of {key}")
    return _quote(f"{key}={value}", dollars=False)


def directive_value(text: str) -> str:
    """A value systemd takes verbatim up to the line's end (Description=, User=, a comment):
    `%` doubled; control characters, surrounding blanks and a line-continuing backslash refused."""
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            raise ValueError(f"{_shown(text)} holds the control character U+{ord(ch):04X}")
    _refuse_line_ends(text, _shown(text))
    if text != text.strip(" "):
        raise ValueError(f"{_shown(text)} starts or ends with a blank, which systemd strips")
    if (len(text) - len(text.rstrip("\\"))) % 2:
        raise ValueError(f"{_shown(text)} ends with a backslash, which continues the line")
    return text.replace("%", "%%")


def env_file_line(key: str, value: str, *, literal: bool = False) -> str:
    """`KEY=value` as systemd's EnvironmentFile= reads it back unchanged (systemd.exec(5)):
    bare when plain, else single quotes (all verbatim), else double quotes with \\ " ` $ escaped.
    `literal`: for docker/podman --env-file, which keep everything after `=` as it is."""
    _check_env_name(key)
    _refuse_line_ends(value, f"the value of {key}")
    if literal or _BARE.fullmatch(value) or not value:
        return f"{key}={value}"
    if "'" not in value:
        return f"{key}='{value}'"
    return f'{key}="' + re.sub(r'([\\"`$])', r"\\\1", value) + '"'


def _quote(word: str, *, dollars: bool) -> str:
    body = word.replace("%", "%%")
    if dollars:
        body = body.replace("$", "$$")
    if _BARE.fullmatch(word):
        return body
    quote = "'" if '"' in word and "'" not in word else '"'  # the one that needs no escapes
    out = []
    for ch in body:
        if ch in ("\\", quote):
            out.append("\\" + ch)
        elif ch in _ESCAPES:
            out.append("\\" + _ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return quote + "".join(out) + quote


def _program(word: str) -> str:
    """The executable: systemd reads prefixes off it after unquoting, so quotes cannot hide one,
    and it refuses quotes, backslashes and control characters in it (string_is_safe)."""
    what = f"the program {_shown(word)}"
    if not word:
        raise ValueError("the program is empty")
    if word[0] in EXEC_PREFIXES:
        raise ValueError(f"{what} starts with {word[0]!r}, a systemd Exec prefix "
                         f"({EXEC_PREFIXES}: `+` would run it with full privileges)")
    if any(ch in "\"'\\$" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in word):
        raise ValueError(f"{what} holds a quote, backslash, `$` or control character")
    if word.startswith("/"):
        if word == "/" or word.startswith("//") or posixpath.normpath(word) != word:
            raise ValueError(f"{what} is not a normalised absolute path")
        if len(word.encode()) >= 4096 or any(len(p.encode()) > 255 for p in word.split("/")):
            raise ValueError(f"{what} is too long for a path")
    elif "/" in word or word in (".", "..", ";") or len(word.encode()) > 255:
        raise ValueError(f"{what} is neither an absolute path nor a plain file name")
    return _quote(word, dollars=True)


def _refuse_line_ends(text: str, what: str) -> None:
    for ch, name in _LINE_ENDS.items():
        if ch in text:
            raise ValueError(f"{what} holds {name}, which would end the line in a systemd file")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid UTF-8 (an unpaired surrogate)") from None


def _check_env_name(key: str) -> None:
    if not _ENV_NAME.fullmatch(key):
        raise ValueError(f"{_shown(key)} is not an environment variable name "
                         "(letters, digits and _, not starting with a digit)")


def _shown(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


# ---------------------------------------------------------------- readers: unit files


@dataclass(frozen=True)
class Directive:
    """One `Key=Value` of a unit file: the value as the setting's own parser receives it."""

    section: str
    key: str
    value: str
    line: int  # where the (first physical line of the) assignment starts


@dataclass(frozen=True)
class ExecCommand:
    """One command of an Exec*= line: its prefix characters, executable and argv."""

    prefixes: str
    path: str
    argv: tuple[str, ...]


def read_unit(text: str) -> list[Directive]:
    """Sections and assignments, in order, as systemd's config parser reads them: lines end at
    \\n, \\r\\n, \\r or NUL; `#`/`;` lines are comments (also between continued lines); a line
    ending in an unescaped backslash continues on the next, the backslash becoming a blank."""
    lines = re.split(r"\r\n|\r|\n|\0", text.removeprefix("\ufeff"))
    directives: list[Directive] = []
    section: list[str] = []
    continuation: str | None = None
    start = 0
    for number, line in enumerate(lines, start=1):
        if continuation is not None:
            if line.lstrip(WHITESPACE)[:1] in ("#", ";") and line.strip(WHITESPACE):
                continue
            line = continuation + line
        else:
            start = number
        if _ends_escaped(line):
            continuation = line[:-1] + " "
            continue
        continuation = None
        _read_line(line, start, section, directives)
    if continuation is not None:
        _read_line(continuation, start, section, directives)
    return directives


def _ends_escaped(line: str) -> bool:
    escaped = False
    for ch in line:
        escaped = False if escaped else ch == "\\"
    return escaped


def _read_line(line: str, number: int, section: list[str], out: list[Directive]) -> None:
    line = line.strip(WHITESPACE)
    if not line or line[0] in "#;":
        return
    if line[0] == "[":
        if line[-1] != "]":
            raise ValueError(f"line {number}: invalid section header {line!r}")
        section[:] = [line[1:-1]]
        return
    if not section:
        raise ValueError(f"line {number}: assignment outside of a section")
    key, sep, value = line.partition("=")
    if not sep or not key.strip(WHITESPACE):
        raise ValueError(f"line {number}: not a Key=Value assignment: {line!r}")
    out.append(Directive(section[0], key.strip(WHITESPACE), value.strip(WHITESPACE), number))


def read_exec(value: str) -> list[ExecCommand]:
    """An Exec*= value as systemd runs it: words unquoted and unescaped, specifiers resolved
    (`%%` -> `%`), prefixes read off the first word, `;` between commands, `$$` -> `$`."""
    commands: list[ExecCommand] = []
    rest: str | None = value
    while rest:
        first, rest = _extract(rest)
        if first is None:
            break
        if first == ";":
            continue
        prefixes = first[: len(first) - len(first.lstrip(EXEC_PREFIXES))]
        path = resolve_specifiers(first[len(prefixes):])
        argv = [] if "@" in prefixes else [path]
        while rest:
            if rest[0] == ";" and rest[1:2] in ("", *WHITESPACE):
                rest = rest[1:].lstrip(WHITESPACE)
                break
            if rest.startswith("\\;") and rest[2:3] in ("", *WHITESPACE):
                argv.append(";")
                rest = rest[2:].lstrip(WHITESPACE)
                continue
            word, rest = _extract(rest)
            if word is None:
                break
            argv.append(resolve_specifiers(word))
        commands.append(ExecCommand(prefixes, path, tuple(_expand_dollars(a) for a in argv)))
    return commands


def read_words(value: str) -> list[str]:
    """A list setting (ReadWritePaths=, SupplementaryGroups=, Environment=): its words,
    unquoted, unescaped and with specifiers resolved."""
    words: list[str] = []
    rest: str | None = value
    while rest:
        word, rest = _extract(rest)
        if word is None:
            break
        words.append(resolve_specifiers(word))
    return words


def read_environment(value: str) -> dict[str, str]:
    """The assignments of an Environment= line."""
    pairs: dict[str, str] = {}
    for word in read_words(value):
        key, sep, val = word.partition("=")
        if not sep or not _ENV_NAME.fullmatch(key):
            raise ValueError(f"invalid environment assignment {word!r}")
        pairs[key] = val
    return pairs


def resolve_specifiers(text: str) -> str:
    """`%%` -> `%`; any other specifier is refused (render writes none); a stray final `%`
    stays, as in systemd."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "%" and i + 1 < len(text):
            if text[i + 1] != "%":
                raise ValueError(f"unescaped specifier %{text[i + 1]} in {text!r}")
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def _expand_dollars(word: str) -> str:
    """systemd's variable substitution at exec time with no variables: `$$` -> `$`; a `$NAME`
    or `${NAME}` reference is refused (render writes none); any other `$` stays."""
    out, i = [], 0
    while i < len(word):
        if word[i] == "$" and i + 1 < len(word):
            nxt = word[i + 1]
            if nxt == "$":
                i += 1
            elif nxt == "{" or nxt.isascii() and (nxt.isalnum() or nxt == "_"):
                raise ValueError(f"variable reference in {word!r}")
        out.append(word[i])
        i += 1
    return "".join(out)


def _extract(text: str) -> tuple[str | None, str | None]:
    """extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE): the first word and the rest
    (None at the end), strict about escapes and quotes."""
    i, n = 0, len(text)
    while i < n and text[i] in WHITESPACE:
        i += 1
    if i == n:
        return None, None
    out: list[str] = []
    quote = ""
    while True:
        if i == n:
            if quote:
                raise ValueError(f"unbalanced quoting in {text!r}")
            return "".join(out), None
        ch = text[i]
        if ch == "\\":
            if i + 1 == n:
                raise ValueError(f"trailing backslash in {text!r}")
            char, used = _unescape(text, i + 1)
            out.append(char)
            i += 1 + used
        elif quote:
            if ch == quote:
                quote = ""
            else:
                out.append(ch)
            i += 1
        elif ch in "'\"":
            quote = ch
            i += 1
        elif ch in WHITESPACE:
            while i < n and text[i] in WHITESPACE:
                i += 1
            return "".join(out), (text[i:] or None)
        else:
            out.append(ch)
            i += 1


def _unescape(text: str, j: int) -> tuple[str, int]:
    """cunescape_one: the character of the escape at text[j] (after the backslash), and how
    many characters it took. Raw bytes (\\x80 and up) and NUL are refused."""
    ch = text[j]
    if ch in _UNESCAPES:
        return _UNESCAPES[ch], 1
    digits = {"x": (16, 2), "u": (16, 4), "U": (16, 8)}.get(ch)
    if digits is None and ch in "01234567":
        digits, j = (8, 3), j - 1
    if digits is None:
        raise ValueError(f"unknown escape \\{ch} in {text!r}")
    base, count = digits
    code = text[j + 1: j + 1 + count]
    allowed = "01234567" if base == 8 else "0123456789abcdefABCDEF"
    if len(code) != count or any(c not in allowed for c in code):
        raise ValueError(f"invalid escape \\{ch}{code} in {text!r}")
    value = int(code, base)
    byte_escape = ch in "x01234567"
    if value == 0 or (byte_escape and value >= 0x80) or 0xD800 <= value <= 0xDFFF \
            or value > 0x10FFFF:
        raise ValueError(f"escape \\{ch}{code} is NUL, a raw byte or not a character")
    return chr(value), count + (0 if ch in "01234567" else 1)


# ---------------------------------------------------------------- readers: env files


def read_env_file(text: str, *, literal: bool = False) -> dict[str, str]:
    """The variables of an env file as systemd's EnvironmentFile= loads them (parse_env_file:
    `#`/`;` comment lines, quotes and backslashes, blanks trimmed, a NUL ends the file), or with
    `literal` as docker/podman --env-file read it (the rest of the line after `=`, as is)."""
    return _read_literal_env(text) if literal else _read_systemd_env(text.split("\0", 1)[0])


def _read_literal_env(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r").lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.lstrip(" \t\n\v\f\r")
        if not sep or not key or any(c in key for c in " \t\n\v\f\r"):
            raise ValueError(f"line {number}: not a KEY=value line")
        values[key] = value
    return values


def _read_systemd_env(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    state, key, value = "pre_key", "", ""
    key_blank = value_blank = -1  # where trailing blanks of the key / unquoted value begin

    def push() -> None:
        name = key[:key_blank] if key_blank >= 0 else key
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        values[name] = value

    for ch in text:
        newline = ch in "\n\r"
        if state == "pre_key":
            if ch in "#;":
                state = "comment"
            elif ch not in WHITESPACE:
                state, key, key_blank = "key", ch, -1
        elif state == "key":
            if newline:
                state = "pre_key"  # a line without `=` is dropped
            elif ch == "=":
                state, value, value_blank = "pre_value", "", -1
            else:
                if ch not in WHITESPACE:
                    key_blank = -1
                elif key_blank < 0:
                    key_blank = len(key)
                key += ch
        elif state in ("pre_value", "value"):
            if newline:
                if state == "value" and value_blank >= 0:
                    value = value[:value_blank]
                push()
                state = "pre_key"
            elif state == "pre_value" and ch in "'\"":
                state = "single" if ch == "'" else "double"
            elif ch == "\\":
                state, value_blank = "value_escape", -1
            elif state == "value" or ch not in WHITESPACE:
                if ch not in WHITESPACE:
                    value_blank = -1
                elif value_blank < 0:
                    value_blank = len(value)
                state, value = "value", value + ch
        elif state == "value_escape":
            state = "value"
            if not newline:  # an escaped newline is a continuation: eaten
                value += ch
        elif state == "single":
            if ch == "'":
                state = "pre_value"
            else:
                value += ch
        elif state == "double":
            if ch == '"':
                state = "pre_value"
            elif ch == "\\":
                state = "double_escape"
            else:
                value += ch
        elif state == "double_escape":
            state = "double"
            if ch in '"\\`$':
                value += ch
            elif ch != "\n":  # like the shell: other escapes keep their backslash
                value += "\\" + ch
        elif state == "comment":
            if ch == "\\":
                state = "comment_escape"
            elif newline:
                state = "pre_key"
        elif state == "comment_escape":  # before systemd 254 the next line is comment, too
            state = "comment"
    if state in ("pre_value", "value", "value_escape", "single", "double", "double_escape"):
        if state == "value" and value_blank >= 0:
            value = value[:value_blank]
        push()
    return values
