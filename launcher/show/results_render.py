"""The text of `launch results`: a block per job and one per configuration, kept narrow.

Pure functions of a ResultsTable. To fit a terminal, what is the same in every job (the
device, a key no job varies) moves to one note line, dict values are written as k=v,k=v and
cut in the middle past VALUE_WIDTH (unless that would make two values look alike), and job
ids give way to the 8-hex hash that ends each of them (`launch logs SWEEP/HASH` takes it)
when the table would pass TABLE_WIDTH. A sweep of demo.yaml's size fits 100 columns; one
that varies many keys, like cifar.yaml (four), is wider. CSV and JSON (results.py) keep
every field in full.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from launcher.rundir.state import ENDED_STATES
from launcher.show.results import JobRow, ResultsTable, Stat
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


def fmt_num(value: float | None, digits: int = 4) -> str:
    """Return a number with fixed decimals, or "-" when absent."""
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_stat(stat: Stat) -> str:
    """Return "mean +- std", "mean +- -" for a single seed, or "-" with no result."""
    if stat.mean is None:
        return "-"
    return f"{stat.mean:.4f} +- {fmt_num(stat.std)}"


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


def job_block(table: ResultsTable, same: dict[str, str], hashes: bool) -> list[str]:
    """Return the per-job block: id (or hash), varying swept values, state and numbers."""
    keys = [k for k in (*table.config_keys, SEED_KEY) if k not in same]
    tail = [c for c in ("state", "test_acc", "test_loss", "done", "wall_s", "device")
            if c not in same]
    header = ["job", *keys, *tail]
    columns = {k: value_cells([key_values(j, k) for j in table.jobs]) for k in keys}
    rows = []
    for n, j in enumerate(table.jobs):
        cells = {"state": j.state, "test_acc": fmt_num(j.test_accuracy),
                 "test_loss": fmt_num(j.test_loss), "done": fmt_done(j.epochs_done, j.epochs),
                 "wall_s": "-" if j.wall_time_s is None else f"{j.wall_time_s:.1f}",
                 "device": j.device or "-"}
        job = short_job(j.job_id) if hashes else j.job_id
        rows.append([job, *(columns[k][n] for k in keys), *(cells[c] for c in tail)])
    # A number no job has (a command job may write no result) is a column of "-": drop it.
    empty = {i for i, c in enumerate(header) if c in ("test_acc", "test_loss", "wall_s")
             and all(row[i] == "-" for row in rows)}
    header = [c for i, c in enumerate(header) if i not in empty]
    rows = [[cell for i, cell in enumerate(row) if i not in empty] for row in rows]
    numeric = {SEED_KEY, "test_acc", "test_loss", "done", "wall_s"}
    return align(header, rows, right={i for i, c in enumerate(header) if c in numeric})


def config_block(table: ResultsTable, same: dict[str, str]) -> list[str]:
    """Return the per-configuration block: varying swept values, seeds with results, mean +- std."""
    keys = [k for k in table.config_keys if k not in same]
    header = [*(keys or ("configuration",)), "n", "test_acc mean +- std", "test_loss mean +- std"]
    columns = {k: value_cells([c.values.get(k) for c in table.configs]) for k in keys}
    rows = []
    for n, c in enumerate(table.configs):
        values = [columns[k][n] for k in keys] or ["all"]
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
    count = plural(len(table.jobs), "job")
    lines = [f"sweep {table.sweep_id}: {count} ({state_summary(table) or 'none'})"]
    same = constant_columns(table)
    # the line above counts the states; a column of "-" only says nothing, so it just goes
    notes = [f"{k}={v}" for k, v in same.items() if k != "state" and v != "-"]
    if notes:
        lines.append(f"every job: {', '.join(notes)}")
    jobs = job_block(table, same, hashes=False)
    if max(map(len, jobs)) > TABLE_WIDTH:
        jobs = job_block(table, same, hashes=True)
        lines.append(f"job: the hash that ends its id (launch logs {table.sweep_id}/HASH)")
    lines += ["", *jobs, ""]
    if table.finished() == 0:
        ended = all(j.state in ENDED_STATES for j in table.jobs)
        lines.append(f"no finished job{'' if ended else ' yet'} in sweep {table.sweep_id}: "
                     "nothing to average")
    else:
        lines.append("per configuration, over seeds (n = seeds with a result / jobs):")
        lines.extend(config_block(table, same))
    return "\n".join(lines) + "\n"
