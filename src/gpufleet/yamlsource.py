"""YAML loading that remembers where every key and value came from (file:line:column)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpufleet.errors import InputError

Path_ = tuple[str | int, ...]


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


def _walk(node: yaml.Node, path: Path_, out: dict[Path_, tuple[int, int]], name: str) -> Any:
    """Build plain Python data from the node tree, recording positions; duplicate keys are
    errors because a second `port:` must not silently win."""
    out[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, name)
            if key in result:
                line = key_node.start_mark.line + 1
                raise InputError(
                    f"duplicate key {key!r}",
                    where=f"{name}:{line}:{key_node.start_mark.column + 1}",
                    hint="each key may appear once in a mapping; remove or merge the repeats",
                )
            result[key] = _walk(value_node, (*path, key), out, name)
            out[(*path, key, "<key>")] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, (*path, i), out, name) for i, item in enumerate(node.value)]
    return _scalar(node, name)


def _scalar(node: yaml.Node, name: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        line = node.start_mark.line + 1
        raise InputError("a mapping key must be a plain value", where=f"{name}:{line}")
    return _constructor.construct_object(node, deep=True)


_constructor = yaml.SafeLoader("")  # used only to turn scalar nodes into Python values


def load_text(text: str, filename: str) -> Located:
    """Parse YAML text; syntax errors become InputErrors pointing at the line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        raise InputError(
            f"not valid YAML: {exc.problem or exc}",
            where=where,
            hint="check indentation and quoting near that line",
        ) from None
    if root is None:
        raise InputError("the file is empty", where=filename, hint="see the README for the format")
    positions: dict[Path_, tuple[int, int]] = {}
    return Located(_walk(root, (), positions, filename), filename, positions)


def load_file(path: str | Path) -> Located:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"no such file: {p}", hint="give the path of an inventory YAML") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {p}: {exc}") from None
    return load_text(text, str(p))
