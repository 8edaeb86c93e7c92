"""The shape of a sweep's job, grid, points and seeds, and the placeholders of a command.

`check_axes` checks what the sweep varies: a job mapping of plain data (or a command
template), grid axes and points whose keys are dotted paths into it, each swept once. Whether
a job's values suit the job spec is checked later, per job, by `launcher.plan.plan_jobs`.
"""

from __future__ import annotations

import math
import re
import shlex
import string
from typing import Any

from launcher.config.yamlsource import SourceMap, dotted

MAX_JOBS = 100_000  # of one sweep: plan, folder and status stay quick, and a typo fails early
MAX_FORMAT_WIDTH = 1000  # of a placeholder's width or precision, e.g. {lr:.6f}
# A placeholder names a key of the job mapping, dotted for nested keys: {lr}, {optimizer.lr}.
_PLACEHOLDER = re.compile(r"[^.{}\[\]!:\s]+(?:\.[^.{}\[\]!:\s]+)*")
SEED_FROM_ENV = "seed_from_env"  # a command job's key: its program reads $LAUNCH_SEED itself
# Keys a command job has whether or not a placeholder uses them: the seed reaches every job
# as $LAUNCH_SEED (launcher/contract.py).
COMMAND_KEYS = ("seed", SEED_FROM_ENV)


def check_axes(src: SourceMap, raw: dict) -> tuple[dict, dict[str, list], tuple[dict, ...]]:
    """Return (job, grid with the seeds axis, points) checked for shape; SweepFileError if not."""
    if "job" not in raw:
        raise src.error((), "missing: the mapping that describes one job", key="job")
    job = _check_job(src, raw["job"])
    grid = _check_grid(src, raw.get("grid"), raw.get("seeds"))
    points = _check_points(src, raw.get("points"))
    _check_size(src, grid, points)
    for i, point in enumerate(points or ({},)):
        swept = [(("grid", k), k) for k in grid] + [(("points", i, k), k) for k in point]
        for n, (path, key) in enumerate(swept):
            for other_path, other in swept[:n]:
                if key == other or key.startswith(other + ".") or other.startswith(key + "."):
                    raise src.error(path, f"overlaps '{dotted(other_path)}', which also sets "
                                    f"'{other}'; sweep each key once")
            _check_reachable(src, job, path, key)
    return job, grid, points


def _check_value(src: SourceMap, path: tuple, value: Any, job_keys: bool = False) -> None:
    """Raise unless value is plain data (JSON): strings, numbers, booleans, null, lists, maps."""
    if isinstance(value, dict):
        for key, item in value.items():
            if job_keys and "." in key:
                raise src.error(path + (key,), "a job key may not contain '.', which "
                                "separates nested keys")
            _check_value(src, path + (key,), item, job_keys)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(src, path + (i,), item, job_keys)
    elif isinstance(value, float) and not math.isfinite(value):
        raise src.error(path, f"must be a finite number, got {value}")
    elif not isinstance(value, (str, int, float, bool, type(None))):
        raise src.error(path, f"a {type(value).__name__} is not allowed here; quote it")


def _check_job(src: SourceMap, job: Any) -> dict:
    if not isinstance(job, dict) or not job:
        raise src.error(("job",), "must be a non-empty mapping: a built-in model's spec, "
                        "or a `command` template with its values")
    _check_value(src, ("job",), job, job_keys=True)
    if "command" not in job:
        return job
    if "model" in job:
        raise src.error(("job", "model"), "a job is a built-in model (job.model) or your own "
                        "program (job.command), not both: keep one of the two keys")
    if not isinstance(job.get(SEED_FROM_ENV, False), bool):
        raise src.error(("job", SEED_FROM_ENV), "must be true or false: true says the "
                        "program reads its seed from $LAUNCH_SEED")
    path = ("job", "command")
    command = job["command"]
    if isinstance(command, str):
        try:  # split like a shell would, only to build the argv list: it never meets a shell
            command = shlex.split(command)
        except ValueError as exc:
            raise src.error(path, f"cannot split the command: {exc}") from None
    if not isinstance(command, list) or not command:
        raise src.error(path, "must be a non-empty list of arguments (or one string)")
    argv = []
    for i, arg in enumerate(command):
        if isinstance(arg, bool) or not isinstance(arg, (str, int, float)):
            raise src.error(path + (i,), f"an argument is a string or a number, got {arg!r}")
        arg = arg if isinstance(arg, str) else str(arg)
        try:
            template_pieces(arg)
        except PlaceholderError as exc:
            raise src.error(path + (i,), str(exc)) from None
        except ValueError as exc:  # Python's own words on a stray brace
            hint = "write {{ and }} for literal braces"
            raise src.error(path + (i,), f"{exc} ({hint})") from None
        argv.append(arg)
    return {**job, "command": argv}


def _check_key(src: SourceMap, path: tuple, key: str) -> None:
    if not _PLACEHOLDER.fullmatch(key):
        raise src.error(path, "a key is a name or a dotted path like optimizer.lr")
    if key == "command" or key.startswith("command."):
        raise src.error(path, "the command template cannot be swept; sweep the values "
                        "its placeholders use")


def _check_grid(src: SourceMap, raw: Any, seeds: Any) -> dict[str, list]:
    if raw is not None and not isinstance(raw, dict):
        raise src.error(("grid",), "must be a mapping of KEY: [values, ...]")
    grid = {}
    for key, values in (raw or {}).items():
        path = ("grid", key)
        _check_key(src, path, key)
        if not isinstance(values, list):
            raise src.error(path, f"must be a list of values to sweep, e.g. [{values!r}]")
        if not values:
            raise src.error(path, "empty list: a grid axis needs at least one value")
        _check_value(src, path, values)
        grid[key] = values
    if seeds is None:
        return grid
    if "seed" in grid:
        raise src.error(("seeds",), "both `seeds` and `grid.seed` sweep the seed; keep one")
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > MAX_JOBS:
        raise src.error(("seeds",), f"{seeds:,} seeds would be {seeds:,} jobs at least; "
                        f"a sweep has at most {MAX_JOBS:,}")
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        grid["seed"] = list(range(seeds))
        return grid
    if not isinstance(seeds, list) or not seeds or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise src.error(("seeds",), "must be a count N >= 1 (seeds 0..N-1) or a non-empty "
                        f"list of integers >= 0, got {seeds!r}")
    grid["seed"] = list(seeds)
    return grid


def _check_size(src: SourceMap, grid: dict[str, list], points: tuple[dict, ...]) -> None:
    """Raise when the sweep would have more than MAX_JOBS jobs, naming its largest axis."""
    total = len(points) or 1
    for values in grid.values():
        total *= len(values)
    if total > MAX_JOBS:
        axes = [(len(v), ("grid", k)) for k, v in grid.items()] + [(len(points), ("points",))]
        _, path = max(axes)
        raise src.error(path, f"the sweep would have {total:,} jobs; at most {MAX_JOBS:,}: "
                        "split it, or sweep fewer values")


def _check_points(src: SourceMap, raw: Any) -> tuple[dict, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise src.error(("points",), "must be a non-empty list of mappings, one per variant")
    for i, point in enumerate(raw):
        if not isinstance(point, dict):  # {} is allowed: the job as it is
            raise src.error(("points", i), "a point is a mapping of KEY: value")
        for key, value in point.items():
            _check_key(src, ("points", i, key), key)
            _check_value(src, ("points", i, key), value)
    return tuple(raw)


def _check_reachable(src: SourceMap, job: dict, path: tuple, key: str) -> None:
    """Raise when a swept key cannot be set: a command job must already have it."""
    node: Any = job
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) and node is not None:
            raise src.error(path, f"'job.{'.'.join(parts[:i])}' is not a mapping")
        if "command" in job and key != "seed" and (node is None or part not in node):
            raise src.error(path, "no such key in job: a command job's sweepable values "
                            "are its own keys (add a default there)", key_paths(job))
        node = node.get(part) if isinstance(node, dict) else None


def placeholders(job: dict) -> list[str]:
    """Return the keys the placeholders of a command job's template name, in order."""
    keys = [key for arg in job.get("command", ()) for _, key, _ in template_pieces(arg) if key]
    return list(dict.fromkeys(keys))


def check_command_overrides(src: SourceMap, job: dict) -> None:
    """Raise when the command line sets or sweeps a key of a command job that no placeholder
    uses: the jobs would differ in their ids alone (a typo like job.lrr=0.5)."""
    if "command" not in job:
        return
    used = placeholders(job)
    for path, line in src.lines.items():
        if line is not None or len(path) < 2 or path[0] not in ("job", "grid"):
            continue
        key = dotted(path[1:]) if path[0] == "job" else path[1]
        if path[0] == "job" and key.startswith("command") or key in COMMAND_KEYS:
            continue
        if any(key == u or u.startswith(key + ".") or key.startswith(u + ".") for u in used):
            continue
        raise src.error(path, "no placeholder of the command uses it, so it would change "
                        "nothing but the job ids", [f"{{{u}}}" for u in used] or ["(none)"],
                        key=src.name_of(path, dotted(path)))


def key_paths(job: dict, prefix: str = "") -> list[str]:
    """Return the dotted paths of every key in job except the command template."""
    out = []
    for key, value in job.items():
        if not prefix and key == "command":
            continue
        out.append(prefix + key)
        if isinstance(value, dict):
            out.extend(key_paths(value, prefix + key + "."))
    return out


class PlaceholderError(ValueError):
    """A placeholder that parses but names no key or asks for an absurd width; says why."""


def template_pieces(arg: str) -> list[tuple[str, str | None, str]]:
    """Return (literal, placeholder key or None, format spec) pieces of one argv template."""
    pieces = []
    for literal, key, spec, conversion in string.Formatter().parse(arg):
        if key is not None and (conversion or not _PLACEHOLDER.fullmatch(key) or "{" in spec):
            raise PlaceholderError(f"placeholder {{{key}}} must name a key, like {{lr}} or "
                             "{optimizer.lr} (write {{ and }} for literal braces)")
        if key is not None and any(int(n) > MAX_FORMAT_WIDTH for n in re.findall(r"\d+", spec)):
            raise PlaceholderError(f"placeholder {{{key}:{spec}}}: a width or precision is at most "
                             f"{MAX_FORMAT_WIDTH}")
        pieces.append((literal, key, spec or ""))
    return pieces
