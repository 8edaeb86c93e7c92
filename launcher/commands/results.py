"""`launch results`: a sweep's results as a table, CSV or JSON, and its learning curves."""

from __future__ import annotations

import json
import sys

from launcher.commands.picking import pick
from launcher.errors import UserError
from launcher.show.results import collect_results, results_csv, results_json, sort_table
from launcher.show.results_render import render_results

ORDERS = {"high": True, "low": False}  # --order: which end of --metric comes first


def run_results(target: str | None, fmt: str, plot_path: str | None, metric: str | None = None,
                order: str | None = None) -> int:
    """Return the exit code of `launch results`: print the table (text, CSV or JSON), maybe plot.

    target None means the user's newest sweep. metric sorts the table best first and is what
    the plot draws; order ("high", "low") says which end comes first where the metric's name
    does not say it right.
    """
    if fmt not in ("table", "csv", "json"):
        raise UserError(f"unknown results format {fmt!r} (allowed: table, csv, json)")
    if order is not None and (metric is None or order not in ORDERS):
        raise UserError("--order says which end of --metric comes first: "
                        "--metric KEY --order high|low")
    if target and "/" in target:
        raise UserError(f"launch results takes a sweep, not a job: {target!r}")
    paths = pick(target).paths
    table = collect_results(paths)
    if metric is not None:
        table = sort_table(table, metric, None if order is None else ORDERS[order])
    if plot_path is not None:
        from launcher.show.plot import plot_results  # matplotlib: only when asked

        written = plot_results(paths, table, plot_path, metric=metric)
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
