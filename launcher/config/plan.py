"""What a sweep expands to: one validated plan per job, its id, and the table and file shown.

Jobs are the grid's cartesian product (axes in file order, the last varying fastest), each
combined with every entry of `points` (grid x points); with no grid, the points alone; with
neither, the one job. A job's id is `<slug>-<hash8>`: the slug from its swept values, the hash
over its resolved job mapping, so ids never depend on a job's position in the sweep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from jobs.spec import SPEC_SCHEMA, SpecError, validate_spec
from launcher.config.axes import key_paths, template_pieces
from launcher.config.sweepfile import Sweep
from launcher.config.yamlsource import CMDLINE, SweepFileError, dotted, printable
from launcher.show.text import plural

SLUG_MAX = 48


@dataclass(frozen=True)
class JobPlan:
    """One job: its id, its swept values, its resolved spec and, for command jobs, its argv."""

    job_id: str
    params: dict[str, Any]
    spec: dict[str, Any]
    command: list[str] | None
    # The canonical JSON of spec that the id's hash is over: write it instead of re-encoding.
    spec_json: str = dataclasses.field(default="", repr=False, compare=False)


# ---------------------------------------------------------------- expansion

def plan_jobs(sweep: Sweep) -> list[JobPlan]:
    """Return one JobPlan per job, each validated; SweepFileError names the line at fault."""
    # Slug pieces are made once per grid value and per point, not once per job.
    axes = [(key, values, [_slug_piece(key, v) for v in values])
            for key, values in sweep.grid.items()]
    points = sweep.points or ({},)
    point_pieces = [{k: _slug_piece(k, v) for k, v in point.items()} for point in points]
    template = [template_pieces(arg) for arg in sweep.job["command"]] if sweep.is_command else None
    plans: list[JobPlan] = []
    seen: dict[str, tuple] = {}
    for combo in itertools.product(*(range(len(values)) for _, values, _ in axes)):
        chosen = {key: values[i] for (key, values, _), i in zip(axes, combo, strict=True)}
        pieces = {key: ps[i] for (key, _, ps), i in zip(axes, combo, strict=True)}
        for p_index, point in enumerate(points):
            params = {**chosen, **point}
            origin = (combo, p_index if sweep.points else None)
            spec, command = _resolve(sweep, params, template, origin)
            spec_json = canonical_json(spec)
            digest = hashlib.sha256(spec_json.encode()).hexdigest()
            job_slug = _fit_slug({**pieces, **point_pieces[p_index]})
            plan = JobPlan(f"{job_slug}-{digest[:8]}", params, spec, command, spec_json)
            if digest in seen:
                raise _duplicate(sweep, seen[digest], origin)
            seen[digest] = (plan, origin)
            plans.append(plan)
    return plans


def _resolve(sweep: Sweep, params: dict, template: list | None,
             origin: tuple) -> tuple[dict, list[str] | None]:
    """Return (resolved spec, argv or None) of the job that sets params."""
    if template is None:
        try:  # validate_spec returns new containers, so the job may share the sweep's values
            spec = validate_spec(_assign(sweep.job, params, deep=False))
        except SpecError as exc:
            raise _spec_error(sweep, exc, params, origin) from None
        _check_workers(sweep, spec, params, origin)
        return spec, None
    job = _assign(sweep.job, params, deep=True)  # the spec itself: shares nothing
    return job, [_render(sweep, pieces, i, job) for i, pieces in enumerate(template)]


def _check_workers(sweep: Sweep, spec: dict, params: dict, origin: tuple) -> None:
    """Raise when a job asks for more DataLoader workers than its CPUs leave room for.

    A job's CPUs are its main process plus its workers: more workers than that would run
    outside the CPU budget every user of the machine shares.
    """
    asked = spec.get("num_workers")
    slurm = sweep.executor == "slurm"
    cpus = sweep.slurm.cpus_per_task if slurm else sweep.resources.cpus_per_job
    if asked is None or asked <= cpus - 1:
        return
    path, shown = _swept_origin(sweep, params, ("num_workers",), origin)
    where = "slurm.cpus_per_task" if slurm else "resources.cpus_per_job"
    raise sweep.locations.error(
        path, f"{asked} DataLoader workers, but a job has {plural(cpus, 'CPU')} ({where}): "
        f"at most {plural(cpus - 1, 'worker')} beside its main process; raise {where} or ask "
        "for fewer",
        key=shown)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _assign(job: dict, params: dict, deep: bool) -> dict:
    """Return job with each dotted key of params set; mappings on the way are copied."""
    out = _copy(job) if deep else dict(job)
    for key, value in params.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)  # None: e.g. `repeat: null` (off) swept as repeat.max
            node[part] = {} if child is None else (child if deep else dict(child))
            node = node[part]
        node[leaf] = _copy(value) if deep else value
    return out


def _lookup(job: dict, key: str) -> Any:
    node: Any = job
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _arg_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _render(sweep: Sweep, pieces: list, index: int, job: dict) -> str:
    """Return one argv item with its placeholders filled from the job's values."""
    out = []
    for literal, key, spec in pieces:
        out.append(literal)
        if key is None:
            continue
        value = _lookup(job, key)
        if value is None:
            raise sweep.locations.error(
                ("job", "command", index), f"placeholder {{{key}}} has no value: give "
                f"job.{key} a value (grid and points may then sweep it), or write {{{{ and }}}} "
                "for a literal brace", key_paths(job))
        try:
            out.append(format(value, spec) if spec else _arg_text(value))
        except (TypeError, ValueError) as exc:
            raise sweep.locations.error(("job", "command", index),
                                        f"cannot format {{{key}:{spec}}}: {exc}") from None
    return "".join(out)


def _spec_parts(key: str) -> tuple:
    return tuple(int(p[1:-1]) if p.startswith("[") else p
                 for p in re.findall(r"\[\d+\]|[^.\[\]]+", key or ""))


def _unknown_key(parts: tuple) -> tuple[str, ...] | None:
    """Return the keys allowed where parts leaves the spec schema, or None if it stays in."""
    fields = SPEC_SCHEMA
    for part in parts:
        if isinstance(part, int):
            return None
        if part not in fields:
            return tuple(fields)
        if fields[part].kind != "section":
            return None
        fields = fields[part].fields
    return None


def _swept_origin(sweep: Sweep, params: dict, parts: tuple, origin: tuple) -> tuple:
    """Return (sweep-file path, key shown) of the grid value or point that set spec key parts."""
    combo, p_index = origin
    for key in params:
        swept = tuple(key.split("."))
        n = min(len(swept), len(parts))
        if parts and swept[:n] == parts[:n]:
            shown = dotted(parts) if len(parts) >= len(swept) else key
            if key in sweep.grid:
                return ("grid", key, combo[list(sweep.grid).index(key)]), f"grid.{shown}"
            return ("points", p_index, key), f"points[{p_index}].{shown}"
    return ("job",) + parts, dotted(("job",) + parts)


def _spec_error(sweep: Sweep, exc: SpecError, params: dict, origin: tuple) -> SweepFileError:
    parts = _spec_parts(exc.key)
    allowed = _unknown_key(parts)
    message = exc.message if allowed is None else "not a key of the job spec"
    path, shown = _swept_origin(sweep, params, parts, origin)
    if params and path[0] == "job":
        message += f" (in the job with {_params_text(params)})"
    pinned = _pinned_text(sweep)
    if pinned and sweep.locations.locate(path)[0] != CMDLINE:
        message += f" (the command line sets {pinned} for every job, over grid and points)"
    return sweep.locations.error(path, message, allowed or (), key=shown)


def _pinned_text(sweep: Sweep) -> str:
    """Return e.g. "job.model=resnet9": the job keys that overrides pinned, for errors."""
    pinned = [p for p, line in sweep.locations.lines.items()
              if line is None and len(p) > 1 and p[0] == "job"]
    return ", ".join(f"{dotted(p)}={printable(_arg_text(_lookup(sweep.job, dotted(p[1:]))))}"
                     for p in pinned)


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={printable(_arg_text(v))}" for k, v in params.items())


def _duplicate(sweep: Sweep, first: tuple, origin: tuple) -> SweepFileError:
    (first_plan, (first_combo, _)), (combo, p_index) = first, origin
    path: tuple = ("points", p_index) if p_index is not None else ("grid",)
    for key, a, b in zip(sweep.grid, first_combo, combo, strict=True):
        if a != b:
            path = ("grid", key, b)
            break
    return sweep.locations.error(
        path, f"gives the same job as {_params_text(first_plan.params) or 'another'} "
        f"(job {first_plan.job_id}): every job must differ", key=dotted(path[:2]))


# ---------------------------------------------------------------- ids

def canonical_json(spec: dict) -> str:
    """Return the canonical JSON of a resolved job mapping: sorted keys, compact separators."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False)


def slug(params: dict) -> str:
    """Return the readable part of a job id: swept values, only [A-Za-z0-9._=-], <= 48 chars."""
    return _fit_slug({k: _slug_piece(k, v) for k, v in params.items()})


_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def _slug_piece(key: str, value: Any) -> str:
    return _UNSAFE.sub("-", f"{key.rsplit('.', 1)[-1]}={_slug_text(value)}")


def _fit_slug(pieces: dict[str, str]) -> str:
    parts = [pieces[k] for k in sorted(pieces, key=lambda k: (k == "seed", k))]  # any order
    # Trim the longest parts first, so that every swept key (the seed too) keeps a piece.
    width = max((len(p) for p in parts), default=0)
    while width > 1 and sum(min(len(p), width) for p in parts) + len(parts) - 1 > SLUG_MAX:
        width -= 1
    text = "_".join(p[:width].rstrip("-") for p in parts).strip("._=-")
    return text[:SLUG_MAX].rstrip("._=-") or "job"


def _slug_text(value: Any) -> str:
    if isinstance(value, dict):  # {layer: fc2, min: 1} -> fc2-1: the table shows the keys
        return "-".join(_slug_text(v) for v in value.values())
    if isinstance(value, list):
        return "-".join(_slug_text(v) for v in value)
    return _arg_text(value)


def job_id_for(spec: dict, params: dict) -> str:
    """Return the stable id `<slug>-<hash8>` of a job from its resolved spec and swept values."""
    return f"{slug(params)}-{hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:8]}"


def make_sweep_id(name: str, now: datetime | float | None = None) -> str:
    """Return the sweep id: the name made path-safe, "-", local time as YYYYmmdd-HHMMSS."""
    if not isinstance(now, datetime):
        now = datetime.fromtimestamp(time.time() if now is None else now)
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    clean = re.sub(r"--+", "-", clean).strip("._-")[:40].rstrip("._-") or "sweep"
    return f"{clean}-{now:%Y%m%d-%H%M%S}"


# ---------------------------------------------------------------- what gets shown and written

def resolved_yaml(sweep: Sweep) -> str:
    """Return the resolved sweep file: defaults filled, overrides applied, seeds in the grid."""
    data = {
        "name": sweep.name, "executor": sweep.executor, "job": sweep.job, "grid": sweep.grid,
        "points": [dict(p) for p in sweep.points],
        "resources": sweep.resources.to_json(), "slurm": sweep.slurm.to_json(),
        "max_retries": sweep.max_retries, "timeout_min": sweep.timeout_min,
    }
    if not sweep.points:
        del data["points"]
    if sweep.notify is not None:
        data["notify"] = sweep.notify.to_json()
    header = f"# resolved from {printable(sweep.source_path)}"
    if sweep.overrides:
        header += " with " + printable(shlex.join(sweep.overrides))
    return header + "\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _cell(value: Any, width: int = 40) -> str:
    """Return a value for the plan table, written as `launch results` writes it."""
    if value is None:
        return "-"
    if isinstance(value, dict):  # k=v,k=v, as in `launch results`
        text = ",".join(f"{k}={_cell(v, width)}" for k, v in sorted(value.items()))
    else:
        text = printable(_arg_text(value))
    return text if len(text) <= width else text[: width - 3] + "..."


def render_plan(sweep: Sweep, plans: Sequence[JobPlan]) -> str:
    """Return the --dry-run table (id, swept values, seed, GPUs, CPUs) and a summary line."""
    res = sweep.resources
    keys = list(dict.fromkeys(k for p in plans for k in p.params if k != "seed"))
    gpus = res.gpus_needed
    gpu_text = f"1/{res.jobs_per_gpu}" if gpus and res.jobs_per_gpu > 1 else str(gpus)
    header = ["JOB ID", *(k.upper() for k in keys), "SEED", "GPUS", "CPUS"]
    rows = []
    for p in plans:
        # A key a job's point does not set still has a value: the base job's.
        row = [p.job_id, *(_cell(p.params[k] if k in p.params else _lookup(p.spec, k))
                           for k in keys),
               _cell(p.spec.get("seed", "-")), gpu_text, str(res.cpus_per_job)]
        if p.command is not None:
            row.append(_cell(shlex.join(p.command), 80))
        rows.append(row)
    if sweep.is_command:
        header.append("COMMAND")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines + [_summary(sweep, len(plans), gpu_text)]) + "\n"


def _summary(sweep: Sweep, count: int, gpu_text: str) -> str:
    """Return the lines under the plan: where the jobs come from, then where they run."""
    res = sweep.resources
    axes = " x ".join(plural(len(v), "seed") if k == "seed" else
                      f"{len(v)} values of {k}" for k, v in sweep.grid.items())
    if sweep.points:
        axes = f"{axes} x {len(sweep.points)} points" if axes else f"{len(sweep.points)} points"
    device = {"auto": "on GPUs, or on the CPU where the machine has none",
              "cpu": "on the CPU", "gpu": "on GPUs only"}[res.device]
    if res.gpus_needed == 0:
        device = "on the CPU"
    pinned = _pinned_text(sweep)
    lines = [f"{plural(count, 'job')} from {axes or 'the job alone'}"
             + (f"; the command line sets {pinned} for every job" if pinned else "")
             + f"; executor {sweep.executor}",
             f"GPUs per job: {gpu_text}, {device}; CPUs per job: {res.cpus_per_job} of a "
             f"budget of {res.cpu_budget} (at most {res.cpu_budget // res.cpus_per_job} at "
             "once)",
             "dry run: nothing written, nothing started"]
    return "\n".join(lines)
