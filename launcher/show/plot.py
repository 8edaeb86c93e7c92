"""`launch results --plot`: a metric per configuration, the mean over seeds +- one std.

A number of the jobs' metrics lines (docs/design.md: the job contract) is drawn over epochs:
per configuration, one colour, the mean over its seeds as a line and a band of +- one
sample std where two or more seeds reached that epoch. A number only the results carry (the
built-in job's test_accuracy, a script's bleu) is one bar per configuration with its std.
The legend names each configuration by the values that differ between them, in words, and
sits beside the axes so that it never covers a curve. The figures are built with the Figure
API (no pyplot state) from the table and the metrics lines, so a test reads back what was
drawn.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from launcher.errors import UserError
from launcher.rundir.layout import SweepPaths
from launcher.rundir.store import read_jsonl
from launcher.show.results import ConfigRow, ResultsTable, check_metric, is_number
from launcher.show.results_render import constant_columns, fmt_cell
from launcher.show.text import plural

DEFAULT_CURVES = ("train_loss", "val_accuracy")  # the built-in job's; else the first curve
BAND_ALPHA = 0.2
MAX_EPOCH_TICKS = 12  # fewer epochs than this get a tick each


def figure_api() -> tuple[Any, Any]:
    """Return matplotlib's Figure and MaxNLocator, or a UserError saying how to install it.

    matplotlib is an optional extra, so it is imported here and only here.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        # not `pip install 'launch[plot]'`: from a checkout that fetches an unrelated package
        raise UserError("matplotlib is not installed: pip install matplotlib "
                        "(in a checkout: pip install -e '.[plot]')") from None
    return Figure, MaxNLocator


def config_label(table: ResultsTable, config: ConfigRow, same: Mapping[str, str]) -> str:
    """Return a configuration in words: the values that differ between configurations."""
    keys = [k for k in table.config_keys if k not in same and config.values.get(k) is not None]
    return ", ".join(f"{k}={fmt_cell(config.values[k])}" for k in keys) or "all jobs"


def mean_band(runs: Sequence[Mapping[int, float]]) -> tuple[list[int], list[float], list[float]]:
    """Return the epochs any run has, the mean over the runs there, and the sample std (NaN
    where only one run has that epoch)."""
    epochs = sorted({e for run in runs for e in run})
    means, stds = [], []
    for epoch in epochs:
        values = [run[epoch] for run in runs if epoch in run]
        means.append(statistics.fmean(values))
        stds.append(statistics.stdev(values) if len(values) > 1 else math.nan)
    return epochs, means, stds


def job_curve(paths: SweepPaths, job_id: str, metric: str) -> dict[int, float]:
    """Return epoch -> value of a metric in one job's metrics lines (the last line per epoch)."""
    return {r["epoch"]: float(r[metric]) for r in read_jsonl(paths.job(job_id).metrics_jsonl)
            if isinstance(r.get("epoch"), int) and is_number(r.get(metric))}


def curve_metrics(table: ResultsTable, metric: str | None) -> tuple[str, ...]:
    """Return the metrics to draw over epochs: the one asked for, else the default ones."""
    if metric is not None:
        return (metric,)
    return tuple(k for k in DEFAULT_CURVES if k in table.curve_keys) or table.curve_keys[:1]


def curves_figure(paths: SweepPaths, table: ResultsTable, metrics: Sequence[str]) -> Any:
    """Return a figure of each metric over epochs: per configuration its mean and +- std band."""
    figure, locator = figure_api()
    fig = figure(figsize=(5.2 * max(len(metrics), 1) + 3.2, 4.2), layout="constrained")
    axes = fig.subplots(1, max(len(metrics), 1), squeeze=False)[0]
    same = constant_columns(table)
    handles, labels, seen = [], [], set()
    for colour, config in enumerate(table.configs):
        style = {"color": f"C{colour % 10}"}
        for ax, metric in zip(axes, metrics, strict=False):
            runs = [c for c in (job_curve(paths, j, metric) for j in config.job_ids) if c]
            if not runs:
                continue
            epochs, means, stds = mean_band(runs)
            label = f"{config_label(table, config, same)} ({plural(len(runs), 'seed')})"
            (line,) = ax.plot(epochs, means, marker="o", markersize=3, linewidth=1.4,
                              label=label, **style)
            if len(epochs) > 1:
                band = ax.fill_between(epochs, [m - s for m, s in zip(means, stds, strict=True)],
                                       [m + s for m, s in zip(means, stds, strict=True)],
                                       alpha=BAND_ALPHA, linewidth=0, **style)
            else:  # a band over one epoch has no width: an error bar shows the std there
                band = ax.errorbar(epochs, means, yerr=stds, fmt="none", capsize=4,
                                   **style).lines[2][0]
            band.set_gid(f"band {label}")
            seen.update(epochs)
            if label not in labels:  # one legend entry per configuration, not per panel
                handles.append(line)
                labels.append(label)
    if not handles:
        raise UserError(f"no metrics yet in sweep {table.sweep_id}: no job has finished an epoch")
    for ax, metric in zip(axes, metrics, strict=False):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if len(seen) <= MAX_EPOCH_TICKS:  # every epoch, also the one of a one-epoch sweep
            ax.set_xticks(sorted(seen))
        else:
            ax.xaxis.set_major_locator(locator(integer=True))
    finish(fig, table, handles, labels, same)
    return fig


def bars_figure(table: ResultsTable, metric: str) -> Any:
    """Return a figure of one bar per configuration: the metric's mean, and its std."""
    figure, _ = figure_api()
    fig = figure(figsize=(8.4, 4.2), layout="constrained")
    ax = fig.subplots()
    same = constant_columns(table)
    handles, labels, xs, means, stds = [], [], [], [], []
    for colour, config in enumerate(table.configs):
        stat = config.stats.get(metric)
        if stat is None or stat.mean is None:
            continue
        label = f"{config_label(table, config, same)} ({plural(stat.n, 'seed')})"
        handles.append(ax.bar(len(xs), stat.mean, color=f"C{colour % 10}", label=label))
        labels.append(label)
        xs.append(len(xs))
        means.append(stat.mean)
        stds.append(math.nan if stat.std is None else stat.std)
    if not handles:
        raise UserError(f"no finished job in sweep {table.sweep_id} has {metric!r} yet")
    errors = ax.errorbar(xs, means, yerr=stds, fmt="none", ecolor="black", capsize=4)
    errors.lines[2][0].set_gid("std")
    ax.set_xticks([])
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, axis="y")
    finish(fig, table, handles, labels, same)
    return fig


def finish(fig: Any, table: ResultsTable, handles: list, labels: list[str],
           same: Mapping[str, str]) -> None:
    """Add the legend beside the axes and a title that names what every job shares."""
    fig.legend(handles, labels, loc="outside right upper", fontsize="small",
               title="configuration", title_fontsize="small")
    shared = ", ".join(f"{k}={v}" for k, v in same.items()
                       if k in table.config_keys and v != "-")
    title = f"{table.sweep_id}: mean +- std over seeds"
    fig.suptitle(title + (f"\nevery job: {shared}" if shared else ""), fontsize="medium")


def results_figure(paths: SweepPaths, table: ResultsTable, metric: str | None = None) -> Any:
    """Return the figure `launch results --plot` draws: curves over epochs, or bars for a
    number only the results have."""
    if metric is not None:
        check_metric(table, metric)
        if metric not in table.curve_keys:
            return bars_figure(table, metric)
    return curves_figure(paths, table, curve_metrics(table, metric))


def plot_results(paths: SweepPaths, table: ResultsTable, path: str | Path,
                 metric: str | None = None) -> Path:
    """Return the path of a PNG (or another matplotlib format) of the sweep's results."""
    out = Path(path)
    figure_api()  # say it is missing before anything else
    if not out.parent.is_dir():
        raise UserError(f"cannot write plot {out}: folder {out.parent} does not exist")
    fig = results_figure(paths, table, metric)
    try:
        fig.savefig(out, dpi=110)
    except ValueError as e:
        # matplotlib names the formats it supports in this message
        raise UserError(f"cannot write plot {out}: {e}") from None
    return out
