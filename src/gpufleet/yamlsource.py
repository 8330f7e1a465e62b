"""YAML loading that remembers where every key and value came from (file:line:column).

Hostile input is expected: whatever the bytes, loading either returns plain data or raises an
InputError that names the file and, where it can, the line. Only UTF-8 text and the plain YAML
core types (strings, numbers, booleans, null, lists, mappings) are accepted; tags that construct
anything else are refused, and aliases are bounded in number, depth and expanded size, so an
alias bomb or a recursive alias fails fast instead of eating the machine.
"""

from __future__ import annotations

import codecs
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.reader import Reader

from gpufleet.bulk import paused_gc
from gpufleet.errors import InputError

Path_ = tuple[str | int, ...]

# Bounds that keep any input fast (the pure-Python parser takes ~50 µs a value) and small.
MAX_FILE_BYTES = 32 << 20  # the 1,000-host benchmark fleet (12 services a host) is ~1.6 MiB
MAX_NODES = 4_000_000  # values as written (that fleet has ~200,000)
MAX_DEPTH = 32  # nesting of lists and mappings (an inventory needs about 7)
MAX_ALIASES = 1_000  # alias references (*name) in one document
MAX_ALIAS_VALUES = 100_000  # values aliases may add: bounds what an alias bomb can build
MAX_INT = 2**63  # integers beyond this are no count, size or port of anything

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("null", "bool", "int", "float", "str")}
_ALLOWED_TAGS = _SCALAR_TAGS | {_CORE + "seq", _CORE + "map"}
_AS_TEXT = {_CORE + "timestamp", _CORE + "value"}  # implicit YAML 1.1 types kept as written
_MERGE = _CORE + "merge"
_TAG_HINT = (
    "only plain YAML values are allowed (strings, numbers, booleans, null, lists, mappings): "
    "remove the tag, or quote the value to make it a string"
)
_ENCODING_HINT = "save the file as UTF-8 (without NUL bytes or control characters)"


@dataclass
class Located:
    """Parsed YAML data plus the position of each value, by its path from the root."""

    data: Any
    filename: str
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_) -> str:
        """`file:line:col` of the deepest known part of `path` (1-based, as editors count)."""
        for cut in range(len(path), -1, -1):
            if (pos := self.positions.get(tuple(path[:cut]))) is not None:
                return f"{self.filename}:{pos[0]}:{pos[1]}"
        return self.filename


def _at(name: str, mark: Any) -> str:
    return f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag


# ---------------------------------------------------------------- composing (text -> nodes)


class _BoundedComposer(yaml.composer.Composer):
    """PyYAML's composer, bounded: explicit tags outside the core schema, too many values or
    aliases and too deep nesting stop composition at the offending line."""

    filename = ""
    aliases = nodes = 0
    _tags: dict[tuple[str, Any], str] | None = None

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        """The resolver's answer for a scalar depends only on its text and style: ask once
        per distinct scalar (a fleet repeats its keys and values thousands of times)."""
        if kind is not yaml.ScalarNode:
            return super().resolve(kind, value, implicit)  # type: ignore[misc]
        if self._tags is None:
            self._tags = {}
        key = (value, implicit)
        tag = self._tags.get(key)
        if tag is None:
            tag = self._tags[key] = super().resolve(kind, value, implicit)  # type: ignore[misc]
        return tag

    def get_single_node(self) -> Any:
        """PyYAML's composition, without recursion: one loop over the parser's events.

        A fleet of 1,000 hosts is ~300,000 events; PyYAML's recursive composer spends ~7 µs
        on each, this loop ~1 µs. The bounds are checked as each event arrives."""
        get = self.get_event  # type: ignore[attr-defined]
        get()  # STREAM-START
        event = get()
        if isinstance(event, yaml.StreamEndEvent):
            return None
        root = self._compose_document(get)
        event = get()
        if not isinstance(event, yaml.StreamEndEvent):
            raise yaml.composer.ComposerError(
                "expected a single document in the stream", root.start_mark,
                "but found another document", event.start_mark)  # fmt: skip
        return root

    def _compose_document(self, get: Any) -> Any:
        anchors: dict[str, Any] = {}  # anchor name -> node
        stack: list[list[Any]] = []  # [collection node, pending mapping key or None]
        while True:
            event = get()
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                node = stack.pop()[0]
                node.end_mark = event.end_mark
            else:
                node = self._node_of(event, anchors, len(stack) + 1)
                if isinstance(node, yaml.CollectionNode) and not isinstance(event, yaml.AliasEvent):
                    stack.append([node, None])
                    continue
            if not stack:
                get()  # DOCUMENT-END
                return node
            parent = stack[-1]
            if isinstance(parent[0], yaml.SequenceNode):
                parent[0].value.append(node)
            elif parent[1] is None:
                parent[1] = node
            else:
                parent[0].value.append((parent[1], node))
                parent[1] = None

    def _node_of(self, event: Any, anchors: dict[str, Any], depth: int) -> yaml.Node:
        """The node an event starts (an alias: the anchored node), after the bounds."""
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise InputError(
                f"more than {MAX_NODES:,} values in one file",
                where=_at(self.filename, event.start_mark),
                hint="an inventory of a large fleet has a few thousand: is this an inventory?",
            )
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise InputError(
                    f"more than {MAX_ALIASES} aliases (*name) in one document",
                    where=_at(self.filename, event.start_mark),
                    hint="write the values out instead of repeating aliases",
                )
            if event.anchor not in anchors:
                mark: Any = event.start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", mark)
            return anchors[event.anchor]
        if depth > MAX_DEPTH:
            raise InputError(
                f"lists and mappings nested more than {MAX_DEPTH} levels deep",
                where=_at(self.filename, event.start_mark),
                hint="an inventory needs only a few levels: check the brackets and indentation",
            )
        node = self._new_node(event)
        if event.anchor is not None:
            if event.anchor in anchors:
                raise yaml.composer.ComposerError(
                    f"found duplicate anchor {event.anchor!r}; first occurrence",
                    anchors[event.anchor].start_mark, "second occurrence", event.start_mark)
            anchors[event.anchor] = node
        return node

    def _new_node(self, event: Any) -> yaml.Node:
        tag = event.tag
        if tag not in (None, "!") and tag not in _ALLOWED_TAGS:
            raise InputError(f"YAML tag {_tag_name(tag)} is not allowed",
                             where=_at(self.filename, event.start_mark),
                             hint=_TAG_HINT)  # fmt: skip
        if isinstance(event, yaml.ScalarEvent):
            if tag in (None, "!"):
                tag = self.resolve(yaml.ScalarNode, event.value, event.implicit)
            marks: tuple[Any, Any] = (event.start_mark, event.end_mark)
            return yaml.ScalarNode(tag, event.value, *marks, style=event.style)
        if isinstance(event, yaml.SequenceStartEvent):
            kind: Any = yaml.SequenceNode
        elif isinstance(event, yaml.MappingStartEvent):
            kind = yaml.MappingNode
        else:  # a stray event means a malformed stream: the parser raises before this
            raise yaml.composer.ComposerError(None, None, f"unexpected {event}",
                                              event.start_mark)  # fmt: skip
        if tag in (None, "!"):
            tag = self.resolve(kind, None, event.implicit)
        return kind(tag, [], event.start_mark, None, flow_style=event.flow_style)  # type: ignore[no-any-return]


class _PyLoader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    _BoundedComposer,
    yaml.constructor.SafeConstructor,
    yaml.resolver.Resolver,
):
    """The pure-Python event source (used when PyYAML has no libyaml)."""

    def __init__(self, stream: str, filename: str):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.filename = filename


try:  # libyaml: scanning and parsing ~10x faster than pure Python
    from yaml.cyaml import CParser as _CParser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _CParser = None  # type: ignore[assignment,misc]
USE_LIBYAML = _CParser is not None

if _CParser is not None:

    class _CLoader(  # libyaml's events, the bounded Python composer above (never libyaml's own
        _BoundedComposer,  # composer: it recurses in C without a depth limit)
        _CParser,
        yaml.constructor.SafeConstructor,
        yaml.resolver.Resolver,
    ):
        def __init__(self, stream: str, filename: str):
            _CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self.filename = filename


def _compose(text: str, filename: str) -> tuple[yaml.Node | None, int]:
    """The document's node tree and how many values it writes out (aliases count once)."""
    if USE_LIBYAML:
        loader: Any = _CLoader(text, filename)
        return loader.get_single_node(), loader.nodes
    loader = _PyLoader(text, filename)
    try:
        return loader.get_single_node(), loader.nodes
    finally:
        loader.dispose()


# ---------------------------------------------------------------- building (nodes -> data)


class _Builder:
    """Plain Python data from the node tree, recording positions. Duplicate keys are errors
    because a second `port:` must not silently win; aliases are expanded with bounds."""

    def __init__(self, name: str, written: int = 0):
        self.name = name
        # Expanding aliases may add only so many values beyond those written out, so the
        # work is bounded by the file's size (which is bounded), never by what aliases multiply.
        self.max_values = written + MAX_ALIAS_VALUES
        self.positions: dict[Path_, tuple[int, int]] = {}
        self.values = 0
        self.scalars: dict[tuple[str, str], Any] = {}  # (tag, text) -> value: each made once
        self.active: set[int] = set()  # collection nodes being built: an alias back is a cycle

    def where(self, node: yaml.Node) -> str:
        return _at(self.name, node.start_mark)

    def walk(self, node: yaml.Node, path: Path_, depth: int = 0) -> Any:
        self.values += 1
        if self.values > self.max_values:
            raise InputError(
                f"aliases expand the document by more than {MAX_ALIAS_VALUES:,} values",
                where=self.where(node),
                hint="aliases (*name) repeat whole subtrees (an alias bomb?): write the values "
                "out or use fewer aliases",
            )
        if depth > MAX_DEPTH:
            raise InputError(
                f"aliases nest lists and mappings more than {MAX_DEPTH} levels deep",
                where=self.where(node),
            )
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if id(node) in self.active:
            raise InputError(
                "recursive alias: a value contains itself",
                where=self.where(node),
                hint="an alias (*name) must not point at a list or mapping that contains it",
            )
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self.expect(node, _CORE + "map", "a mapping")
                return self.mapping(node, path, depth)
            self.expect(node, _CORE + "seq", "a list")
            return [self.walk(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def expect(self, node: yaml.Node, tag: str, what: str) -> None:
        if node.tag != tag:
            raise InputError(f"YAML tag {_tag_name(node.tag)} does not apply to {what}",
                             where=self.where(node), hint=_TAG_HINT)  # fmt: skip

    def mapping(self, node: yaml.MappingNode, path: Path_, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node)
            if key in result:
                raise InputError(
                    f"duplicate key {_shown(key)}",
                    where=self.where(key_node),
                    hint="each key may appear once in a mapping; remove or merge the repeats",
                )
            result[key] = self.walk(value_node, (*path, key), depth + 1)
            self.positions[(*path, key, "<key>")] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
        return result

    def key(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise InputError("a mapping key must be a plain value", where=self.where(node))
        if node.tag == _MERGE:
            raise InputError(
                "YAML merge keys (<<) are not supported",
                where=self.where(node),
                hint="write the keys out (an alias may still stand for a whole value)",
            )
        return self.scalar(node)

    def scalar(self, node: yaml.ScalarNode) -> Any:
        key = (node.tag, node.value)
        if key in self.scalars:  # values are immutable (str, int, float, bool, None)
            return self.scalars[key]
        value = self.scalars[key] = self.construct(node)
        return value

    def construct(self, node: yaml.ScalarNode) -> Any:
        if node.tag in _AS_TEXT or node.tag == _MERGE:
            return node.value  # a date or '=' stays the text it is; '<<' as a value too
        if node.tag not in _SCALAR_TAGS:
            raise InputError(f"YAML tag {_tag_name(node.tag)} does not apply to a plain value",
                             where=self.where(node), hint=_TAG_HINT)  # fmt: skip
        kind = _tag_name(node.tag)[2:]
        if kind in ("int", "float") and len(node.value) > 100:  # before int() meets 4300 digits
            raise InputError(f"the number {_shown(node.value)} is too large",
                             where=self.where(node))  # fmt: skip
        try:
            value = _constructor.yaml_constructors[node.tag](_constructor, node)
        except (ValueError, KeyError, IndexError, TypeError, yaml.YAMLError):
            raise InputError(f"{_shown(node.value)} is not a valid {kind}",
                             where=self.where(node)) from None  # fmt: skip
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(
                f"{_shown(node.value)} is not a finite number",
                where=self.where(node),
                hint="NaN and infinity are never valid here: give a number",
            )
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_INT:
            raise InputError(f"the integer {_shown(node.value)} is too large",
                             where=self.where(node))  # fmt: skip
        return value


# Turns core scalar nodes into Python values; its per-node cache is never used (no leak).
_constructor = yaml.SafeLoader("")


# ---------------------------------------------------------------- text and bytes


def _check_characters(text: str, filename: str) -> None:
    """YAML allows only printable characters: name the first other one and where it is."""
    if len(text) > MAX_FILE_BYTES:
        raise InputError(f"the inventory is larger than {MAX_FILE_BYTES >> 10} KiB",
                         where=filename, hint="an inventory is a few KiB a host")  # fmt: skip
    bad = Reader.NON_PRINTABLE.search(text)
    if bad is None:
        return
    pos = bad.start()
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    char = ord(text[pos])
    what = "a NUL byte" if char == 0 else f"the control character U+{char:04X}"
    if 0xD800 <= char <= 0xDFFF:
        what = f"an unpaired surrogate U+{char:04X}"
    utf16 = "; NUL bytes suggest UTF-16" if char == 0 else ""
    raise InputError(f"{what} is not allowed in YAML", where=f"{filename}:{line}:{column}",
                     hint=_ENCODING_HINT + utf16)  # fmt: skip


def decode(data: bytes, filename: str) -> str:
    """UTF-8 only (a UTF-8 byte-order mark is skipped); other encodings are named."""
    for bom, name in (
        (codecs.BOM_UTF32_LE, "UTF-32"),
        (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"),
    ):
        if data.startswith(bom):
            raise InputError(f"the file is {name} encoded; only UTF-8 is read", where=filename,
                             hint=_ENCODING_HINT)  # fmt: skip
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            where=f"{filename}:{line}:{column}",
            hint=_ENCODING_HINT,
        ) from None
    return text.removeprefix("\ufeff")


def load_text(text: str, filename: str) -> Located:
    """Parse YAML text; every problem becomes an InputError pointing at the line."""
    text = text.removeprefix("\ufeff")
    _check_characters(text, filename)
    try:
        with paused_gc():
            root, written = _compose(text, filename)
            if root is None:
                raise InputError("the file is empty", where=filename,
                                 hint="see the README for the format")  # fmt: skip
            builder = _Builder(filename, written)
            data = builder.walk(root, ())
    except InputError:
        raise
    except yaml.MarkedYAMLError as exc:
        raise InputError(
            f"not valid YAML: {exc.problem or exc}",
            where=_at(filename, exc.problem_mark),
            hint="check indentation and quoting near that line",
        ) from None
    except yaml.YAMLError as exc:  # ReaderError and friends carry no problem_mark
        raise InputError(f"not valid YAML: {exc}", where=filename) from None
    except (RecursionError, MemoryError):
        raise InputError(
            "the YAML is nested too deeply or too large to load",
            where=filename,
            hint="an inventory is a few KiB of plain mappings and lists",
        ) from None
    except (UnicodeError, ValueError) as exc:
        raise InputError(f"not valid YAML: {exc}", where=filename) from None
    return Located(data, filename, builder.positions)


def load_bytes(data: bytes, filename: str) -> Located:
    """Parse the bytes of a YAML file (UTF-8)."""
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"the inventory is larger than {MAX_FILE_BYTES >> 10} KiB",
                         where=filename, hint="an inventory is a few KiB a host")  # fmt: skip
    return load_text(decode(data, filename), filename)


def load_file(path: str | Path) -> Located:
    p = Path(path)
    try:
        if p.is_dir():
            raise InputError(f"{p} is a folder", hint="give the path of an inventory YAML file")
        with p.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # bounded: /dev/zero or a huge file stop here
    except FileNotFoundError:
        raise InputError(f"no such file: {p}", hint="give the path of an inventory YAML") from None
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    except ValueError as exc:  # an embedded NUL in the path
        raise InputError(f"cannot read {_shown(str(p))}: {exc}") from None
    return load_bytes(data, str(p))
