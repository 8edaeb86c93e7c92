"""`launch results`: one row per job and mean +- std over seeds per configuration.

Everything is read from the run directory (each job's result, state, metrics, the
specs), so results work the same for local and Slurm sweeps, while a sweep runs and after it
ended. A metric is any number a finished job reported: a top-level number of its result, or
of its last metrics line (docs/design.md: the job contract). The table is built by a pure
function over those files; rendering (results_render.py), CSV and JSON are pure over it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from launcher.contract import RESULT_FINISHED
from launcher.errors import UserError
from launcher.rundir.layout import JobPaths, SweepPaths
from launcher.rundir.state import FINISHED, read_state
from launcher.rundir.store import read_json, read_last_jsonl
from launcher.rundir.sweepdir import SweepInfo, read_info, read_specs
from launcher.show.text import fmt_value

RESULTS_FORMAT = "launch-results/1"
SEED_KEY = "seed"
# A result's keys that have a column of their own; every other number in it is a metric.
RESULT_FIELDS = ("seed", "epochs_done", "wall_time_s")
# A metrics line's keys that say where training is, not how well it does (docs/design.md:
# the job contract); every other number in it is a metric.
PROGRESS_KEYS = ("epoch", "epochs", "step", "elapsed_s", "time")
JOB_FIELDS = ("state", "seed", "epochs_done", "wall_time_s", "device", "num_threads")
# Words that make a metric best when low (a loss, an error); --order says otherwise.
LOWER_IS_BETTER = ("loss", "error", "err", "mse", "mae", "rmse", "perplexity", "ppl", "wer",
                   "cer", "regret")


@dataclass(frozen=True)
class JobRow:
    """One job's outcome: its swept values, state, and the numbers it reported."""

    job_id: str
    params: dict  # the values this job sets, as the plan records them
    values: dict  # every swept key: its params, else what its spec says (a point's default)
    state: str
    seed: Any
    metrics: dict  # a finished job's numbers: its result's, then its last metrics line's
    epochs_done: int | None
    epochs: int | None  # planned, from its metrics or spec
    wall_time_s: float | None
    device: str | None
    num_threads: int | None = None  # what it ran with: its result's env, else its state
    done: bool = False  # it finished: its result says so, or its state
    result_keys: tuple[str, ...] = ()  # the metrics its result has (a finished one)
    line_keys: tuple[str, ...] = ()  # the numbers of its last metrics line, finished or not

    @property
    def has_result(self) -> bool:
        """Return whether this job finished, so that its numbers enter the mean."""
        return self.done

    @property
    def test_accuracy(self) -> float | None:
        """Return the built-in job's test accuracy, None when it has none."""
        return self.metrics.get("test_accuracy")

    @property
    def test_loss(self) -> float | None:
        """Return the built-in job's test loss, None when it has none."""
        return self.metrics.get("test_loss")


@dataclass(frozen=True)
class Stat:
    """Mean and sample std of one metric over a configuration's seeds (std None below n=2)."""

    n: int
    mean: float | None
    std: float | None


NO_STAT = Stat(0, None, None)


@dataclass(frozen=True)
class ConfigRow:
    """One configuration (the swept values without the seed) summarised over its seeds."""

    params: dict
    values: dict  # as JobRow.values, without the seed
    job_ids: tuple[str, ...]
    n: int  # how many of its jobs finished
    stats: dict  # metric -> Stat over the jobs that finished
    threads: dict  # thread count -> the ids of its jobs that ran with it

    @property
    def test_accuracy(self) -> Stat:
        """Return the built-in job's test accuracy over seeds."""
        return self.stats.get("test_accuracy", NO_STAT)

    @property
    def test_loss(self) -> Stat:
        """Return the built-in job's test loss over seeds."""
        return self.stats.get("test_loss", NO_STAT)


@dataclass(frozen=True)
class ResultsTable:
    """A sweep's results: per job and per configuration, in plan order unless sorted."""

    sweep_id: str
    name: str
    param_keys: tuple[str, ...]
    config_keys: tuple[str, ...]
    jobs: tuple[JobRow, ...]
    configs: tuple[ConfigRow, ...]
    metric_keys: tuple[str, ...] = ()  # every metric a finished job has, result's first
    result_keys: tuple[str, ...] = ()  # those of metric_keys that some result has
    curve_keys: tuple[str, ...] = ()  # the numbers of any job's last metrics line
    sorted_by: str | None = None
    highest_first: bool = True

    def finished(self) -> int:
        """Return how many jobs have a finished result."""
        return sum(1 for job in self.jobs if job.has_result)

    def known_metrics(self) -> tuple[str, ...]:
        """Return every metric name --metric accepts: the finished ones, then curves."""
        return tuple(dict.fromkeys((*self.metric_keys, *self.curve_keys)))


def summarise(values: Sequence[float]) -> Stat:
    """Return mean and sample standard deviation of values; std is None for fewer than two."""
    if not values:
        return Stat(0, None, None)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(len(values), statistics.fmean(values), std)


def ordered_keys(info: SweepInfo) -> tuple[str, ...]:
    """Return the swept keys: the grid's order first, then any other key a job's params add."""
    keys = list(info.grid_keys)
    for job in info.jobs:
        for key in job.params:
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


def is_number(value: Any) -> bool:
    """Return whether a JSON value is a number (a boolean is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numbers(record: dict, skip: Sequence[str]) -> dict[str, float]:
    """Return the top-level numbers of a result or metrics line, but for the keys in skip."""
    return {k: v for k, v in record.items() if k not in skip and is_number(v)}


def thread_count(result: dict, state_threads: int | None) -> int | None:
    """Return the threads a job ran with: its result's env (the built-in job's), else its state."""
    env = result.get("env")
    threads = env.get("num_threads") if isinstance(env, dict) else None
    return threads if isinstance(threads, int) and is_number(threads) else state_threads


def read_job_row(job: JobPaths, params: dict, spec: dict, keys: Sequence[str]) -> JobRow:
    """Return one job's row from its state, result, metrics and spec."""
    st = read_state(job)
    result = read_json(job.result_json)
    finished = isinstance(result, dict) and result.get("status") == RESULT_FINISHED
    if not finished:
        # a half-written or crashed run's numbers must not enter the mean
        result = {}
    seed = result.get("seed", params.get(SEED_KEY, spec.get(SEED_KEY)))
    last = read_last_jsonl(job.metrics_jsonl) or {}
    done = finished or st.state == FINISHED
    # The result is the final word on a name both have; a running job's numbers are not final.
    metrics = {**numbers(last, PROGRESS_KEYS), **numbers(result, RESULT_FIELDS)} if done else {}
    epochs_done = result.get("epochs_done")
    if epochs_done is None:
        epochs_done = last.get("epoch")
    epochs = last.get("epochs", spec.get("epochs"))
    values = {k: params[k] if k in params else spec_value(spec, k) for k in keys}
    return JobRow(
        job_id=job.job_id, params=dict(params), values=values, state=st.state, seed=seed,
        metrics=metrics, epochs_done=epochs_done,
        epochs=epochs if isinstance(epochs, int) else None,
        wall_time_s=result.get("wall_time_s"), device=result.get("device"),
        num_threads=thread_count(result, st.num_threads), done=done,
        result_keys=tuple(numbers(result, RESULT_FIELDS)),
        line_keys=tuple(numbers(last, PROGRESS_KEYS)),
    )


def config_key(params: dict) -> str:
    """Return a canonical text for a configuration, so equal configurations group together."""
    return json.dumps({k: v for k, v in params.items() if k != SEED_KEY}, sort_keys=True)


def group_configs(jobs: Sequence[JobRow], metric_keys: Sequence[str]) -> tuple[ConfigRow, ...]:
    """Return one row per configuration with mean +- std over its jobs that finished."""
    groups: dict[str, list[JobRow]] = {}
    for job in jobs:
        groups.setdefault(config_key(job.params), []).append(job)
    out = []
    for members in groups.values():
        done = [j for j in members if j.has_result]
        stats = {k: summarise([j.metrics[k] for j in done if k in j.metrics])
                 for k in metric_keys}
        threads: dict[int, list[str]] = {}
        for j in members:
            if j.num_threads is not None:
                threads.setdefault(j.num_threads, []).append(j.job_id)
        params = {k: v for k, v in members[0].params.items() if k != SEED_KEY}
        values = {k: v for k, v in members[0].values.items() if k != SEED_KEY}
        ids = tuple(j.job_id for j in members)
        out.append(ConfigRow(params, values, ids, len(done), stats,
                             {n: tuple(ids) for n, ids in sorted(threads.items())}))
    return tuple(out)


def collect_results(paths: SweepPaths) -> ResultsTable:
    """Return the results table of a sweep, read from its run directory."""
    info = read_info(paths)
    keys = ordered_keys(info)
    specs = read_specs(paths)
    jobs = []
    for entry in info.jobs:
        job = paths.job(entry.id)
        # a run dir from before the one specs file has only each job's own
        spec = specs.get(entry.id) or read_json(job.spec_json)
        spec = spec if isinstance(spec, dict) else {}
        jobs.append(read_job_row(job, entry.params, spec, keys))
    # first seen, first shown; a result's numbers before its metrics line's
    done = [j for j in jobs if j.done]
    from_results = tuple(dict.fromkeys(k for j in done for k in j.result_keys))
    metric_keys = tuple(dict.fromkeys((*from_results, *(k for j in done for k in j.line_keys))))
    curves = tuple(dict.fromkeys(k for j in jobs for k in j.line_keys))
    config_keys = tuple(k for k in keys if k != SEED_KEY)
    return ResultsTable(paths.sweep_id, info.name, keys, config_keys, tuple(jobs),
                        group_configs(jobs, metric_keys), metric_keys=metric_keys,
                        result_keys=from_results, curve_keys=curves)


def lower_is_better(metric: str) -> bool:
    """Return whether a metric's name says it is best when low: a loss, an error."""
    words = re.split(r"[^a-z0-9]+", metric.lower())
    return any(word in LOWER_IS_BETTER for word in words)


def check_metric(table: ResultsTable, metric: str) -> None:
    """Raise UserError unless the sweep's jobs report the metric, naming those they do."""
    known = table.known_metrics()
    if metric in known:
        return
    if not known:
        raise UserError(f"no metric {metric!r} in sweep {table.sweep_id}: no job has reported "
                        "a number yet (in its result or its metrics lines)")
    raise UserError(f"no metric {metric!r} in sweep {table.sweep_id} "
                    f"(its jobs have: {', '.join(known)})")


def sort_table(table: ResultsTable, metric: str, highest_first: bool | None = None
               ) -> ResultsTable:
    """Return the table with jobs and configurations best first by a metric, absent ones last.

    highest_first None: lowest first for a loss or an error (lower_is_better), else highest.
    """
    check_metric(table, metric)
    if highest_first is None:
        highest_first = not lower_is_better(metric)
    sign = -1 if highest_first else 1

    def order(value: float | None) -> tuple[bool, float]:
        return (value is None or value != value, 0.0 if value is None else sign * value)

    jobs = sorted(table.jobs, key=lambda j: order(j.metrics.get(metric)))
    configs = sorted(table.configs, key=lambda c: order(c.stats.get(metric, NO_STAT).mean))
    return dataclasses.replace(table, jobs=tuple(jobs), configs=tuple(configs),
                               sorted_by=metric, highest_first=highest_first)


def results_csv(table: ResultsTable) -> str:
    """Return one CSV row per job: job_id, every swept key, the job's fields, every metric."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = [k for k in table.param_keys if k != SEED_KEY]
    writer.writerow(["job_id", *keys, *JOB_FIELDS, *table.metric_keys])
    for j in table.jobs:
        values = ["" if j.values.get(k) is None else fmt_value(j.values[k]) for k in keys]
        fields = [getattr(j, f) for f in JOB_FIELDS] + [j.metrics.get(k)
                                                        for k in table.metric_keys]
        writer.writerow([j.job_id, *values, *("" if v is None else v for v in fields)])
    return buf.getvalue()


def stat_json(stat: Stat) -> dict:
    """Return a Stat as a JSON object with stable keys."""
    return {"n": stat.n, "mean": stat.mean, "std": stat.std}


def results_json(table: ResultsTable) -> dict:
    """Return the results as a JSON-ready dict with stable keys.

    test_accuracy and test_loss stay where the first version of the format had them (null
    for a job that reports neither); `metrics` has every number a job reported.
    """
    sorted_by = None if table.sorted_by is None else {
        "metric": table.sorted_by, "highest_first": table.highest_first}
    return {
        "format": RESULTS_FORMAT, "sweep_id": table.sweep_id, "name": table.name,
        "param_keys": list(table.param_keys), "config_keys": list(table.config_keys),
        "metric_keys": list(table.metric_keys), "sorted_by": sorted_by,
        "finished": table.finished(),
        "jobs": [
            {"job_id": j.job_id, "params": j.params, "state": j.state, "seed": j.seed,
             "test_accuracy": j.test_accuracy, "test_loss": j.test_loss,
             **{f: getattr(j, f) for f in JOB_FIELDS[2:]}, "metrics": j.metrics}
            for j in table.jobs
        ],
        "configs": [
            {"params": c.params, "job_ids": list(c.job_ids), "n": c.n,
             "test_accuracy": stat_json(c.test_accuracy), "test_loss": stat_json(c.test_loss),
             "metrics": {k: stat_json(s) for k, s in c.stats.items()},
             "num_threads": list(c.threads)}
            for c in table.configs
        ],
    }
