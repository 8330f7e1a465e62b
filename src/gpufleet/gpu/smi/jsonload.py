"""JSON that may have been cut off: keep every value that was complete, drop the rest.

An SMI dump pasted into an issue or cut by a full disk ends mid-object. A truncated document still
holds whole GPU entries before the cut; this loader returns them, and says it was truncated, so
the caller can report a partial snapshot instead of failing. A document that is malformed
anywhere but at its end is still an error.
"""

from __future__ import annotations

import json
from typing import Any

_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


class MalformedJson(ValueError):
    pass


def load(text: str) -> tuple[Any, bool]:
    """(value, truncated). Several documents in a row (watch mode) come back as one list."""
    docs: list[Any] = []
    pos = _skip(text, 0)
    while pos < len(text):
        if not _balanced(text, pos):
            docs.append(_Salvage(text).value(pos)[0])
            return (docs[0] if len(docs) == 1 else docs), True
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise MalformedJson(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
        docs.append(value)
        pos = _skip(text, pos)
    if len(docs) == 1:
        return docs[0], False
    if all(isinstance(d, list) for d in docs):
        return [item for d in docs for item in d], False
    return docs, False


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _balanced(text: str, pos: int) -> bool:
    """Whether the container starting at pos closes before the text ends."""
    depth, in_string, escaped = 0, False, False
    for i in range(pos, len(text)):
        ch = text[i]
        if in_string:
            escaped = not escaped and ch == "\\"
            in_string = escaped or ch != '"'
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return True
    return depth == 0 and not in_string


class _Incomplete(Exception):
    pass


class _Salvage:
    """Recursive descent over a cut document; a value reaching the end of text is incomplete."""

    def __init__(self, text: str):
        self.text = text

    def value(self, pos: int) -> tuple[Any, int]:
        pos = _skip(self.text, pos)
        if pos >= len(self.text):
            raise _Incomplete
        ch = self.text[pos]
        if ch == "[":
            return self._list(pos + 1)
        if ch == "{":
            return self._object(pos + 1)
        try:
            value, end = _DECODER.raw_decode(self.text, pos)
        except json.JSONDecodeError as exc:
            raise _Incomplete from exc
        # a number cut at the end ("12" of "1234") parses; only a delimiter proves it whole
        if _skip(self.text, end) >= len(self.text):
            raise _Incomplete
        return value, end

    def _list(self, pos: int) -> tuple[list[Any], int]:
        items: list[Any] = []
        while True:
            pos = _skip(self.text, pos)
            if self.text.startswith("]", pos):
                return items, pos + 1
            try:
                item, pos = self.value(pos)
            except _Incomplete:
                return self._partial(items)
            items.append(item)
            pos = self._comma(pos)
            if pos < 0:
                return self._partial(items)

    def _object(self, pos: int) -> tuple[dict[str, Any], int]:
        obj: dict[str, Any] = {}
        while True:
            pos = _skip(self.text, pos)
            if self.text.startswith("}", pos):
                return obj, pos + 1
            try:
                key, pos = self.value(pos)
                pos = _skip(self.text, pos)
                if not self.text.startswith(":", pos):
                    raise _Incomplete
                obj[str(key)], pos = self.value(pos + 1)
            except _Incomplete:
                return self._partial(obj)
            pos = self._comma(pos)
            if pos < 0:
                return self._partial(obj)

    def _comma(self, pos: int) -> int:
        pos = _skip(self.text, pos)
        if self.text.startswith(",", pos):
            return pos + 1
        if pos < len(self.text) and self.text[pos] in "]}":
            return pos
        return -1

    def _partial(self, container: Any) -> tuple[Any, int]:
        # the container is cut: what it holds is complete, and nothing follows it
        return container, len(self.text)
