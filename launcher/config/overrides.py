"""Command-line overrides: parse `KEY=VALUE` and apply it to a sweep file's raw data.

An override's key is dotted like the file's (`job.epochs=1`, `grid.seed=0,1`); its value is
read as YAML, and a comma list sweeps it, while brackets make one list value, as in Hydra
(`job.members=[alexnet,inception]`). Applied keys are recorded as coming from the command
line, so errors about them say `<command line>` instead of a line of the file, and name the
key as the user wrote it (`job.lr`, where `job.lr=0.1,0.01` became the grid axis `lr`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from launcher.config.yamlsource import CMDLINE, SweepFileError, dotted, parse_yaml, printable

# Section keys whose value is a list: a single override value becomes a list of one.
_LIST_KEYS = ("include_gpus", "exclude_gpus", "sbatch_lines", "setup")


def parse_override(text: str) -> tuple[str, Any]:
    """Return (dotted key, value) of `KEY=VALUE`; a comma list gives a list of values."""
    key, value, _ = parse_sweep_override(text)
    return key, value


def parse_sweep_override(text: str) -> tuple[str, Any, bool]:
    """Return (dotted key, value, whether it sweeps) of `KEY=VALUE`: `a,b` sweeps the values
    a and b, `[a,b]` is the one list value [a, b]."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SweepFileError(CMDLINE, None, printable(text), "an override is KEY=VALUE, "
                             "e.g. job.epochs=1 or grid.seed=0,1")
    if key == "name":  # a name is data: keep it exactly as typed
        return key, value, False
    value = value.strip()
    if value[:1] in ("[", "{", "'", '"') or "," not in value:
        return key, _yaml_value(key, value), False
    return key, [_yaml_value(key, part.strip()) for part in value.split(",")], True


def _yaml_value(key: str, text: str) -> Any:
    try:
        return parse_yaml(text, CMDLINE)[0]
    except SweepFileError as exc:
        raise SweepFileError(CMDLINE, None, key,
                             f"cannot parse value {text!r}: {exc.message}") from None


def apply_overrides(raw: dict, lines: dict, overrides: Sequence[str],
                    top_keys: Sequence[str]) -> dict[tuple, str]:
    """Apply overrides to the raw file data in place; their keys point at the command line.
    Return the key path -> the key as typed, where the two differ.

    `job.KEY=V` pins KEY for every job (taking it out of the grid and the points);
    `job.KEY=a,b` and `grid.KEY=a,b` sweep it; `job.KEY=[a,b]` sets one list value;
    `seeds=N` and a seed axis replace each other. An override whose first part is not one
    of `top_keys` is an error.
    """
    typed: dict[tuple, str] = {}
    seeds_by = [t for t in overrides
                if t.partition("=")[0].strip() in ("seeds", "grid.seed", "job.seed")]
    if len(seeds_by) > 1:  # each replaces the other: which one won would depend on order
        raise SweepFileError(CMDLINE, None, "seeds", f"set twice ({', '.join(seeds_by)}); "
                             "give seeds=N or grid.seed=a,b,..., not both")
    for text in overrides:
        key, value, sweeps = parse_sweep_override(text)
        top, _, rest = key.partition(".")
        parts = tuple(rest.split(".")) if rest else ()
        if top == "grid" or (top == "job" and sweeps and rest != "command"):
            if not rest:
                raise SweepFileError(CMDLINE, None, key, "say which key to sweep: grid.KEY=a,b")
            _set(raw, lines, ("grid", rest), value if isinstance(value, list) else [value],
                 top_keys)
            if top == "job":
                typed[("grid", rest)] = key
            if rest == "seed":
                raw.pop("seeds", None)
            continue
        if top in ("resources", "slurm") and rest in _LIST_KEYS and not isinstance(value, list):
            value = [value]
        _set(raw, lines, (top,) + parts, value, top_keys)
        if top == "job" and parts:
            _pin(raw, lines, rest)
        if top == "seeds" and isinstance(raw.get("grid"), dict):
            raw["grid"].pop("seed", None)
    return typed


def _pin(raw: dict, lines: dict, key: str) -> None:
    """Take key (and keys under it) out of the grid and every point: the command line wins."""
    grid, points = raw.get("grid"), raw.get("points")
    owners = [(("grid",), grid)] + [(("points", i), p) for i, p in enumerate(
        points if isinstance(points, list) else []) if isinstance(p, dict)]
    for path, mapping in owners:
        for swept in [k for k in mapping or () if k == key or k.startswith(key + ".")]:
            del mapping[swept]
            _forget(lines, path + (swept,))
    if key == "seed":
        raw.pop("seeds", None)


def _set(raw: dict, lines: dict, path: tuple, value: Any, top_keys: Sequence[str]) -> None:
    if path[0] not in top_keys:
        raise SweepFileError(CMDLINE, None, dotted(path), "unknown key", top_keys)
    node = raw
    for i, part in enumerate(path[:-1]):
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise SweepFileError(CMDLINE, None, dotted(path),
                                 f"cannot set it: '{dotted(path[:i + 1])}' is not a mapping")
    node[path[-1]] = value
    _forget(lines, path)
    lines[path] = None


def _forget(lines: dict, path: tuple) -> None:
    for known in [p for p in lines if p[: len(path)] == path]:
        del lines[known]


def notify_override(command: str) -> str:
    """Return the override that `launch sweep --notify CMD` stands for: notify.command=[...]."""
    import json
    import shlex

    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise SweepFileError(CMDLINE, None, "--notify", f"cannot split {command!r}: {err}") \
            from None
    return f"notify.command={json.dumps(argv)}"
