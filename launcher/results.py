"""`launch results`: one row per job and mean +- std over seeds per configuration.

Everything is read from the run directory (result.json, state.json, metrics.jsonl, the
specs), so results work the same for local and Slurm sweeps, while a sweep runs and after it
ended. The table is built by a pure function over those files; rendering (results_render.py),
CSV and JSON are pure over the table.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import rundir
from launcher.errors import UserError
from launcher.results_render import fmt_value, render_results

RESULTS_FORMAT = "launch-results/1"
SEED_KEY = "seed"
JOB_FIELDS = ("state", "seed", "test_accuracy", "test_loss", "epochs_done", "wall_time_s", "device")


@dataclass(frozen=True)
class JobRow:
    """One job's outcome: its swept values, state, and numbers from result.json."""

    job_id: str
    params: dict  # the values this job sets, as sweep.json records them
    values: dict  # every swept key: its params, else what its spec says (a point's default)
    state: str
    seed: Any
    test_accuracy: float | None
    test_loss: float | None
    epochs_done: int | None
    epochs: int | None  # planned, from its metrics or spec
    wall_time_s: float | None
    device: str | None

    @property
    def has_result(self) -> bool:
        """Return whether this job has a finished result to aggregate."""
        return self.test_accuracy is not None or self.test_loss is not None


@dataclass(frozen=True)
class Stat:
    """Mean and sample std of one metric over a configuration's seeds (std None below n=2)."""

    n: int
    mean: float | None
    std: float | None


@dataclass(frozen=True)
class ConfigRow:
    """One configuration (the swept values without the seed) summarised over its seeds."""

    params: dict
    values: dict  # as JobRow.values, without the seed
    job_ids: tuple[str, ...]
    test_accuracy: Stat
    test_loss: Stat

    @property
    def n(self) -> int:
        """Return how many of this configuration's jobs have a finished result."""
        return self.test_accuracy.n


@dataclass(frozen=True)
class ResultsTable:
    """A sweep's results: per job in plan order, per configuration in first-seen order."""

    sweep_id: str
    name: str
    param_keys: tuple[str, ...]
    config_keys: tuple[str, ...]
    jobs: tuple[JobRow, ...]
    configs: tuple[ConfigRow, ...]

    def finished(self) -> int:
        """Return how many jobs have a finished result."""
        return sum(1 for job in self.jobs if job.has_result)


def summarise(values: Sequence[float]) -> Stat:
    """Return mean and sample standard deviation of values; std is None for fewer than two."""
    if not values:
        return Stat(0, None, None)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(len(values), statistics.fmean(values), std)


def ordered_keys(info: dict) -> tuple[str, ...]:
    """Return the swept keys: the grid's order first, then any other key a job's params add."""
    keys = list(info.get("grid_keys") or [])
    for job in info.get("jobs", []):
        for key in job.get("params", {}):
            if key not in keys:
                keys.append(key)
    return tuple(keys)


def spec_value(spec: dict, key: str) -> Any:
    """Return the value at a dotted key of a job's spec, or None where it has none."""
    node: Any = spec
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def read_job_row(sweep_path: Path, job_id: str, params: dict, spec: dict,
                 keys: Sequence[str]) -> JobRow:
    """Return one job's row from its state.json, result.json, metrics.jsonl and spec."""
    d = sweep_path / "jobs" / job_id
    state = (rundir.read_json(d / "state.json") or {}).get("state", "pending")
    result = rundir.read_json(d / "result.json") or {}
    if result.get("status") != "finished":
        # a half-written or crashed run's numbers must not enter the mean
        result = {}
    seed = result.get("seed", params.get(SEED_KEY, spec.get(SEED_KEY)))
    last = rundir.read_last_jsonl(d / "metrics.jsonl") or {}
    epochs_done = result.get("epochs_done")
    if epochs_done is None:
        epochs_done = last.get("epoch")
    epochs = last.get("epochs", spec.get("epochs"))
    values = {k: params[k] if k in params else spec_value(spec, k) for k in keys}
    return JobRow(
        job_id=job_id, params=dict(params), values=values, state=state, seed=seed,
        test_accuracy=result.get("test_accuracy"), test_loss=result.get("test_loss"),
        epochs_done=epochs_done, epochs=epochs if isinstance(epochs, int) else None,
        wall_time_s=result.get("wall_time_s"), device=result.get("device"),
    )


def config_key(params: dict) -> str:
    """Return a canonical text for a configuration, so equal configurations group together."""
    return json.dumps({k: v for k, v in params.items() if k != SEED_KEY}, sort_keys=True)


def group_configs(jobs: Sequence[JobRow]) -> tuple[ConfigRow, ...]:
    """Return one row per configuration with mean +- std over its jobs that finished."""
    groups: dict[str, list[JobRow]] = {}
    for job in jobs:
        groups.setdefault(config_key(job.params), []).append(job)
    out = []
    for members in groups.values():
        done = [j for j in members if j.has_result]
        accs = [j.test_accuracy for j in done if j.test_accuracy is not None]
        losses = [j.test_loss for j in done if j.test_loss is not None]
        params = {k: v for k, v in members[0].params.items() if k != SEED_KEY}
        values = {k: v for k, v in members[0].values.items() if k != SEED_KEY}
        ids = tuple(j.job_id for j in members)
        out.append(ConfigRow(params, values, ids, summarise(accs), summarise(losses)))
    return tuple(out)


def collect_results(sweep_id: str, root: Path | None = None) -> ResultsTable:
    """Return the results table of a sweep, read from its run directory."""
    info = rundir.read_sweep_info(sweep_id, root)
    path = rundir.sweep_dir(sweep_id, root)
    keys = ordered_keys(info)
    specs = rundir.read_specs(path)
    jobs = []
    for job in info.get("jobs", []):
        # a run dir from before specs.jsonl has only each job's spec.json
        spec = specs.get(job["id"]) or rundir.read_json(path / "jobs" / job["id"] / "spec.json")
        spec = spec if isinstance(spec, dict) else {}
        jobs.append(read_job_row(path, job["id"], job.get("params", {}), spec, keys))
    config_keys = tuple(k for k in keys if k != SEED_KEY)
    name = info.get("name", sweep_id)
    return ResultsTable(sweep_id, name, keys, config_keys, tuple(jobs), group_configs(jobs))


def results_csv(table: ResultsTable) -> str:
    """Return one CSV row per job: job_id, every swept key, then the job's fields."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = [k for k in table.param_keys if k != SEED_KEY]
    writer.writerow(["job_id", *keys, *JOB_FIELDS])
    for j in table.jobs:
        values = ["" if j.values.get(k) is None else fmt_value(j.values[k]) for k in keys]
        fields = [getattr(j, f) for f in JOB_FIELDS]
        writer.writerow([j.job_id, *values, *("" if v is None else v for v in fields)])
    return buf.getvalue()


def stat_json(stat: Stat) -> dict:
    """Return a Stat as a JSON object with stable keys."""
    return {"n": stat.n, "mean": stat.mean, "std": stat.std}


def results_json(table: ResultsTable) -> dict:
    """Return the results as a JSON-ready dict with stable keys."""
    return {
        "format": RESULTS_FORMAT, "sweep_id": table.sweep_id, "name": table.name,
        "param_keys": list(table.param_keys), "config_keys": list(table.config_keys),
        "finished": table.finished(),
        "jobs": [
            {"job_id": j.job_id, "params": j.params, **{f: getattr(j, f) for f in JOB_FIELDS}}
            for j in table.jobs
        ],
        "configs": [
            {"params": c.params, "job_ids": list(c.job_ids), "n": c.n,
             "test_accuracy": stat_json(c.test_accuracy), "test_loss": stat_json(c.test_loss)}
            for c in table.configs
        ],
    }


def config_label(params: dict) -> str:
    """Return a short legend label for a configuration."""
    return " ".join(f"{k}={fmt_value(v)}" for k, v in params.items()) or "all jobs"


def nan_if_none(value: float | None) -> float:
    """Return value, or NaN for a missing one (matplotlib leaves a gap there)."""
    return float("nan") if value is None else float(value)


def plot_learning_curves(sweep_id: str, path: str | Path, root: Path | None = None) -> Path:
    """Return the path of a PNG (or other matplotlib format) of train loss and val accuracy.

    One line per job, one colour per configuration. matplotlib is an optional extra, so it is
    imported here and only here; the Figure API avoids pyplot's global backend state.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        # not `pip install 'launch[plot]'`: from a checkout that fetches an unrelated package
        raise UserError("matplotlib is not installed: pip install matplotlib "
                        "(in a checkout: pip install -e '.[plot]')") from None
    out = Path(path)
    if not out.parent.is_dir():
        raise UserError(f"cannot write plot {out}: folder {out.parent} does not exist")
    table = collect_results(sweep_id, root)
    sweep_path = rundir.sweep_dir(sweep_id, root)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    drawn, configs_drawn = 0, set()
    for colour, config in enumerate(table.configs):
        label: str | None = config_label(config.params)
        for job_id in config.job_ids:
            rows = rundir.read_jsonl(sweep_path / "jobs" / job_id / "metrics.jsonl")
            rows = [r for r in rows if isinstance(r.get("epoch"), int)]
            if not rows:
                continue
            epochs = [r["epoch"] for r in rows]
            loss = [nan_if_none(r.get("train_loss")) for r in rows]
            acc = [nan_if_none(r.get("val_accuracy")) for r in rows]
            style = {"color": f"C{colour % 10}", "marker": "o", "markersize": 3, "linewidth": 1.2}
            ax_loss.plot(epochs, loss, label=label, **style)
            ax_acc.plot(epochs, acc, **style)
            label = None  # one legend entry per configuration, not per seed
            drawn += 1
            configs_drawn.add(colour)
    if drawn == 0:
        raise UserError(f"no metrics yet in sweep {sweep_id}: no job has finished an epoch")
    for ax, what in ((ax_loss, "train loss"), (ax_acc, "val accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.legend(fontsize="small")
    fig.suptitle(f"{table.sweep_id}: {drawn} jobs, {len(configs_drawn)} configurations")
    try:
        fig.savefig(out, dpi=110)
    except ValueError as e:
        # matplotlib names the formats it supports in this message
        raise UserError(f"cannot write plot {out}: {e}") from None
    return out


def run_results(target: str, fmt: str, plot_path: str | None) -> int:
    """Return the exit code of `launch results`: print the table (text, CSV or JSON), maybe plot."""
    if fmt not in ("table", "csv", "json"):
        raise UserError(f"unknown results format {fmt!r} (allowed: table, csv, json)")
    if "/" in target:
        raise UserError(f"launch results takes a sweep, not a job: {target!r}")
    sweep_id = rundir.resolve_sweep_id(target)
    table = collect_results(sweep_id)
    if plot_path is not None:
        written = plot_learning_curves(sweep_id, plot_path)
    if fmt == "csv":
        sys.stdout.write(results_csv(table))
    elif fmt == "json":
        sys.stdout.write(json.dumps(results_json(table), indent=1) + "\n")
    else:
        sys.stdout.write(render_results(table))
    if plot_path is not None:
        # stderr, so that --json/--csv output stays machine-readable
        print(f"wrote learning curves to {written}", file=sys.stderr)
    return 0
