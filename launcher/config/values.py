"""Value rules of the files users write (sweep files, house rules) and the check that applies one.

A rule takes a value and returns None when it is fine, else (what is wrong, the allowed
values); `check` raises the file's error at the value's key and line, `section` checks a
mapping of known keys.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for the hints: launch status reads the rules without YAML's import
    from launcher.config.yamlsource import SourceMap

Rule = Any  # Callable[[Any], tuple[str, tuple] | None]


def integer(minimum: int, maximum: int = 10**9) -> Any:
    def rule(value: Any) -> tuple[str, tuple] | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {value!r}", ()
        if not minimum <= value <= maximum:
            return f"must be >= {minimum} and <= {maximum}, got {value}", ()
        return None
    return rule


def number(above: float, at_most: float = math.inf) -> Any:
    def rule(value: Any) -> tuple[str, tuple] | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {value!r}", ()
        if not (above < value <= at_most):
            limit = "" if at_most == math.inf else f" and <= {at_most:g}"
            return f"must be > {above:g}{limit}, got {value}", ()
        return None
    return rule


def one_of(*choices: str) -> Any:
    def rule(value: Any) -> tuple[str, tuple] | None:
        ok = isinstance(value, str) and value in choices
        return None if ok else (f"{value!r} is not one of the choices", choices)
    return rule


def optional(rule: Any) -> Any:
    return lambda value: None if value is None else rule(value)


def word_or(word: str, rule: Any) -> Any:
    """Return a rule that takes word as well as what rule takes (jobs_per_gpu: auto or N)."""
    def either(value: Any) -> tuple[str, tuple] | None:
        problem = None if value == word else rule(value)
        if problem is None:
            return None
        return f"must be {word!r} or {problem[0].removeprefix('must be ')}", problem[1]
    return either


def slurm_token(value: Any) -> tuple[str, tuple] | None:
    # Slurm values end up in `#SBATCH --key=value` lines: whitespace could smuggle in more.
    if isinstance(value, str) and value and re.fullmatch(r"[^\s\x00-\x1f\x7f]+", value):
        return None
    return f"must be a non-empty string without spaces or control characters, got {value!r}", ()


def gpu_list(value: Any) -> tuple[str, tuple] | None:
    items = value if isinstance(value, list) else [None]
    for item in items:
        if not (isinstance(item, str) and item) and integer(0)(item) is not None:
            return f"must be a list of GPU indices or UUIDs, got {value!r}", ()
    return None


def line_list(prefix: str) -> Any:
    def rule(value: Any) -> tuple[str, tuple] | None:
        for item in value if isinstance(value, list) else [None]:
            if not isinstance(item, str) or not item.startswith(prefix) or "\n" in item or (
                    "\r" in item or "\x00" in item):
                want = "one-line strings" + (f" starting with {prefix!r}" if prefix else "")
                return f"must be a list of {want}, got {item!r}", ()
        return None
    return rule


def check(src: SourceMap, path: tuple, value: Any, rule: Any) -> Any:
    problem = rule(value)
    if problem:
        raise src.error(path, *problem)
    return tuple(value) if isinstance(value, list) else value


def section(src: SourceMap, name: str, raw: Any, rules: dict, defaults: dict) -> dict:
    """Return the mapping at key `name` checked key by key, defaults filled; raise on a fault."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise src.error((name,), "must be a mapping", tuple(rules))
    values = dict(defaults)
    for key, value in raw.items():
        if key not in rules:
            raise src.error((name, key), "unknown key", tuple(rules))
        values[key] = check(src, (name, key), value, rules[key])
    return values
