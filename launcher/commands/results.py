"""`launch results`: a sweep's results as a table, CSV or JSON, and its learning curves."""

from __future__ import annotations

import json
import sys

from launcher.commands.picking import pick
from launcher.errors import UserError
from launcher.show.results import collect_results, results_csv, results_json
from launcher.show.results_render import render_results


def run_results(target: str | None, fmt: str, plot_path: str | None) -> int:
    """Return the exit code of `launch results`: print the table (text, CSV or JSON), maybe plot.

    target None means the user's newest sweep.
    """
    if fmt not in ("table", "csv", "json"):
        raise UserError(f"unknown results format {fmt!r} (allowed: table, csv, json)")
    if target and "/" in target:
        raise UserError(f"launch results takes a sweep, not a job: {target!r}")
    paths = pick(target).paths
    table = collect_results(paths)
    if plot_path is not None:
        from launcher.show.plot import plot_learning_curves  # matplotlib: only when asked

        written = plot_learning_curves(paths, plot_path)
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
