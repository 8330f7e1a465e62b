#!/usr/bin/env python3
"""Read each supported vLLM release's Python source statically and write one data file per release.

The source is never imported: vLLM needs torch/CUDA to import, and what we want (the serve
parser, config defaults, memory semantics) is decided by code we can read. The serve parser is
reproduced by a small abstract interpreter over the functions that build it, and `get_kwargs`
(vLLM's dataclass-field -> argparse kwargs mapping) is emulated from the field annotations,
with the version-specific branches detected in that release's own `_compute_kwargs`.

    python tools/read_vllm_source.py [--versions V ...] [--cache DIR] [--out DIR] [--check]
    python tools/read_vllm_source.py --sdist vllm-0.34.0.tar.gz    # or --wheel vllm-...whl

Stdlib only. Output: src/gpufleet/vllm/data/releases/<version>.json (sorted keys, indent 1).
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import json
import re
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_VERSIONS = [  # every minor line from 0.19 on, and both sides of each boundary
    "0.10.0", "0.10.1.1", "0.10.2", "0.11.0", "0.11.2", "0.12.0", "0.13.0", "0.14.1", "0.16.0",
    "0.17.1", "0.18.1", "0.19.0", "0.19.1", "0.20.0",
    "0.20.2", "0.21.0", "0.22.1", "0.23.0", "0.24.0", "0.25.1", "0.26.0", "0.27.1", "0.28.0",
    "0.29.0", "0.30.0", "0.31.0", "0.32.0", "0.33.0", "0.34.0",
]
INDEX_URL = "https://pypi.org/simple/vllm/"
INDEX_ACCEPT = "application/vnd.pypi.simple.v1+json"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "src" / "gpufleet" / "vllm" / "data" / "releases"
DEFAULT_CACHE = Path.home() / ".cache" / "gpufleet" / "vllm-source"
READ_BY = "tools/read_vllm_source.py"


# --------------------------------------------------------------------------- source access


class SourceError(Exception):
    """The release cannot be read (missing file, bad hash, unexpected layout)."""


@dataclass
class Source:
    """All `vllm/**.py` files of one release, keyed by path relative to the archive root."""

    file: str
    sha256: str
    texts: dict[str, str]
    _trees: dict[str, ast.Module] = field(default_factory=dict)

    def text(self, path: str) -> str | None:
        return self.texts.get(path)

    def tree(self, path: str) -> ast.Module | None:
        if path not in self._trees:
            text = self.texts.get(path)
            if text is None:
                return None
            self._trees[path] = ast.parse(text, filename=path)
        return self._trees[path]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Not Python, but where a release says which ROCm it is built for (sdists only; a wheel has
# neither, so a wheel's data file has no `rocm` facts).
ROCM_FILES = ("docker/Dockerfile.rocm_base",
              "docs/getting_started/installation/gpu.rocm.inc.md")


def load_archive(path: Path) -> Source:
    """Read the .py members of an sdist (tar.gz, `vllm-X/` prefix) or a wheel (zip, no prefix)."""
    texts: dict[str, str] = {}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.startswith("vllm/") and name.endswith(".py"):
                    texts[name] = zf.read(name).decode("utf-8", "replace")
    else:
        with tarfile.open(path, "r:*") as tf:
            for member in tf:
                # sdist members look like vllm-0.33.0/vllm/config/cache.py
                parts = member.name.split("/", 1)
                if member.isfile() and len(parts) == 2 and (
                        (parts[1].startswith("vllm/") and parts[1].endswith(".py"))
                        or parts[1] in ROCM_FILES):
                    fh = tf.extractfile(member)
                    if fh is not None:
                        texts[parts[1]] = fh.read().decode("utf-8", "replace")
    if "vllm/engine/arg_utils.py" not in texts:
        raise SourceError(f"{path.name}: no vllm/engine/arg_utils.py inside")
    return Source(file=path.name, sha256=_sha256(path), texts=texts)


@functools.lru_cache(maxsize=1)
def _index_files() -> tuple[dict[str, Any], ...]:
    req = urllib.request.Request(INDEX_URL, headers={"Accept": INDEX_ACCEPT})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return tuple(json.load(resp)["files"])


def index_entry(version: str) -> dict[str, Any]:
    """The simple-index JSON entry of the release's sdist (url, hashes)."""
    files = _index_files()
    wanted = f"vllm-{version}.tar.gz"
    for entry in files:
        if entry["filename"] == wanted:
            return entry
    raise SourceError(f"{wanted} is not on {INDEX_URL}")


def fetch_sdist(version: str, cache: Path) -> Path:
    """Download the sdist into the cache (once) and verify it against the index's sha256."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"vllm-{version}.tar.gz"
    entry = index_entry(version)
    want = entry["hashes"]["sha256"]
    if target.exists() and _sha256(target) == want:
        return target
    partial = target.with_suffix(".part")
    with urllib.request.urlopen(entry["url"], timeout=600) as resp, partial.open("wb") as fh:
        while chunk := resp.read(1 << 20):
            fh.write(chunk)
    if _sha256(partial) != want:
        partial.unlink()
        raise SourceError(f"{target.name}: sha256 mismatch with the index")
    partial.replace(target)
    return target


# --------------------------------------------------------------------------- module symbols


def module_path(dotted: str, src: Source) -> str | None:
    base = dotted.replace(".", "/")
    for cand in (base + ".py", base + "/__init__.py"):
        if cand in src.texts:
            return cand
    return None


def _resolve_relative(path: str, level: int, module: str | None) -> str:
    pkg = path[: -len(".py")].split("/")
    if not path.endswith("__init__.py"):
        pkg = pkg[:-1]
    else:
        pkg = pkg[:-1]
    if level > 1:
        pkg = pkg[: len(pkg) - (level - 1)]
    return ".".join(pkg + ([module] if module else []))


@dataclass(frozen=True)
class Sym:
    """A name outside what we interpret (stdlib, torch, builtins): kept by its dotted name."""

    name: str


@dataclass(frozen=True)
class ModRef:
    name: str


@dataclass(frozen=True, eq=False)
class ClassRef:
    path: str
    node: ast.ClassDef

    @property
    def name(self) -> str:
        return self.node.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassRef) and other.node is self.node

    def __hash__(self) -> int:
        return hash((self.path, self.node.lineno))


@dataclass(frozen=True)
class FuncRef:
    path: str
    node: ast.FunctionDef = field(compare=False, hash=False)
    owner: ClassRef | None = None      # class whose body defines it (for super())
    bound: Any = None                  # cls for classmethods


@dataclass(frozen=True)
class ValueRef:
    """A module- or class-level assignment, evaluated lazily where it is used."""

    path: str
    node: ast.expr = field(compare=False, hash=False)


class Unknown:
    """A value the static reading cannot determine; `why` ends up in evidence."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return f"Unknown({self.why})"


BUILTIN_NAMES = {"int", "float", "str", "bool", "dict", "list", "tuple", "set", "bytes",
                 "object", "type", "len", "sorted", "any", "all", "isinstance", "print",
                 "super"}


class Symbols:
    """Top-level names of the release's modules, with imports followed inside `vllm`."""

    def __init__(self, src: Source) -> None:
        self.src = src
        self._tables: dict[str, dict[str, Any]] = {}
        # names bound only for type checkers (`if TYPE_CHECKING:`), kept for known_values
        self.typing_only: dict[str, dict[str, Any]] = {}

    def table(self, path: str) -> dict[str, Any]:
        if path not in self._tables:
            self._tables[path] = {}
            tree = self.src.tree(path)
            if tree is not None:
                self._fill(path, tree.body, self._tables[path])
        return self._tables[path]

    def _fill(self, path: str, body: list[ast.stmt], tab: dict[str, Any]) -> None:
        for node in body:
            if isinstance(node, ast.ImportFrom):
                base = (_resolve_relative(path, node.level, node.module) if node.level
                        else node.module or "")
                for alias in node.names:
                    if alias.name == "*":
                        tab.setdefault("*", []).append(base)
                    else:
                        tab[alias.asname or alias.name] = ("from", base, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        tab[alias.asname] = ("import", alias.name)
                    else:
                        top = alias.name.split(".")[0]
                        tab[top] = ("import", top)
            elif isinstance(node, ast.ClassDef):
                tab[node.name] = ClassRef(path, node)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                tab[node.name] = FuncRef(path, node)  # type: ignore[arg-type]
            elif isinstance(node, ast.Assign):
                for tgt in node.targets:
                    if isinstance(tgt, ast.Name):
                        tab[tgt.id] = ValueRef(path, node.value)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if node.value is not None:
                    tab[node.target.id] = ValueRef(path, node.value)
            elif hasattr(ast, "TypeAlias") and isinstance(node, ast.TypeAlias):
                tab[node.name.id] = ValueRef(path, node.value)
            elif isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
                checker: dict[str, Any] = {}
                self._fill(path, node.body, checker)
                self.typing_only.setdefault(path, {}).update(checker)
                tab.update(checker)
                self._fill(path, node.orelse, tab)  # the runtime binding wins
            elif isinstance(node, ast.If | ast.Try):
                # try/except ImportError blocks still define names
                self._fill(path, node.body, tab)
                for extra in getattr(node, "orelse", []), getattr(node, "handlers", []):
                    for sub in extra:
                        self._fill(path, sub.body if isinstance(sub, ast.ExceptHandler)
                                   else [sub], tab)

    def lookup(self, path: str, name: str, depth: int = 0) -> Any:
        """What `name` means at the top level of module `path`; None when undefined."""
        if depth > 12:
            return None
        entry = self.table(path).get(name)
        if entry is None:
            for star in self.table(path).get("*", []):
                p = module_path(star, self.src)
                if p and (hit := self.lookup(p, name, depth + 1)) is not None:
                    return hit
            return Sym(f"builtins.{name}") if name in BUILTIN_NAMES else None
        if isinstance(entry, tuple):
            return self._import(entry, depth)
        return entry

    def _import(self, entry: tuple, depth: int) -> Any:
        if entry[0] == "import":
            return self.module(entry[1])
        _, base, name = entry
        sub = module_path(f"{base}.{name}", self.src)
        if sub is not None:
            return ModRef(f"{base}.{name}")
        p = module_path(base, self.src)
        if p is None:
            return Sym(f"{base}.{name}")
        hit = self.lookup(p, name, depth + 1)
        return hit if hit is not None else Sym(f"{base}.{name}")

    def module(self, dotted: str) -> Any:
        return ModRef(dotted) if module_path(dotted, self.src) else Sym(dotted)

    def attr(self, base: Any, name: str) -> Any:
        """`base.name` for modules, classes (own body, then bases) and external symbols."""
        if isinstance(base, ModRef):
            sub = module_path(f"{base.name}.{name}", self.src)
            p = module_path(base.name, self.src)
            hit = self.lookup(p, name) if p else None
            if hit is None and sub:
                return ModRef(f"{base.name}.{name}")
            return hit if hit is not None else Unknown(f"{base.name}.{name}")
        if isinstance(base, ClassRef):
            for cls in self.mro(base):
                hit = class_member(cls, name)
                if hit is not None:
                    return hit
            return Unknown(f"{base.name}.{name}")
        if isinstance(base, Sym):
            return Sym(f"{base.name}.{name}")
        return Unknown(f"attribute {name}")

    def mro(self, cls: ClassRef) -> list[ClassRef]:
        """The class then its bases depth-first (good enough for vLLM's single inheritance)."""
        out: list[ClassRef] = []
        todo = [cls]
        while todo:
            cur = todo.pop(0)
            if cur in out:
                continue
            out.append(cur)
            for base in cur.node.bases:
                ref = self.resolve_expr(cur.path, base)
                if isinstance(ref, ClassRef):
                    todo.append(ref)
        return out

    def resolve_expr(self, path: str, node: ast.expr) -> Any:
        """Resolve a Name / dotted Attribute to a symbol (no evaluation of calls)."""
        if isinstance(node, ast.Name):
            return self.lookup(path, node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve_expr(path, node.value)
            return self.attr(base, node.attr) if base is not None else None
        if isinstance(node, ast.Subscript):
            return self.resolve_expr(path, node.value)
        return None


def class_member(cls: ClassRef, name: str) -> Any:
    for node in cls.node.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return FuncRef(cls.path, node, owner=cls)  # type: ignore[arg-type]
        if isinstance(node, ast.Assign):
            for tgt in node.targets:
                if isinstance(tgt, ast.Name) and tgt.id == name:
                    return ValueRef(cls.path, node.value)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and node.target.id == name and node.value is not None:
            return ValueRef(cls.path, node.value)
        if isinstance(node, ast.ClassDef) and node.name == name:
            return ClassRef(cls.path, node)
    return None


# --------------------------------------------------------------------------- type hints


@dataclass(frozen=True)
class Hint:
    """One member of a field's flattened type-hint set, as vLLM's `get_type_hints` sees it.

    kind: "type" (name is int/float/str/bool/dict/list/tuple/set/NoneType/...), "literal"
    (values), "dataclass" (name), "other" (anything else). `builtin` mirrors vLLM's
    `is_not_builtin` test (typing.List / Literal / Any / classes are not builtins).
    """

    kind: str
    name: str = ""
    args: tuple = ()
    builtin: bool = True


NONE_HINT = Hint("type", "NoneType")
TYPING_WRAPPERS = {"Annotated", "SkipValidation", "Required", "NotRequired", "Final"}
TYPING_COLLECTIONS = {"List": "list", "Dict": "dict", "Tuple": "tuple", "Set": "set",
                      "FrozenSet": "set", "Sequence": "other", "Mapping": "other"}
TYPING_MODULES = ("typing.", "typing_extensions.", "collections.abc.", "pydantic.",
                  "pydantic.functional_validators.")


@dataclass
class HintFeatures:
    """Branches of this release's `_compute_kwargs` that change the mapping (see _features)."""

    pep604: bool = True             # get_type_hints flattens `X | Y` (UnionType)
    literal_metavar: bool = True    # Literal + str -> metavar (free-form), not choices
    sets: bool = True               # set[...] fields become nargs="+"
    optional_valued: bool = True    # bool | str | None -> nargs="?", const=True
    dict_subclass: bool = True      # subclasses of dict are treated as dict
    human_ints: frozenset = frozenset({"max_model_len", "max_num_batched_tokens"})


class Hints:
    """Turn annotation AST nodes into sets of Hint, following aliases across modules."""

    def __init__(self, syms: Symbols, feats: HintFeatures) -> None:
        self.syms = syms
        self.feats = feats

    def of(self, path: str, node: ast.expr | None, depth: int = 0) -> frozenset[Hint]:
        if node is None or depth > 20:
            return frozenset({Hint("other", "?", builtin=False)})
        if isinstance(node, ast.Constant):
            if node.value is None:
                return frozenset({NONE_HINT})
            if isinstance(node.value, str):  # forward reference
                try:
                    return self.of(path, ast.parse(node.value, mode="eval").body, depth + 1)
                except SyntaxError:
                    return frozenset({Hint("other", node.value, builtin=False)})
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            if not self.feats.pep604:
                return frozenset({Hint("other", "UnionType", builtin=False)})
            return self.of(path, node.left, depth + 1) | self.of(path, node.right, depth + 1)
        if isinstance(node, ast.Subscript):
            return self._subscript(path, node, depth)
        return self._named(path, node, depth)

    def _typing_name(self, ref: Any) -> str | None:
        if isinstance(ref, Sym) and ref.name.startswith(TYPING_MODULES):
            return ref.name.rsplit(".", 1)[1]
        return None

    def _subscript(self, path: str, node: ast.Subscript, depth: int) -> frozenset[Hint]:
        head = self.syms.resolve_expr(path, node.value)
        tname = self._typing_name(head)
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if tname in TYPING_WRAPPERS:
            return self.of(path, items[0], depth + 1)
        if tname == "Optional":
            return self.of(path, items[0], depth + 1) | {NONE_HINT}
        if tname == "Union":
            out: frozenset[Hint] = frozenset()
            for item in items:
                out |= self.of(path, item, depth + 1)
            return out
        if tname == "Literal":
            return frozenset({Hint("literal", args=tuple(self.literal_values(path, items)),
                                   builtin=False)})
        if isinstance(head, Sym) and head.name.startswith("builtins."):
            name = head.name.split(".", 1)[1]
            return frozenset({Hint("type", name, self._elems(path, items, depth))})
        if tname in TYPING_COLLECTIONS:
            return frozenset({Hint("type", TYPING_COLLECTIONS[tname],
                                   self._elems(path, items, depth), builtin=False)})
        if isinstance(head, ValueRef):  # a generic alias used with parameters
            return self.of(head.path, head.node, depth + 1)
        return frozenset({Hint("other", ast.unparse(node), builtin=False)})

    def _elems(self, path: str, items: list[ast.expr], depth: int) -> tuple:
        elems = []
        for item in items:
            if isinstance(item, ast.Constant) and item.value is Ellipsis:
                elems.append("...")
            else:
                elems.append(self.of(path, item, depth + 1))
        return tuple(elems)

    def literal_values(self, path: str, items: list[ast.expr]) -> list[Any]:
        """Flatten Literal[...] members; nested Literal aliases contribute their members."""
        values: list[Any] = []
        for item in items:
            if isinstance(item, ast.Constant):
                values.append(item.value)
                continue
            for hint in self.of(path, item):
                if hint.kind == "literal":
                    values.extend(hint.args)
                else:
                    values.append(Unknown(ast.unparse(item)))
        return values

    def _named(self, path: str, node: ast.expr, depth: int) -> frozenset[Hint]:
        runtime = self._named_runtime(path, node, depth)
        checker = self.syms.typing_only.get(path, {}).get(getattr(node, "id", ""))
        if checker is None or depth > 10:
            return runtime
        # `if TYPE_CHECKING: X = Literal[...]  else: X = str`: argparse sees str, but the
        # Literal members are the values vLLM documents; keep them as typing-only hints.
        hit = self.syms._import(checker, 0) if isinstance(checker, tuple) else checker
        if isinstance(hit, ValueRef):
            extra = {Hint("literal", "typing_only", h.args, False)
                     for h in self.of(hit.path, hit.node, depth + 1) if h.kind == "literal"}
            return runtime | extra
        return runtime

    def _named_runtime(self, path: str, node: ast.expr, depth: int) -> frozenset[Hint]:
        ref = self.syms.resolve_expr(path, node)
        text = ast.unparse(node)
        if isinstance(ref, Sym):
            if ref.name.startswith("builtins."):
                return frozenset({Hint("type", ref.name.split(".", 1)[1])})
            tname = self._typing_name(ref)
            if tname in TYPING_COLLECTIONS:
                return frozenset({Hint("type", TYPING_COLLECTIONS[tname], builtin=False)})
            return frozenset({Hint("other", ref.name, builtin=False)})
        if isinstance(ref, ValueRef):
            return self.of(ref.path, ref.node, depth + 1)
        if isinstance(ref, ClassRef):
            return frozenset({self.class_hint(ref)})
        return frozenset({Hint("other", text, builtin=False)})

    def class_hint(self, ref: ClassRef) -> Hint:
        if is_dataclass_node(ref.node):
            return Hint("dataclass", ref.name, builtin=False)
        bases = {ast.unparse(b.value if isinstance(b, ast.Subscript) else b).rsplit(".", 1)[-1]
                 for c in self.syms.mro(ref) for b in c.node.bases}
        if self.feats.dict_subclass and "dict" in bases and "TypedDict" not in bases:
            return Hint("type", "dict")
        return Hint("other", ref.name, builtin=False)


def is_dataclass_node(node: ast.ClassDef) -> bool:
    """vLLM config classes are `@dataclass`, `@config` (which makes a dataclass) or both."""
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if ast.unparse(target).rsplit(".", 1)[-1] in {"dataclass", "config"}:
            return True
    return False


def contains(hints: frozenset[Hint], name: str) -> bool:
    if name == "Literal":
        return any(h.kind == "literal" for h in hints)
    return any(h.kind == "type" and h.name == name for h in hints)


def get_hint(hints: frozenset[Hint], name: str) -> Hint | None:
    return next((h for h in hints if h.kind == "type" and h.name == name), None)


def dataclass_fields(syms: Symbols, cls: ClassRef) -> dict[str, tuple[str, ast.AnnAssign]]:
    """Dataclass fields in definition order, bases first (ClassVar/InitVar excluded)."""
    out: dict[str, tuple[str, ast.AnnAssign]] = {}
    for c in reversed(syms.mro(cls)):
        for node in c.node.body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            ann = ast.unparse(node.annotation)
            if ann.startswith(("ClassVar", "typing.ClassVar", "InitVar", "dataclasses.InitVar")):
                continue
            out[node.target.id] = (c.path, node)
    return out


# --------------------------------------------------------------------------- get_kwargs emulation

T_INT, T_FLOAT, T_STR = Sym("builtins.int"), Sym("builtins.float"), Sym("builtins.str")
T_HUMAN = Sym("vllm:human_readable_int")
T_JSON = Sym("json.loads")
T_DATACLASS = Sym("vllm:parse_dataclass")
T_DICT_OR_STR = Sym("vllm:union_dict_and_str")
BOOL_OPTIONAL = Sym("argparse.BooleanOptionalAction")
ARG_UTILS = "vllm/engine/arg_utils.py"


def _function(tree: ast.Module | None, name: str) -> ast.FunctionDef | None:
    for node in tree.body if tree else []:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def hint_features(src: Source) -> HintFeatures:
    """Which `_compute_kwargs` branches this release has, read from its own arg_utils.py."""
    tree = src.tree(ARG_UTILS)
    compute = _function(tree, "_compute_kwargs")
    literal = _function(tree, "literal_to_kwargs")
    hints_fn = _function(tree, "get_type_hints")
    if compute is None:
        raise SourceError("arg_utils.py has no _compute_kwargs: unknown parser layout")
    text = ast.unparse(compute)
    return HintFeatures(
        pep604=hints_fn is not None and "UnionType" in ast.unparse(hints_fn),
        literal_metavar=literal is not None and "metavar" in ast.unparse(literal),
        sets="contains_type(type_hints, set)" in text,
        optional_valued="{bool, str, type(None)}" in text,
        dict_subclass="is_dict_subclass" in text,
        human_ints=frozenset(_human_int_names(compute)),
    )


def _human_int_names(fn: ast.FunctionDef) -> set[str]:
    """Field names compared against `name` in _compute_kwargs: the human-readable-int set."""
    sets: dict[str, set[str]] = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Set | ast.Tuple):
            consts = {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
            for tgt in node.targets:
                if isinstance(tgt, ast.Name):
                    sets[tgt.id] = consts
    names: set[str] = set()
    for node in ast.walk(fn):
        if not (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name)
                and node.left.id == "name"):
            continue
        for comp in node.comparators:
            if isinstance(comp, ast.Constant):
                names.add(comp.value)
            elif isinstance(comp, ast.Set | ast.Tuple | ast.List):
                names |= {e.value for e in comp.elts if isinstance(e, ast.Constant)}
            elif isinstance(comp, ast.Name):
                names |= sets.get(comp.id, set())
    return names


def _elem_type(elem: Any) -> Any:
    """argparse `type` of a collection element (vLLM uses str for unions containing str)."""
    if not isinstance(elem, frozenset):
        return Unknown("collection element")
    if len(elem) > 1:
        return T_STR
    (hint,) = tuple(elem)
    if hint.kind == "literal":
        return hint
    if hint.kind == "type" and hint.name in {"int", "float", "str", "bool", "dict"}:
        return Sym(f"builtins.{hint.name}")
    return Sym(f"other:{hint.name}")


def _collection(hints: frozenset[Hint], name: str) -> dict[str, Any]:
    hint = get_hint(hints, name)
    elems = hint.args if hint else ()
    if not elems:
        return {"type": T_STR, "nargs": "+"}
    fixed = name == "tuple" and "..." not in elems
    return {"type": _elem_type(elems[0]), "nargs": len(elems) if fixed else "+"}


def _literal(hint: Hint, hints: frozenset[Hint], feats: HintFeatures) -> dict[str, Any]:
    values = [v for v in hint.args if not isinstance(v, Unknown)]
    if len(values) != len(hint.args) or not values:
        return {"type": Unknown("Literal member"), "choices": Unknown("Literal member")}
    kind = type(values[0]).__name__
    key = "metavar" if feats.literal_metavar and contains(hints, "str") else "choices"
    return {"type": Sym(f"builtins.{kind}"), key: sorted(values)}


def field_kwargs(name: str, hints: frozenset[Hint], feats: HintFeatures) -> dict[str, Any]:
    """The argparse kwargs vLLM's `_compute_kwargs` builds for one dataclass field."""
    kw: dict[str, Any] = {}
    checker_only = {h for h in hints if h.name == "typing_only"}
    hints = hints - checker_only
    non_builtin = any(not h.builtin for h in hints)
    if any(h.kind == "dataclass" for h in hints):
        kw["type"] = T_DATACLASS
    elif feats.optional_valued and hints == {Hint("type", "bool"), Hint("type", "str"), NONE_HINT}:
        kw.update(type=T_STR, nargs="?", const=True)
    elif contains(hints, "bool"):
        kw["action"] = BOOL_OPTIONAL
    elif contains(hints, "Literal"):
        lit = next(h for h in hints if h.kind == "literal")
        kw.update(_literal(lit, hints, feats))
    elif contains(hints, "tuple"):
        kw.update(_collection(hints, "tuple"))
    elif contains(hints, "list"):
        kw.update(_collection(hints, "list"))
    elif feats.sets and contains(hints, "set"):
        kw.update(_collection(hints, "set"))
    elif contains(hints, "int"):
        kw["type"] = T_HUMAN if name in feats.human_ints else T_INT
    elif contains(hints, "float"):
        kw["type"] = T_FLOAT
    elif contains(hints, "dict") and (contains(hints, "str") or non_builtin):
        kw["type"] = T_DICT_OR_STR
    elif contains(hints, "dict"):
        kw["type"] = T_JSON
    elif contains(hints, "str") or non_builtin:
        kw["type"] = T_STR
    else:
        kw["type"] = Unknown(f"unsupported hints for {name}")
    if isinstance(kw.get("type"), Hint):  # a sequence of literals
        kw.update(_literal(kw["type"], frozenset({kw["type"]}), feats))
    if checker_only and "choices" not in kw and "metavar" not in kw:
        kw["metavar"] = sorted({v for h in checker_only for v in h.args
                                if isinstance(v, str)})
    return kw


class KwargsFactory:
    """`get_kwargs(Cls)` for config dataclasses of one release (fresh dicts per call)."""

    def __init__(self, syms: Symbols, feats: HintFeatures) -> None:
        self.syms = syms
        self.hints = Hints(syms, feats)
        self.feats = feats

    def for_class(self, cls: ClassRef) -> dict[str, dict[str, Any]]:
        out = {}
        for name, (path, node) in dataclass_fields(self.syms, cls).items():
            out[name] = field_kwargs(name, self.hints.of(path, node.annotation), self.feats)
            out[name]["default"] = Unknown("default")
        return out


# --------------------------------------------------------------------------- parser interpreter


class Parser:
    """Stands for an argparse parser or argument group: its add_argument calls are recorded."""


@dataclass
class Option:
    strings: list[str]
    kwargs: dict[str, Any]
    where: str


class _Return(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


@dataclass
class Frame:
    path: str
    env: dict[str, Any]
    owner: ClassRef | None = None
    bound: Any = None


# Helpers whose effect on argparse kwargs is the identity on their argument's meaning.
PASSTHROUGH_FUNCS = {"optional_type", "parse_type"}
MAX_DEPTH = 12


class Interpreter:
    """Executes parser-building functions abstractly and records every option they add.

    Only the constructs vLLM uses to build the serve parser are modelled: assignments,
    kwargs-dict mutation (`kw["x"]["type"] = ...`, `del kw["x"]["nargs"]`), loops over
    `get_kwargs(...)` items, calls into other vLLM functions/classmethods, and
    `add_argument`. An `if` whose test cannot be decided runs both branches, so options
    added under platform or argv conditions are included.
    """

    def __init__(self, syms: Symbols, kwargs: KwargsFactory) -> None:
        self.syms = syms
        self.kwargs = kwargs
        self.options: list[Option] = []
        self.depth = 0

    # -- calls into functions
    def call_function(self, fn: FuncRef, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if self.depth >= MAX_DEPTH:
            return Unknown(f"call depth at {fn.node.name}")
        frame = Frame(fn.path, {}, owner=fn.owner, bound=fn.bound)
        self._bind(fn, frame, args, kwargs)
        self.depth += 1
        try:
            self.run(fn.node.body, frame)
        except _Return as ret:
            return ret.value
        finally:
            self.depth -= 1
        return None

    def _bind(self, fn: FuncRef, frame: Frame, args: list[Any], kwargs: dict[str, Any]) -> None:
        spec = fn.node.args
        params = [a.arg for a in spec.posonlyargs + spec.args]
        decorators = {ast.unparse(d) for d in fn.node.decorator_list}
        if fn.owner is not None and "staticmethod" not in decorators:
            args = [fn.bound if fn.bound is not None else fn.owner, *args]
        defaults = spec.defaults
        for i, name in enumerate(params):
            d_index = i - (len(params) - len(defaults))
            if i < len(args):
                frame.env[name] = args[i]
            elif name in kwargs:
                frame.env[name] = kwargs[name]
            elif d_index >= 0:
                frame.env[name] = self.eval(defaults[d_index], frame)
            else:
                frame.env[name] = Unknown(f"parameter {name}")
        for arg, default in zip(spec.kwonlyargs, spec.kw_defaults, strict=True):
            if arg.arg in kwargs:
                frame.env[arg.arg] = kwargs[arg.arg]
            else:
                frame.env[arg.arg] = self.eval(default, frame) if default else Unknown(arg.arg)

    # -- statements
    def run(self, body: list[ast.stmt], frame: Frame) -> None:
        for stmt in body:
            self.stmt(stmt, frame)

    def stmt(self, node: ast.stmt, frame: Frame) -> None:
        if isinstance(node, ast.Assign):
            value = self.eval(node.value, frame)
            for tgt in node.targets:
                self.assign(tgt, value, frame)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            self.assign(node.target, self.eval(node.value, frame), frame)
        elif isinstance(node, ast.Expr):
            self.eval(node.value, frame)
        elif isinstance(node, ast.Return):
            raise _Return(self.eval(node.value, frame) if node.value else None)
        elif isinstance(node, ast.Delete):
            for tgt in node.targets:
                self._delete(tgt, frame)
        elif isinstance(node, ast.If):
            self._if(node, frame)
        elif isinstance(node, ast.For):
            self._for(node, frame)
        elif isinstance(node, ast.With):
            self.run(node.body, frame)
        elif isinstance(node, ast.Try):
            self.run(node.body + node.orelse + node.finalbody, frame)
        elif isinstance(node, ast.FunctionDef):
            frame.env[node.name] = FuncRef(frame.path, node)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                base = node.module or ""
                frame.env[alias.asname or alias.name] = self.syms._import(
                    ("from", base, alias.name), 0)

    def _if(self, node: ast.If, frame: Frame) -> None:
        test = self.eval(node.test, frame)
        if isinstance(test, Unknown) or not _is_plain(test):
            for branch in (node.body, node.orelse):
                try:
                    self.run(branch, frame)
                except _Return:
                    pass  # a return in one undecided branch must not hide the other
            return
        self.run(node.body if test else node.orelse, frame)

    def _for(self, node: ast.For, frame: Frame) -> None:
        items = self.eval(node.iter, frame)
        if isinstance(items, dict):
            items = list(items)
        if not isinstance(items, list | tuple):
            self.assign(node.target, Unknown("loop item"), frame)
            self.run(node.body, frame)
            return
        for item in list(items):
            self.assign(node.target, item, frame)
            self.run(node.body, frame)

    def assign(self, tgt: ast.expr, value: Any, frame: Frame) -> None:
        if isinstance(tgt, ast.Name):
            frame.env[tgt.id] = value
        elif isinstance(tgt, ast.Tuple | ast.List):
            parts = list(value) if isinstance(value, list | tuple) else None
            for i, elt in enumerate(tgt.elts):
                self.assign(elt, parts[i] if parts and i < len(parts) else Unknown("unpack"),
                            frame)
        elif isinstance(tgt, ast.Subscript):
            container = self.eval(tgt.value, frame)
            key = self.eval(tgt.slice, frame)
            if isinstance(container, dict) and _is_plain(key):
                container[key] = value

    def _delete(self, tgt: ast.expr, frame: Frame) -> None:
        if isinstance(tgt, ast.Subscript):
            container = self.eval(tgt.value, frame)
            key = self.eval(tgt.slice, frame)
            if isinstance(container, dict) and _is_plain(key):
                container.pop(key, None)

    # -- expressions
    def eval(self, node: ast.expr | None, frame: Frame) -> Any:
        if node is None:
            return None
        method = getattr(self, f"_e_{type(node).__name__}", None)
        if method is None:
            return Unknown(ast.unparse(node)[:80])
        return method(node, frame)

    def deref(self, value: Any) -> Any:
        """Evaluate a lazily-bound module/class assignment where it is used."""
        if isinstance(value, ValueRef):
            if self.depth >= MAX_DEPTH:
                return Unknown("value depth")
            self.depth += 1
            try:
                return self.eval(value.node, Frame(value.path, {}))
            finally:
                self.depth -= 1
        return value

    def _e_Constant(self, node: ast.Constant, frame: Frame) -> Any:
        return node.value

    def _e_Name(self, node: ast.Name, frame: Frame) -> Any:
        if node.id in frame.env:
            return frame.env[node.id]
        hit = self.syms.lookup(frame.path, node.id)
        return self.deref(hit) if hit is not None else Unknown(node.id)

    def _e_Attribute(self, node: ast.Attribute, frame: Frame) -> Any:
        base = self.eval(node.value, frame)
        if isinstance(base, ModRef | ClassRef | Sym):
            hit = self.syms.attr(base, node.attr)
            if isinstance(hit, FuncRef) and isinstance(base, ClassRef):
                return self._bind_method(hit, base)
            return self.deref(hit)
        if isinstance(base, SuperRef):
            return self._super_attr(base, node.attr)
        if isinstance(base, Unknown):
            return base
        return Method(base, node.attr)

    def _bind_method(self, fn: FuncRef, receiver: ClassRef) -> FuncRef:
        decorators = {ast.unparse(d) for d in fn.node.decorator_list}
        bound = receiver if "classmethod" in decorators else None
        return FuncRef(fn.path, fn.node, owner=fn.owner, bound=bound)

    def _super_attr(self, sup: SuperRef, name: str) -> Any:
        chain = self.syms.mro(sup.owner)[1:] if sup.owner else []
        for cls in chain:
            hit = class_member(cls, name)
            if isinstance(hit, FuncRef):
                return FuncRef(hit.path, hit.node, owner=cls, bound=sup.bound)
            if hit is not None:
                return self.deref(hit)
        return Unknown(f"super().{name}")

    def _e_Subscript(self, node: ast.Subscript, frame: Frame) -> Any:
        base = self.eval(node.value, frame)
        key = self.eval(node.slice, frame)
        if isinstance(base, dict) and _is_plain(key):
            return base.get(key, Unknown(f"missing key {key!r}"))
        if isinstance(base, list | tuple) and isinstance(key, int):
            return base[key] if -len(base) <= key < len(base) else Unknown("index")
        return Unknown(ast.unparse(node)[:80])

    def _e_JoinedStr(self, node: ast.JoinedStr, frame: Frame) -> Any:
        out = []
        for part in node.values:
            value = self.eval(part.value if isinstance(part, ast.FormattedValue) else part, frame)
            if not isinstance(value, str | int | float):
                return Unknown(ast.unparse(node)[:80])
            out.append(str(value))
        return "".join(out)

    def _e_BinOp(self, node: ast.BinOp, frame: Frame) -> Any:
        left, right = self.eval(node.left, frame), self.eval(node.right, frame)
        ops = {ast.Add: lambda a, b: a + b, ast.Mult: lambda a, b: a * b,
               ast.Sub: lambda a, b: a - b}
        op = ops.get(type(node.op))
        if op and _is_plain(left) and _is_plain(right) and not isinstance(left, dict):
            try:
                return op(left, right)
            except TypeError:
                pass
        return Unknown(ast.unparse(node)[:80])

    def _e_Compare(self, node: ast.Compare, frame: Frame) -> Any:
        left = self.eval(node.left, frame)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = self.eval(comp, frame)
            if not (_is_plain(left) and _is_plain(right)):
                return Unknown("comparison")
            result = _compare(op, left, right)
            if not result:
                return result
            left = right
        return True

    def _e_BoolOp(self, node: ast.BoolOp, frame: Frame) -> Any:
        values = [self.eval(v, frame) for v in node.values]
        if not all(_is_plain(v) for v in values):
            return Unknown("boolean expression")
        return all(values) if isinstance(node.op, ast.And) else any(values)

    def _e_UnaryOp(self, node: ast.UnaryOp, frame: Frame) -> Any:
        value = self.eval(node.operand, frame)
        if not _is_plain(value):
            return Unknown("unary")
        if isinstance(node.op, ast.Not):
            return not value
        return -value if isinstance(node.op, ast.USub) else value

    def _e_IfExp(self, node: ast.IfExp, frame: Frame) -> Any:
        test = self.eval(node.test, frame)
        if not _is_plain(test):
            return Unknown(ast.unparse(node)[:80])
        return self.eval(node.body if test else node.orelse, frame)

    def _e_Dict(self, node: ast.Dict, frame: Frame) -> Any:
        out: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                merged = self.eval(value, frame)
                if isinstance(merged, dict):
                    out.update(merged)
                continue
            k = self.eval(key, frame)
            if _is_plain(k) and not isinstance(k, list | dict):
                out[k] = self.eval(value, frame)
        return out

    def _e_List(self, node: ast.List | ast.Tuple | ast.Set, frame: Frame) -> Any:
        out: list[Any] = []
        for elt in node.elts:
            if isinstance(elt, ast.Starred):
                value = self.eval(elt.value, frame)
                if not isinstance(value, list | tuple):
                    return Unknown("starred")
                out.extend(value)
            else:
                out.append(self.eval(elt, frame))
        return out

    _e_Tuple = _e_List
    _e_Set = _e_List

    def _e_ListComp(self, node: ast.ListComp, frame: Frame) -> Any:
        """Only `[m.value for m in SomeEnum]` (and `.name`): vLLM's enum-valued choices."""
        gen = node.generators[0] if len(node.generators) == 1 else None
        enum = self.eval(gen.iter, frame) if gen and not gen.ifs else None
        elt = node.elt
        if not (isinstance(enum, ClassRef) and isinstance(elt, ast.Attribute)
                and isinstance(gen.target, ast.Name) and ast.unparse(elt.value) == gen.target.id
                and elt.attr in {"value", "name"}):
            return Unknown(ast.unparse(node)[:80])
        members = enum_members(enum)
        if members is None:
            return Unknown(f"members of {enum.name}")
        return [v if elt.attr == "value" else k for k, v in members]

    def _e_Lambda(self, node: ast.Lambda, frame: Frame) -> Any:
        return Sym("lambda")

    def _e_Call(self, node: ast.Call, frame: Frame) -> Any:
        callee = self.eval(node.func, frame)
        if isinstance(callee, Sym) and callee.name.rsplit(".", 1)[-1] == "get_args":
            return self._get_args(node, frame)
        if isinstance(callee, Sym) and callee.name == "builtins.super":
            return SuperRef(frame.owner, frame.bound)
        args = self._args(node.args, frame)
        kwargs = self._kwargs(node.keywords, frame)
        if isinstance(callee, Method):
            return self._method(callee, args, kwargs, node, frame)
        if isinstance(callee, FuncRef):
            return self._call_vllm(callee, args, kwargs)
        if isinstance(callee, ClassRef):
            return Parser() if "ArgumentParser" in callee.name else Unknown(callee.name)
        if isinstance(callee, Sym):
            return _call_sym(callee, args, kwargs)
        return Unknown(ast.unparse(node.func)[:80])

    def _call_vllm(self, fn: FuncRef, args: list[Any], kwargs: dict[str, Any]) -> Any:
        name = fn.node.name
        if name in PASSTHROUGH_FUNCS and args:
            return args[0]
        if name == "get_kwargs":
            if args and isinstance(args[0], ClassRef):
                return self.kwargs.for_class(args[0])
            return Unknown("get_kwargs of an unresolved class")
        return self.call_function(fn, args, kwargs)

    def _get_args(self, node: ast.Call, frame: Frame) -> Any:
        hints = self.kwargs.hints.of(frame.path, node.args[0]) if node.args else frozenset()
        lits = [h for h in hints if h.kind == "literal"]
        if len(lits) == 1 and not any(isinstance(v, Unknown) for v in lits[0].args):
            return list(lits[0].args)
        return Unknown(f"get_args({ast.unparse(node.args[0]) if node.args else ''})")

    def _args(self, nodes: list[ast.expr], frame: Frame) -> list[Any]:
        out: list[Any] = []
        for n in nodes:
            if isinstance(n, ast.Starred):
                value = self.eval(n.value, frame)
                out.extend(value if isinstance(value, list | tuple) else [Unknown("*args")])
            else:
                out.append(self.eval(n, frame))
        return out

    def _kwargs(self, keywords: list[ast.keyword], frame: Frame) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kw in keywords:
            value = self.eval(kw.value, frame)
            if kw.arg is None:
                if isinstance(value, dict):
                    out.update(value)
                else:
                    out["**"] = value if isinstance(value, Unknown) else Unknown("**kwargs")
            else:
                out[kw.arg] = value
        return out

    def _method(self, m: Method, args: list[Any], kwargs: dict[str, Any], node: ast.Call,
                frame: Frame) -> Any:
        if isinstance(m.base, Parser):
            if m.name == "add_argument":
                strings = [a for a in args if isinstance(a, str)]
                kw = {k: (list(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
                if len(strings) != len(args):
                    kw["**strings"] = Unknown("option string not resolved")
                self.options.append(Option(strings, kw, f"{frame.path}:{node.lineno}"))
                return None
            if m.name.startswith(("add_argument_group", "add_mutually_exclusive", "add_parser")):
                return Parser()
            return None
        return _plain_method(m, args)


def enum_members(cls: ClassRef) -> list[tuple[str, Any]] | None:
    """(name, value) of an Enum class whose members are plain constants."""
    out = []
    for node in cls.node.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            if not isinstance(node.value, ast.Constant):
                return None
            out.append((node.targets[0].id, node.value.value))
    return out or None


@dataclass
class Method:
    base: Any
    name: str


@dataclass
class SuperRef:
    owner: ClassRef | None
    bound: Any


def _is_plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | list | tuple | dict)


def _compare(op: ast.cmpop, left: Any, right: Any) -> Any:
    try:
        if isinstance(op, ast.In):
            return left in right
        if isinstance(op, ast.NotIn):
            return left not in right
        table = {ast.Eq: left == right, ast.NotEq: left != right, ast.Is: left is right,
                 ast.IsNot: left is not right}
        if type(op) in table:
            return table[type(op)]
        ordered = {ast.Lt: "__lt__", ast.LtE: "__le__", ast.Gt: "__gt__", ast.GtE: "__ge__"}
        return getattr(left, ordered[type(op)])(right)
    except (TypeError, KeyError):
        return Unknown("comparison")


def _call_sym(callee: Sym, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Calls of stdlib/builtins/pydantic names that matter for argparse kwargs or defaults."""
    short = callee.name.rsplit(".", 1)[-1]
    plain = bool(args) and all(_is_plain(a) for a in args)
    if short in {"Field", "field"}:
        return kwargs.get("default", Unknown("default_factory")) if "default" in kwargs \
            else Unknown("default_factory")
    if short in {"list", "tuple", "sorted"} and plain:
        return sorted(args[0]) if short == "sorted" else list(args[0])
    if short in {"ArgumentParser", "FlexibleArgumentParser"}:
        return Parser()
    if callee.name == "builtins.int" and plain:
        return int(args[0])
    return Unknown(f"{callee.name}()")


def _plain_method(m: Method, args: list[Any]) -> Any:
    base, name = m.base, m.name
    if isinstance(base, dict):
        if name == "pop":
            return base.pop(args[0], args[1] if len(args) > 1 else Unknown("pop"))
        if name == "get":
            return base.get(args[0], args[1] if len(args) > 1 else None)
        if name == "items":
            return [[k, v] for k, v in base.items()]
        if name in {"keys", "values"}:
            return list(getattr(base, name)())
        if name == "copy":
            return dict(base)
        if name == "update" and args and isinstance(args[0], dict):
            base.update(args[0])
            return None
    if isinstance(base, list):
        if name == "remove":
            if args and args[0] in base:
                base.remove(args[0])
            return None
        if name in {"append", "extend"} and args:
            getattr(base, name)(args[0])
            return None
    if isinstance(base, str) and name in {"replace", "lower", "upper", "strip", "split"}:
        if all(isinstance(a, str) for a in args):
            return getattr(base, name)(*args)
    return Unknown(f".{name}()")


# --------------------------------------------------------------------------- serve flags

SERVE_ENTRY = "vllm/entrypoints/cli/serve.py"
TYPE_LABELS = {
    "builtins.int": "int", "builtins.float": "float", "builtins.str": "str",
    "vllm:human_readable_int": "human_int", "json.loads": "json", "vllm:parse_dataclass": "json",
    "vllm:union_dict_and_str": "json", "builtins.dict": "json",
}
HUMAN_INT_FUNCS = {"human_readable_int", "human_readable_int_or_auto"}
JSON_FUNCS = {"union_dict_and_str", "parse_dataclass"}
STORE_FLAG_ACTIONS = {"store_true", "store_false", "store_const", "count"}


def type_label(value: Any) -> str | None:
    """Our label for an argparse `type=`: int, float, str, human_int, json, or None."""
    if isinstance(value, Sym):
        return TYPE_LABELS.get(value.name)
    if isinstance(value, FuncRef):
        name = value.node.name
        if name in HUMAN_INT_FUNCS:
            return "human_int"
        if name in JSON_FUNCS:
            return "json"
        returns = ast.unparse(value.node.returns) if value.node.returns else ""
        return returns if returns in {"int", "float", "str"} else None
    return None


def _action_kind(action: Any) -> str | None:
    """'negatable', 'flag', 'append', 'custom' or None (plain store)."""
    if action is None:
        return None
    if isinstance(action, Sym) and action.name.endswith("BooleanOptionalAction"):
        return "negatable"
    if isinstance(action, ClassRef):
        bases = {ast.unparse(b) for b in action.node.bases}
        return "negatable" if any("BooleanOptionalAction" in b for b in bases) else "custom"
    if action in STORE_FLAG_ACTIONS:
        return "flag"
    if action in {"append", "extend"}:
        return "append"
    return "custom"


def describe_option(opt: Option) -> tuple[str, dict[str, Any], list[str]]:
    """(canonical name, data-file entry, unresolved notes) for one add_argument call."""
    kw = opt.kwargs
    longs = [s for s in opt.strings if s.startswith("--")]
    canonical = longs[0] if longs else opt.strings[0]
    entry: dict[str, Any] = {"aliases": [s for s in opt.strings if s != canonical]}
    notes = [f"{k}: {v.why}" for k, v in kw.items()
             if isinstance(v, Unknown) and k in {"**", "**strings", "type", "choices", "nargs"}]
    action = _action_kind(kw.get("action"))
    if action in {"negatable", "flag"}:
        entry.update(arity="bool", negatable=action == "negatable")
        return canonical, entry, notes
    nargs = kw.get("nargs")
    label = type_label(kw.get("type"))
    if nargs in {"+", "*"} or (isinstance(nargs, int) and nargs > 1):
        entry["arity"] = "many"
    elif label == "json":
        entry["arity"] = "json"
    else:
        entry["arity"] = "value"
    if nargs == "?":
        entry["value_optional"] = True
    if action == "append":
        entry["repeatable"] = True
    # argparse's default `type` is str; a lambda or custom callable stays unknown (None)
    entry["type"] = "str" if "type" not in kw else label
    choices = kw.get("choices")
    entry["choices"] = _clean_choices(choices)
    if isinstance(kw.get("metavar"), list):
        entry["known_values"] = _clean_choices(kw["metavar"])
    if "**" in kw or isinstance(kw.get("action"), Unknown):
        entry["arity"] = None
    return canonical, entry, notes


def _clean_choices(choices: Any) -> list[Any] | None:
    """Choices as JSON values; None (the Optional marker vLLM appends) is left out."""
    if not isinstance(choices, list | tuple):
        return None
    out = [c for c in choices if c is not None and c != "None" and not isinstance(c, Unknown)]
    if len(out) != len([c for c in choices if c is not None and c != "None"]):
        return None
    return sorted(out, key=lambda c: (str(type(c)), c))


def dash_o_target(src: Source) -> str | None:
    """Option that FlexibleArgumentParser.parse_args rewrites `-O3`/`-O 3` into, if any."""
    for path in ("vllm/utils/argparse_utils.py", "vllm/utils/__init__.py"):
        tree = src.tree(path)
        for node in ast.walk(tree) if tree else []:
            if isinstance(node, ast.If) and "startswith('-O')" in ast.unparse(node.test):
                for sub in ast.walk(ast.Module(body=node.body, type_ignores=[])):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str) \
                            and sub.value.startswith("--"):
                        return sub.value
    return None


def serve_entry(syms: Symbols) -> FuncRef:
    """`subparser_init` of the class in cli/serve.py whose `name` is "serve"."""
    tree = syms.src.tree(SERVE_ENTRY)
    for node in tree.body if tree else []:
        if isinstance(node, ast.ClassDef):
            cls = ClassRef(SERVE_ENTRY, node)
            fn = class_member(cls, "subparser_init")
            if isinstance(fn, FuncRef):
                return FuncRef(fn.path, fn.node, owner=cls)
    raise SourceError(f"{SERVE_ENTRY}: no subparser_init found")


def read_serve_flags(src: Source) -> tuple[dict[str, Any], dict[str, str]]:
    """Every option of `vllm serve`, keyed by canonical long name, plus notes for evidence."""
    syms = Symbols(src)
    interp = Interpreter(syms, KwargsFactory(syms, hint_features(src)))
    entry = serve_entry(syms)
    serve_cls = entry.owner
    interp.call_function(entry, [Parser()], {})  # the subparsers action
    flags: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for opt in interp.options:
        if not opt.strings or not opt.strings[0].startswith("-"):
            continue  # positionals (model_tag)
        name, entry_data, unresolved = describe_option(opt)
        flags[name] = entry_data
        for note in unresolved:
            notes[f"serve_flags.{name}"] = f"{opt.where} unresolved {note}"
        if entry_data.get("choices") is None and "choices" in opt.kwargs \
                and opt.kwargs["choices"] is not None:
            notes[f"serve_flags.{name}.choices"] = f"{opt.where} choices not static"
    target = dash_o_target(src)
    if target in flags and not any("-O" in e["aliases"] for e in flags.values()):
        flags[target]["aliases"] = sorted(flags[target]["aliases"] + ["-O"])
        notes[f"serve_flags.{target}.aliases"] = "FlexibleArgumentParser rewrites -O<n> to it"
    notes["serve_flags"] = (f"{SERVE_ENTRY}:{entry.node.lineno} "
                            f"{serve_cls.name if serve_cls else ''}.subparser_init, interpreted")
    return flags, notes


# --------------------------------------------------------------------------- defaults

ROCM_PLATFORM = "vllm/platforms/rocm.py"


class Reader:
    """Shared symbol table / interpreter for the non-flag readings of one release."""

    def __init__(self, src: Source) -> None:
        self.src = src
        self.syms = Symbols(src)
        self.interp = Interpreter(self.syms, KwargsFactory(self.syms, hint_features(src)))

    def cls(self, path: str, name: str) -> ClassRef:
        hit = self.syms.lookup(path, name)
        if not isinstance(hit, ClassRef):
            raise SourceError(f"{path}: class {name} not found")
        return hit

    def field_default(self, cls: ClassRef, name: str) -> tuple[Any, str]:
        """Static default of a dataclass field, following `= OtherConfig.field` references."""
        path, node = dataclass_fields(self.syms, cls)[name]
        where = f"{path}:{node.lineno}"
        value_node, value_path = node.value, path
        if isinstance(value_node, ast.Attribute):
            owner = self.syms.resolve_expr(path, value_node.value)
            if isinstance(owner, ClassRef) and \
                    value_node.attr in dataclass_fields(self.syms, owner):
                return self.field_default(owner, value_node.attr)
        value = self.interp.eval(value_node, Frame(value_path, {})) if value_node else None
        return value, where

    def class_constant(self, cls: ClassRef, name: str) -> tuple[Any, str] | None:
        for node in cls.node.body:
            target = node.target if isinstance(node, ast.AnnAssign) else (
                node.targets[0] if isinstance(node, ast.Assign) else None)
            if isinstance(target, ast.Name) and target.id == name and node.value is not None:
                value = self.interp.eval(node.value, Frame(cls.path, {}))
                return value, f"{cls.path}:{node.lineno}"
        return None

    def find_def(self, path: str, name: str) -> ast.FunctionDef | None:
        tree = self.src.tree(path)
        for node in ast.walk(tree) if tree else []:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return node
        return None


def read_defaults(rd: Reader) -> tuple[dict[str, Any], dict[str, str]]:
    engine = rd.cls(ARG_UTILS, "EngineArgs")
    out: dict[str, Any] = {}
    ev: dict[str, str] = {}
    for key, fname in (("gpu_memory_utilization", "gpu_memory_utilization"),
                       ("block_size", "block_size"), ("max_num_seqs", "max_num_seqs"),
                       ("max_num_batched_tokens", "max_num_batched_tokens"),
                       ("kv_cache_dtype", "kv_cache_dtype"), ("dtype", "dtype")):
        value, where = rd.field_default(engine, fname)
        out[key] = None if isinstance(value, Unknown) else value
        ev[f"defaults.{key}"] = where if not isinstance(value, Unknown) \
            else f"{where} (not static: {value.why})"
    cache = rd.cls("vllm/config/__init__.py" if "vllm/config/__init__.py" in rd.src.texts
                   else "vllm/config.py", "CacheConfig")
    if out["block_size"] is None:
        _block_size_default(rd, cache, out, ev)
    if out["gpu_memory_utilization"] is None:
        _utilization_default(rd, cache, out, ev)
    return out, ev


def _block_size_default(rd: Reader, cache: ClassRef, out: dict, ev: dict) -> None:
    """None in EngineArgs: CacheConfig.DEFAULT_BLOCK_SIZE, else what rocm.py fills in."""
    const = rd.class_constant(cache, "DEFAULT_BLOCK_SIZE")
    if const is not None:
        out["block_size"], where = const
        ev["defaults.block_size"] = f"{where} (CacheConfig.DEFAULT_BLOCK_SIZE, used when unset)"
        return
    fn = rd.find_def(ROCM_PLATFORM, "check_and_update_config")
    for node in ast.walk(fn) if fn else []:
        if isinstance(node, ast.If) and "block_size is None" in ast.unparse(node.test):
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and ast.unparse(stmt.targets[0]).endswith(
                        "block_size") and isinstance(stmt.value, ast.Constant):
                    out["block_size"] = stmt.value.value
                    ev["defaults.block_size"] = (f"{ROCM_PLATFORM}:{stmt.lineno} (ROCm fills "
                                                 "block_size when unset)")
                    return
    ev["defaults.block_size"] += "; no DEFAULT_BLOCK_SIZE nor rocm.py fallback found"


def _utilization_default(rd: Reader, cache: ClassRef, out: dict, ev: dict) -> None:
    """None in EngineArgs: read CacheConfig.resolved_gpu_memory_utilization's branches."""
    const = rd.class_constant(cache, "DEFAULT_GPU_MEMORY_UTILIZATION")
    prop = class_member(cache, "resolved_gpu_memory_utilization")
    if const is None:
        return
    out["gpu_memory_utilization"], where = const
    ev["defaults.gpu_memory_utilization"] = f"{where} (DEFAULT_GPU_MEMORY_UTILIZATION)"
    if not isinstance(prop, FuncRef):
        return
    # `if self.enable_extensible_kv_cache: return 1.0` -> the default when that mode is on
    for node in ast.walk(prop.node):
        if isinstance(node, ast.If) and "extensible" in ast.unparse(node.test):
            ret = node.body[0]
            if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Constant):
                out["gpu_memory_utilization_extensible_kv_cache"] = ret.value.value
                ev["defaults.gpu_memory_utilization_extensible_kv_cache"] = (
                    f"{prop.path}:{ret.lineno} (resolved_gpu_memory_utilization when "
                    "enable_extensible_kv_cache)")


def read_batching_defaults(rd: Reader) -> tuple[list[dict[str, Any]], str]:
    """Device-memory tiers of default max_num_batched_tokens / max_num_seqs (OpenAI server)."""
    tree = rd.src.tree(ARG_UTILS)
    for node in ast.walk(tree) if tree else []:
        if isinstance(node, ast.If) and "GiB_bytes" in ast.unparse(node.test) \
                and "device_memory" in ast.unparse(node.test):
            return _tiers(node), f"{ARG_UTILS}:{node.lineno}"
    return [], f"{ARG_UTILS}: no device_memory >= N * GiB_bytes branch"


def _tiers(node: ast.If) -> list[dict[str, Any]]:
    tiers = []
    current: ast.stmt | None = node
    while current is not None:
        if isinstance(current, ast.If):
            test, body = current.test, current.body
            nxt = current.orelse[0] if len(current.orelse) == 1 else None
            if nxt is None and current.orelse:
                nxt = ast.If(test=ast.Constant(True), body=current.orelse, orelse=[])
        else:
            break
        gib = _gib_threshold(test)
        entry = {"min_device_gib": gib, "condition": None if gib == 0 and isinstance(
            test, ast.Constant) else ast.unparse(test)}
        entry.update(_server_values(body))
        tiers.append(entry)
        current = nxt
    return tiers


def _gib_threshold(test: ast.expr) -> int:
    for sub in ast.walk(test):
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Mult) \
                and ast.unparse(sub.right) == "GiB_bytes" and isinstance(sub.left, ast.Constant):
            return sub.left.value
    return 0


def _server_values(body: list[ast.stmt]) -> dict[str, Any]:
    """The UsageContext.OPENAI_API_SERVER entry of each default_* dict assigned in `body`."""
    out: dict[str, Any] = {}
    for stmt in body:
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Dict)):
            continue
        name = ast.unparse(stmt.targets[0]).replace("default_", "")
        for key, value in zip(stmt.value.keys, stmt.value.values, strict=True):
            if key is not None and ast.unparse(key).endswith("OPENAI_API_SERVER") \
                    and isinstance(value, ast.Constant):
                out[name] = value.value
    return out


# --------------------------------------------------------------------------- semantics & messages

GPU_WORKER = "vllm/v1/worker/gpu_worker.py"
ENVS = "vllm/envs.py"
GRAPH_ENV = "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS"


def _walk_with_parents(tree: ast.AST) -> list[tuple[ast.AST, list[ast.AST]]]:
    out: list[tuple[ast.AST, list[ast.AST]]] = []
    stack: list[tuple[ast.AST, list[ast.AST]]] = [(tree, [])]
    while stack:
        node, parents = stack.pop()
        out.append((node, parents))
        for child in ast.iter_child_nodes(node):
            stack.append((child, [*parents, node]))
    return out


def env_default(src: Source, name: str) -> tuple[str | None, str]:
    """The string default of `os.getenv(name, "X")` in envs.py."""
    tree = src.tree(ENVS)
    for node in ast.walk(tree) if tree else []:
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("getenv") \
                and len(node.args) == 2 and isinstance(node.args[0], ast.Constant) \
                and node.args[0].value == name and isinstance(node.args[1], ast.Constant):
            return str(node.args[1].value), f"{ENVS}:{node.lineno}"
    return None, f"{ENVS}: no getenv({name!r}, default)"


def _platform_gate(text: str) -> dict[str, bool]:
    """Which platforms a guard like `not current_platform.is_rocm() and ...` lets through."""
    if "is_cuda_alike()" in text and "not current_platform.is_cuda_alike()" not in text:
        return {"cuda": True, "rocm": True}
    if "not current_platform.is_rocm()" in text:
        return {"cuda": True, "rocm": False}
    if "is_cuda()" in text and "not current_platform.is_cuda()" not in text:
        return {"cuda": True, "rocm": False}
    if "is_rocm()" in text:
        return {"cuda": False, "rocm": True}
    return {"cuda": True, "rocm": True}


def graphs_in_budget(src: Source) -> tuple[dict[str, bool], str]:
    """Is the profiled CUDA-graph estimate subtracted from the KV budget, per platform?

    Reads gpu_worker.py: the `profile_cudagraph_memory()` call, the `if` guarding it (names
    in the guard are expanded with their assignment in the same function), whether the
    estimate is subtracted, and the env switch's default in envs.py.
    """
    tree = src.tree(GPU_WORKER)
    if tree is None:
        return {"cuda": False, "rocm": False}, f"{GPU_WORKER}: missing"
    for node, parents in _walk_with_parents(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(
                "profile_cudagraph_memory"):
            return _graph_gate(src, node, parents)
    return {"cuda": False, "rocm": False}, f"{GPU_WORKER}: no profile_cudagraph_memory() call"


def _graph_gate(src: Source, call: ast.Call, parents: list[ast.AST]) -> tuple[dict, str]:
    func = next(p for p in reversed(parents) if isinstance(p, ast.FunctionDef))
    guard = next((p for p in reversed(parents) if isinstance(p, ast.If)), None)
    text = ast.unparse(guard.test) if guard else ""
    for node in ast.walk(func):  # expand `may_capture_graphs = ...` style guard names
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) \
                and re.search(rf"\b{node.targets[0].id}\b", text):
            text += f" and ({ast.unparse(node.value)})"
    body = ast.unparse(func)
    subtracted = bool(re.search(r"-\s*cudagraph_memory_estimate", body))
    gate = _platform_gate(text)
    notes = [f"{GPU_WORKER}:{call.lineno} profile_cudagraph_memory()",
             f"guard `{text}`" if text else "unguarded",
             "subtracted from the KV budget" if subtracted else "not subtracted"]
    if GRAPH_ENV in body:
        default, where = env_default(src, GRAPH_ENV)
        notes.append(f"{GRAPH_ENV} default {default!r} at {where}")
        if default in {"0", "", None}:
            gate = {"cuda": False, "rocm": False}
    if not subtracted:
        gate = {"cuda": False, "rocm": False}
    return gate, "; ".join(notes)


def kv_sized_after_graphs(rd: Reader) -> tuple[bool, str]:
    """True when the default path sizes the KV cache from memory free after graph capture.

    Heuristic: CacheConfig has `enable_extensible_kv_cache`, VllmConfig settles it to on when
    unset (`requested is None`) and the platform test admits ROCm (`is_cuda_alike`).
    """
    path = "vllm/config/vllm.py"
    fn = rd.find_def(path, "_resolve_extensible_kv_cache")
    if fn is None:
        return False, (f"{path}: no _resolve_extensible_kv_cache; KV cache is sized by "
                       f"determine_available_memory before graph capture ({GPU_WORKER})")
    text = ast.unparse(fn)
    on_by_default = "requested is None" in text and "is_cuda_alike()" in text
    return on_by_default, (f"{path}:{fn.lineno} _resolve_extensible_kv_cache enables the "
                           "extensible KV cache when unset on CUDA/ROCm" if on_by_default
                           else f"{path}:{fn.lineno} not enabled by default")


def encoder_only_no_kv(src: Source) -> tuple[bool | None, str]:
    """Encoder-only attention layers reserve no KV-cache memory."""
    path = "vllm/v1/kv_cache_interface.py"
    tree = src.tree(path)
    for node in tree.body if tree else []:
        if isinstance(node, ast.ClassDef) and node.name == "EncoderOnlyAttentionSpec":
            fn = class_member(ClassRef(path, node), "max_memory_usage_bytes")
            if isinstance(fn, FuncRef):
                rets = [r for r in ast.walk(fn.node) if isinstance(r, ast.Return)]
                zero = bool(rets) and all(isinstance(r.value, ast.Constant) and r.value.value == 0
                                          for r in rets)
                return zero, f"{path}:{fn.node.lineno} EncoderOnlyAttentionSpec." \
                             f"max_memory_usage_bytes returns {'0' if zero else 'non-zero'}"
    runner = "vllm/v1/worker/gpu_model_runner.py"
    tree = src.tree(runner)
    for node in ast.walk(tree) if tree else []:
        if isinstance(node, ast.If) and "ENCODER_ONLY" in ast.unparse(node.test) \
                and any(isinstance(s, ast.Continue) for s in node.body):
            return True, f"{runner}:{node.lineno} ENCODER_ONLY layers skipped (no KV spec)"
    return None, f"{path}, {runner}: no encoder-only handling found"


def string_template(node: ast.expr) -> str | None:
    """Source text of a (possibly f-) string with `{expr}` placeholders as written."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                parts.append(str(part.value))
            elif isinstance(part, ast.FormattedValue):
                spec = f":{string_template(part.format_spec)}" if part.format_spec else ""
                parts.append("{" + ast.unparse(part.value) + spec + "}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = string_template(node.left), string_template(node.right)
        if left is None and right is None:
            return None
        # "text" + hint: the non-literal operand becomes a placeholder, as in an f-string
        return (left if left is not None else "{" + ast.unparse(node.left) + "}") + \
            (right if right is not None else "{" + ast.unparse(node.right) + "}")
    return None


def find_message(src: Source, prefixes: tuple[str, ...], needle: str,
                 prefer: str = "") -> tuple[str | None, str, ast.If | None]:
    """First string containing `needle` raised in the given path prefixes (prefer `prefer`)."""
    hits = []
    for path in sorted(p for p in src.texts if p.startswith(prefixes)):
        if needle not in src.texts[path]:
            continue
        for node, parents in _walk_with_parents(src.tree(path)):
            if isinstance(node, ast.Raise | ast.Assign) and node.value is not None \
                    if isinstance(node, ast.Assign) else isinstance(node, ast.Raise):
                for sub in ast.walk(node):
                    text = string_template(sub) if isinstance(sub, ast.expr) else None
                    if text and needle in text:
                        guard = next((p for p in reversed(parents) if isinstance(p, ast.If)),
                                     None)
                        hits.append((prefer not in text, path, node.lineno, text, guard))
                        break
    if not hits:
        return None, f"{'/'.join(prefixes)}: no string with {needle!r}", None
    hits.sort(key=lambda h: (h[0], h[1], h[2]))
    _, path, line, text, guard = hits[0]
    return text, f"{path}:{line}", guard


def scheduler_checks(rd: Reader) -> tuple[list[str], str]:
    """Conditions under which SchedulerConfig raises, as written (self. dropped)."""
    cfg_init = "vllm/config/__init__.py" if "vllm/config/__init__.py" in rd.src.texts \
        else "vllm/config.py"
    cls = rd.cls(cfg_init, "SchedulerConfig")
    checks, lines = [], []
    for node in cls.node.body:
        if not (isinstance(node, ast.FunctionDef) and (
                node.name.startswith(("_verify", "verify", "__post_init__", "validate")))):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.If) and any(isinstance(s, ast.Raise) for s in sub.body):
                checks.append(" ".join(ast.unparse(sub.test).replace("self.", "").split()))
                lines.append(str(sub.lineno))
    return checks, f"{cls.path}:{','.join(lines)} SchedulerConfig raise conditions"


def read_semantics(rd: Reader) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    src = rd.src
    sem: dict[str, Any] = {}
    ev: dict[str, str] = {}
    msgs: dict[str, Any] = {}
    sem["graphs_in_budget"], ev["semantics.graphs_in_budget"] = graphs_in_budget(src)
    sem["kv_sized_after_graphs"], ev["semantics.kv_sized_after_graphs"] = kv_sized_after_graphs(rd)
    sem["encoder_only_no_kv"], ev["semantics.encoder_only_no_kv"] = encoder_only_no_kv(src)
    text, where, guard = find_message(src, ("vllm/v1/worker/", "vllm/utils/", "vllm/worker/"),
                                      "Free memory on device", prefer="desired GPU memory")
    sem["free_memory_check"] = text is not None
    msgs["free_memory"], ev["messages.free_memory"] = text, where
    ev["semantics.free_memory_check"] = where
    if guard is not None and "extensible" in ast.unparse(guard.test):
        sem["free_memory_check_skipped_with_extensible_kv_cache"] = True
        ev["semantics.free_memory_check_skipped_with_extensible_kv_cache"] = \
            f"{where.split(':')[0]}:{guard.lineno} `{ast.unparse(guard.test)}`"
    core = ("vllm/v1/core/",)
    msgs["max_seq_len"], ev["messages.max_seq_len"], _ = find_message(src, core, "max seq len")
    msgs["no_cache_memory"], ev["messages.no_cache_memory"], _ = find_message(
        src, core, "No available memory for the cache blocks")
    sem["scheduler_checks"], ev["semantics.scheduler_checks"] = scheduler_checks(rd)
    return sem, ev, msgs


# --------------------------------------------------------------------------- ROCm builds

_BASE_IMAGE = re.compile(r"^ARG BASE_IMAGE=rocm/dev-[\w.-]+:(\d+\.\d+(?:\.\d+)?)", re.M)
_SDK_VERSION = re.compile(r"^ARG ROCM_SDK_VERSION=(\d+\.\d+(?:\.\d+)?)", re.M)
_WHEEL_ROW = re.compile(r"^\| `(rocm\d+)` \| [^|]+\| ([\d.]+) \|[^|]+\| (.+?) \|$", re.M)
_HOST_MINIMUM = re.compile(r"vLLM supports AMD GPUs with ROCm (\d+\.\d+(?:\.\d+)?) or above")
_WHEEL_SENTENCE = re.compile(r"Pre-built wheels are available for (.+?)(?:\.\s|;|\.$)", re.M)


def read_rocm(src: Source) -> tuple[dict[str, Any], dict[str, str]]:
    """The ROCm of the release's image (its Dockerfile.rocm_base) and the ROCm wheel variant
    a venv should install (the installation page's table and sentence), each with its line."""
    facts: dict[str, Any] = {"image_rocm": None, "wheel_variant": None, "wheel_rocm": None,
                             "host_rocm_min": None}
    evidence: dict[str, str] = {}
    doc = src.text(ROCM_FILES[1]) or ""
    if minimum := _HOST_MINIMUM.search(doc):
        facts["host_rocm_min"] = minimum.group(1)
        line = doc.count("\n", 0, minimum.start()) + 1
        evidence["rocm.host_rocm_min"] = f"{ROCM_FILES[1]}:{line} {minimum.group(0)}"
    docker = src.text(ROCM_FILES[0]) or ""
    found = _BASE_IMAGE.search(docker) or _SDK_VERSION.search(docker)
    if found:
        facts["image_rocm"] = found.group(1)
        line = docker.count("\n", 0, found.start()) + 1
        evidence["rocm.image_rocm"] = f"{ROCM_FILES[0]}:{line} {found.group(0)}"
    variant = _wheel_variant(src.text(ROCM_FILES[1]) or "", src)
    if variant:
        facts["wheel_variant"], facts["wheel_rocm"], evidence["rocm.wheel_variant"] = variant
    return facts, evidence


def _wheel_variant(doc: str, src: Source) -> tuple[str, str, str] | None:
    """The variant whose supported versions name this release, else the one marked the
    default, else the newest ROCm the intro sentence names (the release's own wheels)."""
    rows = [(m.group(1), m.group(2), m.group(3), m.start()) for m in _WHEEL_ROW.finditer(doc)]
    here = ROCM_FILES[1]
    for variant, rocm, releases, at in rows:
        if "(default)" in releases:
            return variant, rocm, f"{here}:{doc.count(chr(10), 0, at) + 1} marked default"
    sentence = _WHEEL_SENTENCE.search(doc)
    if not sentence:
        return None
    named = re.findall(r"ROCm (\d+\.\d+(?:\.\d+)?)", sentence.group(1))
    if not named:
        return None
    rocm = max(named, key=lambda v: tuple(int(p) for p in v.split(".")))
    line = doc.count("\n", 0, sentence.start()) + 1
    shown = sentence.group(0).strip()
    return "rocm" + rocm.replace(".", "").ljust(3, "0"), rocm, f"{here}:{line} {shown}"


# --------------------------------------------------------------------------- assembling & CLI


def read_release(version: str, src: Source) -> dict[str, Any]:
    """The data file's content for one release (see the module docstring for the format)."""
    flags, flag_notes = read_serve_flags(src)
    for name, flag in flags.items():
        if flag.get("choices") == []:  # a registry filled at run time (reasoning parsers)
            flag["choices"] = None
            flag_notes[f"serve_flags.{name}.choices"] = "filled at run time: free-form here"
    rd = Reader(src)
    defaults, evidence = read_defaults(rd)
    tiers, tiers_where = read_batching_defaults(rd)
    semantics, sem_ev, messages = read_semantics(rd)
    rocm, rocm_ev = read_rocm(src)
    evidence.update(rocm_ev)
    evidence.update(flag_notes)
    evidence.update(sem_ev)
    evidence["batching_defaults"] = tiers_where
    return {
        "version": version,
        "source": {"file": src.file, "sha256": src.sha256, "read_by": READ_BY},
        "serve_flags": flags,
        "defaults": defaults,
        "batching_defaults": tiers,
        "semantics": semantics,
        "messages": messages,
        "rocm": rocm,
        "evidence": evidence,
    }


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def version_of(archive: Path) -> str:
    match = re.match(r"vllm-(\d+(?:\.\d+)*(?:\.post\d+)?)", archive.name)
    if not match:
        raise SourceError(f"{archive.name}: cannot tell the vLLM version from the file name")
    return match.group(1)


def _archives(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """(version, archive or None when it would need the network in --check mode)."""
    if args.sdist or args.wheel:
        path = Path(args.sdist or args.wheel)
        return [(version_of(path), path)]
    out: list[tuple[str, Path | None]] = []
    for version in args.versions:
        cached = args.cache / f"vllm-{version}.tar.gz"
        if args.check:
            out.append((version, cached if cached.exists() else None))
        else:
            out.append((version, fetch_sdist(version, args.cache)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", nargs="+", default=DEFAULT_VERSIONS)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true",
                        help="re-read from the cache only; exit 1 if a data file would change")
    parser.add_argument("--sdist", help="read this local sdist instead of downloading")
    parser.add_argument("--wheel", help="read this local wheel instead of downloading")
    args = parser.parse_args(argv)
    stale = 0
    for version, archive in _archives(args):
        target = args.out / f"{version}.json"
        if archive is None:
            print(f"{version}: skipped, vllm-{version}.tar.gz not in {args.cache}")
            continue
        text = render(read_release(version, load_archive(archive)))
        if args.check:
            same = target.exists() and target.read_text() == text
            stale += not same
            print(f"{version}: {'up to date' if same else 'WOULD CHANGE'}")
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"{version}: wrote {target} ({len(json.loads(text)['serve_flags'])} serve flags)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
