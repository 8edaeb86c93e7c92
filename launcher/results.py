"""`launch results`: one row per job and mean +- std over seeds per configuration.

Everything is read from the run directory (result.json, state.json, metrics.jsonl), so results
work the same for local and Slurm sweeps, while a sweep runs and after it ended. The table is
built by a pure function over those files; rendering, CSV and JSON are pure over the table.
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

RESULTS_FORMAT = "launch-results/1"
SEED_KEY = "seed"
JOB_FIELDS = ("state", "seed", "test_accuracy", "test_loss", "epochs_done", "wall_time_s", "device")


@dataclass(frozen=True)
class JobRow:
    """One job's outcome: its swept values, state, and numbers from result.json."""

    job_id: str
    params: dict
    state: str
    seed: Any
    test_accuracy: float | None
    test_loss: float | None
    epochs_done: int | None
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


def read_job_row(sweep_path: Path, job_id: str, params: dict) -> JobRow:
    """Return one job's row from its state.json, result.json, metrics.jsonl and spec.json."""
    d = sweep_path / "jobs" / job_id
    state = (rundir.read_json(d / "state.json") or {}).get("state", "pending")
    result = rundir.read_json(d / "result.json") or {}
    if result.get("status") != "finished":
        # a half-written or crashed run's numbers must not enter the mean
        result = {}
    seed = result.get("seed", params.get(SEED_KEY))
    if seed is None:
        seed = (rundir.read_json(d / "spec.json") or {}).get(SEED_KEY)
    epochs_done = result.get("epochs_done")
    if epochs_done is None:
        epochs_done = (rundir.read_last_jsonl(d / "metrics.jsonl") or {}).get("epoch")
    return JobRow(
        job_id=job_id, params=dict(params), state=state, seed=seed,
        test_accuracy=result.get("test_accuracy"), test_loss=result.get("test_loss"),
        epochs_done=epochs_done, wall_time_s=result.get("wall_time_s"), device=result.get("device"),
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
        ids = tuple(j.job_id for j in members)
        out.append(ConfigRow(params, ids, summarise(accs), summarise(losses)))
    return tuple(out)


def collect_results(sweep_id: str, root: Path | None = None) -> ResultsTable:
    """Return the results table of a sweep, read from its run directory."""
    info = rundir.read_sweep_info(sweep_id, root)
    path = rundir.sweep_dir(sweep_id, root)
    jobs = tuple(read_job_row(path, j["id"], j.get("params", {})) for j in info.get("jobs", []))
    keys = ordered_keys(info)
    config_keys = tuple(k for k in keys if k != SEED_KEY)
    name = info.get("name", sweep_id)
    return ResultsTable(sweep_id, name, keys, config_keys, jobs, group_configs(jobs))


def fmt_value(value: Any) -> str:
    """Return a swept value as the user would write it in YAML ("-" when absent)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def fmt_num(value: float | None, digits: int = 4) -> str:
    """Return a number with fixed decimals, or "-" when absent."""
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_stat(stat: Stat) -> str:
    """Return "mean +- std", "mean +- -" for a single seed, or "-" with no result."""
    if stat.mean is None:
        return "-"
    return f"{stat.mean:.4f} +- {fmt_num(stat.std)}"


def align(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Return header and rows as lines of columns padded to a common width."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in pairs]
        lines.append("  ".join(cells).rstrip())
    return lines


def job_block(table: ResultsTable) -> list[str]:
    """Return the per-job block: id, swept values, state and the job's numbers."""
    keys = table.config_keys
    header = ["job", *keys, "state", "seed", "test_acc", "test_loss", "epochs", "wall_s", "device"]
    rows = []
    for j in table.jobs:
        wall = None if j.wall_time_s is None else f"{j.wall_time_s:.1f}"
        values = [fmt_value(j.params.get(k)) for k in keys]
        numbers = [fmt_num(j.test_accuracy), fmt_num(j.test_loss), fmt_value(j.epochs_done)]
        rows.append([j.job_id, *values, j.state, fmt_value(j.seed), *numbers, wall or "-",
                     j.device or "-"])
    n = len(keys)
    return align(header, rows, right={n + 2, n + 3, n + 4, n + 5, n + 6})


def config_block(table: ResultsTable) -> list[str]:
    """Return the per-configuration block: swept values, seeds with results, mean +- std."""
    keys = table.config_keys
    header = [*(keys or ("configuration",)), "n", "test_acc mean +- std", "test_loss mean +- std"]
    rows = []
    for c in table.configs:
        values = [fmt_value(c.params.get(k)) for k in keys] or ["all"]
        stats = [fmt_stat(c.test_accuracy), fmt_stat(c.test_loss)]
        rows.append([*values, f"{c.n}/{len(c.job_ids)}", *stats])
    n = max(len(keys), 1)
    return align(header, rows, right={n, n + 1, n + 2})


def state_summary(table: ResultsTable) -> str:
    """Return how many jobs are in each state, e.g. "2 finished, 1 running"."""
    counts: dict[str, int] = {}
    for j in table.jobs:
        counts[j.state] = counts.get(j.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def render_results(table: ResultsTable) -> str:
    """Return the results as aligned text: a block per job, then one per configuration."""
    head = f"sweep {table.sweep_id}: {len(table.jobs)} jobs ({state_summary(table) or 'none'})"
    lines = [head, "", *job_block(table), ""]
    if table.finished() == 0:
        lines.append(f"no finished job yet in sweep {table.sweep_id}: nothing to average")
    else:
        lines.append("per configuration, over seeds (n = seeds with a result / jobs):")
        lines.extend(config_block(table))
    return "\n".join(lines) + "\n"


def results_csv(table: ResultsTable) -> str:
    """Return one CSV row per job: job_id, every swept key, then the job's fields."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = [k for k in table.param_keys if k != SEED_KEY]
    writer.writerow(["job_id", *keys, *JOB_FIELDS])
    for j in table.jobs:
        values = [fmt_value(j.params.get(k)) if k in j.params else "" for k in keys]
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
        raise UserError("matplotlib is not installed: pip install 'launch[plot]'") from None
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
