"""The text of `launch results`: a block per job and one per configuration, kept narrow.

Pure functions of a ResultsTable. To fit a terminal, what is the same in every job (the
device, a key no job varies) moves to one note line, dict values are written as k=v,k=v and
cut in the middle past VALUE_WIDTH (unless that would make two values look alike), and job
ids give way to the 8-hex hash that ends each of them (`launch logs SWEEP/HASH` takes it)
when the table would pass TABLE_WIDTH. A sweep of demo.yaml's size fits 100 columns; one
that varies many keys, like cifar.yaml (four), is wider. The metrics shown are the numbers
the jobs' results carry (the sorted one first); a metrics line's many others are named in a
note. CSV and JSON (results.py) keep every field and metric in full.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from typing import Any

from launcher.rundir.state import ENDED_STATES
from launcher.show.results import NO_STAT, JobRow, ResultsTable, Stat
from launcher.show.text import fmt_value, plural

SEED_KEY = "seed"
TABLE_WIDTH = 100
VALUE_WIDTH = 30  # a longer swept value is cut in the middle; CSV and JSON have it whole
_ID_HASH = re.compile(r".+-([0-9a-f]{8})")


def fmt_cell(value: Any) -> str:
    """Return a swept value short enough for a table cell: a dict as k=v,k=v."""
    if isinstance(value, dict):
        text = ",".join(f"{k}={fmt_cell(v)}" for k, v in value.items())
    else:
        text = fmt_value(value)
    if len(text) <= VALUE_WIDTH:
        return text
    head = (VALUE_WIDTH - 1) // 2
    return text[:head] + "~" + text[len(text) - (VALUE_WIDTH - 1 - head):]


def fmt_metric(value: float | None) -> str:
    """Return a metric with four decimals, a large one (a parameter count) without; "-"."""
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.0f}"


def fmt_stat(stat: Stat) -> str:
    """Return "mean +- std", "mean +- -" for a single seed, or "-" with no result."""
    if stat.mean is None:
        return "-"
    return f"{fmt_metric(stat.mean)} +- {fmt_metric(stat.std)}"


def fmt_done(done: int | None, planned: int | None) -> str:
    """Return epochs done as "2/3" (or "2" when the plan is unknown); "-" before the first."""
    if done is None:
        return "-"
    return f"{done}/{planned}" if planned else str(done)


def short_job(job_id: str) -> str:
    """Return the 8-hex hash that ends a job id, or the whole id when it has none."""
    match = _ID_HASH.fullmatch(job_id)
    return match.group(1) if match else job_id


def align(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Return header and rows as lines of columns padded to a common width."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in pairs]
        lines.append("  ".join(cells).rstrip())
    return lines


def value_cells(values: Sequence[Any]) -> list[str]:
    """Return the cells of one column of swept values: short, unless that merges two."""
    short = [fmt_cell(v) for v in values]
    full = [fmt_value(v) for v in values]
    return short if len(set(short)) == len(set(full)) else full


def key_values(job: JobRow, key: str) -> Any:
    """Return one job's value of a swept key (the seed from its result or spec)."""
    return job.seed if key == SEED_KEY else job.values.get(key)


def constant_columns(table: ResultsTable) -> dict[str, str]:
    """Return column -> text for the swept keys, state and device that no two jobs differ in."""
    if len(table.jobs) < 2:
        return {}
    out = {}
    for key in (*table.config_keys, SEED_KEY):
        values = [key_values(j, key) for j in table.jobs]
        if len({fmt_value(v) for v in values}) == 1:  # whole values: cut ones may look alike
            out[key] = fmt_cell(values[0])
    for key, cells in (("state", [j.state for j in table.jobs]),
                       ("device", [j.device or "-" for j in table.jobs])):
        if len(set(cells)) == 1:
            out[key] = cells[0]
    return out


# Short column names for the built-in job's metrics; a script's keys are their own names.
HEADERS = {"test_accuracy": "test_acc"}
# Numbers of the built-in job's result that describe the model rather than measure the run:
# the same for every seed, so a column of them says nothing (--metric shows one).
DESCRIPTIVE = ("num_parameters",)


def header(metric: str) -> str:
    """Return a metric's column name: its key, shortened for the built-in job's."""
    return HEADERS.get(metric, metric)


def shown_metrics(table: ResultsTable) -> list[str]:
    """Return the metrics the text shows: the sorted one, then the results' (else the lines').

    A metrics line has many numbers per epoch (the built-in job's: losses, accuracies, the
    learning rate, throughput); a result has the few that sum a run up. The others are named
    in a note, and --metric, CSV and JSON give them.
    """
    keys = [k for k in table.result_keys if k not in DESCRIPTIVE] or list(table.metric_keys)
    if table.sorted_by is not None and table.sorted_by in table.metric_keys:
        keys = [table.sorted_by, *(k for k in keys if k != table.sorted_by)]
    return keys


def job_block(table: ResultsTable, same: dict[str, str], hashes: bool) -> list[str]:
    """Return the per-job block: id (or hash), varying swept values, state and numbers."""
    keys = [k for k in (*table.config_keys, SEED_KEY) if k not in same]
    metrics = shown_metrics(table)
    before = [c for c in ("state",) if c not in same]
    after = [c for c in ("done", "wall_s", "device") if c not in same]
    if all(j.wall_time_s is None for j in table.jobs) and "wall_s" in after:
        after.remove("wall_s")  # a command job may write no result: no column of "-"
    head = ["job", *keys, *before, *map(header, metrics), *after]
    columns = {k: value_cells([key_values(j, k) for j in table.jobs]) for k in keys}
    rows = []
    for n, j in enumerate(table.jobs):
        fields = {"state": j.state, "done": fmt_done(j.epochs_done, j.epochs),
                  "wall_s": "-" if j.wall_time_s is None else f"{j.wall_time_s:.1f}",
                  "device": j.device or "-"}
        job = short_job(j.job_id) if hashes else j.job_id
        rows.append([job, *(columns[k][n] for k in keys), *(fields[c] for c in before),
                     *(fmt_metric(j.metrics.get(m)) for m in metrics),
                     *(fields[c] for c in after)])
    numeric = [k == SEED_KEY for k in keys] + [False] * len(before) + [True] * len(metrics)
    numeric += [c != "device" for c in after]
    return align(head, rows, right={i + 1 for i, right in enumerate(numeric) if right})


def config_block(table: ResultsTable, same: dict[str, str]) -> list[str]:
    """Return the per-configuration block: varying swept values, seeds with results, mean +- std."""
    keys = [k for k in table.config_keys if k not in same]
    metrics = shown_metrics(table)
    head = [*(keys or ("configuration",)), "n", *(f"{header(m)} mean +- std" for m in metrics)]
    columns = {k: value_cells([c.values.get(k) for c in table.configs]) for k in keys}
    rows = []
    for n, c in enumerate(table.configs):
        values = [columns[k][n] for k in keys] or ["all"]
        stats = [fmt_stat(c.stats.get(m, NO_STAT)) for m in metrics]
        rows.append([*values, f"{c.n}/{len(c.job_ids)}", *stats])
    n = max(len(keys), 1)
    return align(head, rows, right=set(range(n, len(head))))


def thread_notes(table: ResultsTable, hashes: bool) -> list[str]:
    """Return a note naming the jobs of one configuration that ran with other thread counts.

    On a CPU the weights depend on the thread count (a reduction's order changes with it),
    so such jobs are not the reruns of one another they seem to be.
    """
    lines = []
    same = constant_columns(table)
    keys = [k for k in table.config_keys if k not in same]
    for c in table.configs:
        if len(c.threads) < 2:
            continue
        label = " ".join(f"{k}={fmt_cell(c.values.get(k))}" for k in keys) or "every job"
        groups = "; ".join(f"{plural(n, 'thread')}: "
                           + ", ".join(short_job(i) if hashes else i for i in ids)
                           for n, ids in c.threads.items())
        lines.append(f"  {label}: {groups}")
    if lines:
        lines.insert(0, "jobs of one configuration ran with different thread counts "
                        "(on CPU the weights depend on it):")
    return lines


def state_summary(table: ResultsTable) -> str:
    """Return how many jobs are in each state, e.g. "2 finished, 1 running"."""
    counts: dict[str, int] = {}
    for j in table.jobs:
        counts[j.state] = counts.get(j.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def render_results(table: ResultsTable) -> str:
    """Return the results as aligned text: a block per job, then one per configuration."""
    count = plural(len(table.jobs), "job")
    lines = [f"sweep {table.sweep_id}: {count} ({state_summary(table) or 'none'})"]
    if table.sorted_by is not None:
        lines.append(f"sorted by {table.sorted_by}, "
                     f"{'highest' if table.highest_first else 'lowest'} first")
    same = constant_columns(table)
    # the line above counts the states; a column of "-" only says nothing, so it just goes
    notes = [f"{k}={v}" for k, v in same.items() if k != "state" and v != "-"]
    if notes:
        lines.append(f"every job: {', '.join(notes)}")
    hashes = False
    jobs = job_block(table, same, hashes)
    if max(map(len, jobs)) > TABLE_WIDTH:
        hashes = True
        jobs = job_block(table, same, hashes)
        lines.append(f"job: the hash that ends its id (launch logs {table.sweep_id}/HASH)")
    lines += ["", *jobs, ""]
    if table.finished() == 0:
        ended = all(j.state in ENDED_STATES for j in table.jobs)
        lines.append(f"no finished job{'' if ended else ' yet'} in sweep {table.sweep_id}: "
                     "nothing to average")
    else:
        lines.append("per configuration, over seeds (n = seeds with a result / jobs):")
        lines.extend(config_block(table, same))
    others = [k for k in table.metric_keys if k not in shown_metrics(table)]
    if others:
        lines += ["", "other metrics (--metric KEY shows one; --csv and --json have all):",
                  *textwrap.wrap(", ".join(others), TABLE_WIDTH, initial_indent="  ",
                                 subsequent_indent="  ", break_on_hyphens=False)]
    threads = thread_notes(table, hashes)
    if threads:
        lines += ["", *threads]
    return "\n".join(lines) + "\n"
