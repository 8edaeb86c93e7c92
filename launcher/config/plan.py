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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from jobs.spec import SPEC_SCHEMA, SpecError, validate_spec
from launcher import contract
from launcher.config.axes import SEED_FROM_ENV, key_paths, placeholders, template_pieces
from launcher.config.ids import canonical_json, fit_slug, slug_piece

# Ids have a module of their own (ids.py); these names stay importable from here too.
from launcher.config.ids import job_id_for as job_id_for
from launcher.config.ids import make_sweep_id as make_sweep_id
from launcher.config.ids import slug as slug
from launcher.config.sweepfile import Sweep
from launcher.config.yamlsource import CMDLINE, SweepFileError, dotted, printable
from launcher.show.text import plural

GPUS_PLACEHOLDER = "gpus"  # a command's {gpus}: resources.gpus_per_job, unless job.gpus is set


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
    axes = [(key, values, [slug_piece(key, v) for v in values])
            for key, values in sweep.grid.items()]
    points = sweep.points or ({},)
    point_pieces = [{k: slug_piece(k, v) for k, v in point.items()} for point in points]
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
            job_slug = fit_slug({**pieces, **point_pieces[p_index]})
            plan = JobPlan(f"{job_slug}-{digest[:8]}", params, spec, command, spec_json)
            if digest in seen:
                raise _duplicate(sweep, seen[digest], origin)
            seen[digest] = (plan, origin)
            plans.append(plan)
    _check_seed_use(sweep, plans)
    return plans


def _check_seed_use(sweep: Sweep, plans: list[JobPlan]) -> None:
    """Raise when a command job runs several seeds without using them: every seed would
    run the same program, and "mean +- std over seeds" would average copies of one run."""
    if not sweep.is_command or sweep.job.get(SEED_FROM_ENV):
        return
    seeds = {json.dumps(p.spec.get("seed")) for p in plans}
    command = sweep.job["command"]
    if len(seeds) < 2 or "seed" in placeholders(sweep.job) or any(
            contract.ENV_SEED in arg for arg in command):
        return
    path = ("grid", "seed") if "seed" in sweep.grid else ("job", "command")
    raise sweep.locations.error(
        path, f"{len(seeds)} seeds, but the command uses neither {{seed}} nor "
        f"${contract.ENV_SEED}, so every seed would run the same program: pass it, e.g. "
        f"[python, train.py, --seed, \"{{seed}}\"], or set job.{SEED_FROM_ENV}: true if the "
        f"program reads ${contract.ENV_SEED} itself", key="seeds" if path[0] == "grid" else None)


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
        if value is None and key == GPUS_PLACEHOLDER:  # torchrun --nproc-per-node {gpus}
            value = sweep.resources.gpus_needed
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
    shown = sweep.locations.name_of(path, shown)  # as typed: job.lr, not the axis grid.lr
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


# ---------------------------------------------------------------- what gets shown and written

def resolved_yaml(sweep: Sweep) -> str:
    """Return the resolved sweep file: defaults filled, overrides applied, seeds in the grid."""
    data = {
        "name": sweep.name, "executor": sweep.executor, "job": sweep.job, "grid": sweep.grid,
        "points": [dict(p) for p in sweep.points],
        "resources": sweep.resources.to_json(), "slurm": sweep.slurm.to_json(),
        "max_retries": sweep.max_retries, "oom_retries": sweep.oom_retries,
        "timeout_min": sweep.timeout_min,
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
