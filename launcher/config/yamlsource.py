"""Reading YAML with the line of every key, and the error that points at one.

`read_yaml` and `parse_yaml` return the data and a map from each key path to its line;
a `SourceMap` turns a key path back into `file:line`, so every `SweepFileError` names the
file, the line, the dotted key and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from launcher.errors import UserError

CMDLINE = "<command line>"
# Far above any hand-written file (a 10,000-entry points list is ~100,000 nodes); it stops
# alias bombs ("billion laughs") before they eat the machine.
MAX_NODES = 250_000


class SweepFileError(UserError):
    """A bad sweep file or override: names the file, the line, the key and what is allowed."""

    def __init__(self, file: str, line: int | None, key: str, message: str,
                 allowed: Sequence[Any] = ()) -> None:
        self.file, self.line, self.key = file, line, key
        self.message, self.allowed = message, tuple(allowed)
        super().__init__(str(self))

    def __str__(self) -> str:
        text = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.key:
            text += f": key '{printable(self.key)}'"
        text += f": {self.message}"
        if self.allowed:
            text += f" (allowed: {', '.join(printable(str(a)) for a in self.allowed)})"
        return text


def printable(text: str) -> str:
    """Return `text` with control characters escaped, so a value cannot break a line."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


def dotted(path: Sequence[Any]) -> str:
    """Return a key path as users write it: `grid.optimizer.lr[1]`, `points[0].model`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(frozen=True)
class SourceMap:
    """Where each key path came from: a line of `file`, or None for the command line."""

    file: str
    lines: Mapping[tuple, int | None]
    # The `seeds:` shorthand becomes the grid axis `seed`; errors should still point at `seeds`.
    aliases: Mapping[tuple, tuple] = field(default_factory=dict)
    # Keys as the user typed them where they differ from their path (`job.lr=0.1,0.01` is
    # the grid axis `lr`): errors name what was typed.
    typed: Mapping[tuple, str] = field(default_factory=dict)

    def name_of(self, path: tuple, shown: str) -> str:
        """Return the key to show for path: as typed on the command line, else shown."""
        for prefix, name in self.typed.items():
            if tuple(path[: len(prefix)]) == prefix:
                return name
        return shown

    def locate(self, path: tuple) -> tuple[str, int | None]:
        """Return (file label, line) for a key path, walking up to the nearest known key."""
        for prefix, target in self.aliases.items():
            if path[: len(prefix)] == prefix:
                path = target + path[len(prefix):]
        while True:
            if path in self.lines:
                line = self.lines[path]
                return (self.file, line) if line is not None else (CMDLINE, None)
            if not path:
                return self.file, 1
            path = path[:-1]

    def error(self, path: tuple, message: str, allowed: Sequence[Any] = (),
              key: str | None = None) -> SweepFileError:
        """Return the error for `path` (raise it); `key` overrides the displayed key."""
        file, line = self.locate(tuple(path))
        shown = self.name_of(tuple(path), dotted(path)) if key is None else key
        return SweepFileError(file, line, shown, message, allowed)

class _Loader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):
    """Safe YAML, plus YAML 1.2 floats without a dot (`1e-3`), which YAML 1.1 reads as text."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(path: str | Path) -> tuple[Any, dict[tuple, int | None], str]:
    """Return (data, line of every key path, text) of a YAML file; SweepFileError on any fault."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SweepFileError(file, None, "", f"cannot read it: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SweepFileError(file, line, "", "not UTF-8 text") from None
    data, lines = parse_yaml(text, file)
    return data, lines, text


def parse_yaml(text: str, file: str) -> tuple[Any, dict[tuple, int | None]]:
    """Return (data, line of every key path) of YAML text, rejecting duplicate keys."""
    loader = _Loader(text)
    lines: dict[tuple, int | None] = {(): 1}
    try:
        node = loader.get_single_node()
        data = None if node is None else _Builder(loader, SourceMap(file, lines)).build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = exc.context or ""
        if context and exc.context_mark and exc.context_mark.line != mark.line:
            context += f" (from line {exc.context_mark.line + 1})"
        problem = " ".join(str(p) for p in (context, exc.problem) if p)
        raise SweepFileError(file, mark.line + 1 if mark else None, "",
                             f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:  # the reader's errors (control characters) carry a position
        position = getattr(exc, "position", None)
        line = text[:position].count("\n") + 1 if isinstance(position, int) else None
        raise SweepFileError(file, line, "", f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    return data, lines


class _Builder:
    """Turns a composed YAML node tree into Python values, recording each key's line."""

    def __init__(self, loader: Any, src: SourceMap) -> None:
        self.loader, self.src, self.nodes, self.active = loader, src, 0, set()

    def build(self, node: Any, path: tuple) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES or id(node) in self.active:
            why = "recursive YAML alias" if id(node) in self.active else (
                f"the file expands to over {MAX_NODES} YAML values (aliases?)")
            raise SweepFileError(self.src.file, node.start_mark.line + 1, dotted(path[:1]), why)
        if isinstance(node, yaml.ScalarNode):
            return self.loader.construct_object(node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                out = []
                for i, item in enumerate(node.value):
                    self.src.lines[path + (i,)] = item.start_mark.line + 1
                    out.append(self.build(item, path + (i,)))
                return out
            return self.build_mapping(node, path)
        finally:
            self.active.discard(id(node))

    def build_mapping(self, node: Any, path: tuple) -> dict:
        out: dict = {}
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merges.append(value_node)
                continue
            line = key_node.start_mark.line + 1
            key = self.loader.construct_object(key_node) if isinstance(
                key_node, yaml.ScalarNode) else None
            if isinstance(key, bool):  # YAML 1.1 reads `on:`, `yes:` so; a key is a name
                key = key_node.value
            if not isinstance(key, str):
                raise SweepFileError(self.src.file, line, dotted(path) or "(top level)",
                                     f"keys must be strings, got {key!r}; quote it")
            if key in out:
                first = self.src.lines[path + (key,)]
                raise SweepFileError(self.src.file, line, dotted(path + (key,)),
                                     f"duplicate key (first at line {first})")
            self.src.lines[path + (key,)] = line
            out[key] = self.build(value_node, path + (key,))
        for merge in merges:  # `<<: *base`: explicit keys win, as in YAML's merge key spec
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise self.src.error(path, "`<<` must merge a mapping")
                for key, value in self.build_mapping(source, path + ("<<",)).items():
                    out.setdefault(key, value)
        return out
