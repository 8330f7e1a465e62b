"""The placed inventory: the operator's file with the decisions written in, by a round-trip YAML
library (ruamel.yaml), so comments, key order, quoting and indentation stay as they were.

Each placed service gets `gpus`, `gpu_memory_utilization` and `tensor_parallel_size` (and
`pipeline_parallel_size` past one stage); services of the top-level `services:` list move to the
end of their host's list (they start last), a replica becomes its own entry, and the keys only
`place` reads (`replicas`, `spread`, `host`) go. Requirements stay: `gpufleet plan` checks them.
"""

from __future__ import annotations

import copy
import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.util import load_yaml_guess_indent

from gpufleet.place import Placed

PLACE_ONLY = ("replicas", "spread", "host")


def placed_text(text: str, placed: list[Placed]) -> str:
    """`text` (the inventory as read) with every placement written in."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long line the operator wrote on one
    # One parse: the guess (a list's indent and its dash's offset) loads with our own YAML;
    # the indent set after it only shapes the dump.
    doc, indent, dash = load_yaml_guess_indent(text, yaml=yaml)
    yaml.indent(mapping=2, sequence=indent or 2, offset=dash or 0)
    originals: dict[tuple[str | int, ...], CommentedMap] = {}
    for p in placed:
        originals.setdefault(p.entry.at, _node(doc, p.entry.at))
    extra: dict[tuple[str, tuple[str | int, ...]], list[CommentedMap]] = {}
    for p in placed:
        source = originals[p.entry.at]
        in_place = p.entry.at[0] == "hosts" and p.replica == 1
        node = source if in_place else copy.deepcopy(source)
        _fill(node, p)
        if not in_place:
            extra.setdefault((p.host, p.entry.at), []).append(node)
    for (host, at), nodes in extra.items():
        services = _services_of(doc, host)
        if at[0] == "hosts":  # replicas right after the service they copy
            position = services.index(originals[at]) + 1
            for k, node in enumerate(nodes):
                services.insert(position + k, node)
        else:
            services.extend(nodes)
    if "services" in doc:
        del doc["services"]
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def _node(doc: Any, at: tuple[str | int, ...]) -> CommentedMap:
    node = doc
    for key in at:
        node = node[key]
    return node  # type: ignore[no-any-return]


def _services_of(doc: Any, host: str) -> CommentedSeq:
    entry = doc["hosts"][host]
    if entry.get("services") is None:
        entry["services"] = CommentedSeq()
    return entry["services"]  # type: ignore[no-any-return]


def _fill(node: CommentedMap, p: Placed) -> None:
    for key in PLACE_ONLY:
        if key in node:
            del node[key]
    _set(node, "name", p.name, after=None)
    _set(node, "port", p.port, after="name")
    gpus = CommentedSeq(p.gpus)
    gpus.fa.set_flow_style()
    if p.moved:
        _set(node, "gpus", gpus, after="model" if "model" in node else "kind")
    if p.sizing.utilization is not None:
        _set(node, "gpu_memory_utilization", p.sizing.utilization, after="port")
    if p.entry.facts is not None and p.moved:
        _set(node, "tensor_parallel_size", p.sizing.tensor_parallel_size, after="gpus")
        if p.sizing.pipeline_parallel_size > 1:
            _set(node, "pipeline_parallel_size", p.sizing.pipeline_parallel_size,
                 after="tensor_parallel_size")


def _set(node: CommentedMap, key: str, value: Any, after: str | None) -> None:
    """Set a key in place when it exists, else insert it after `after` (or at the end)."""
    if key in node:
        if node[key] != value:
            node[key] = value
        return
    keys = list(node.keys())
    position = keys.index(after) + 1 if after in keys else len(keys)
    node.insert(position, key, value)
