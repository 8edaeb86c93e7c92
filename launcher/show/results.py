"""`launch results`: one row per job and mean +- std over seeds per configuration.

Everything is read from the run directory (each job's result, state, metrics, the
specs), so results work the same for local and Slurm sweeps, while a sweep runs and after it
ended. The table is built by a pure function over those files; rendering (results_render.py),
CSV and JSON are pure over the table.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from launcher.contract import RESULT_FINISHED
from launcher.rundir.layout import JobPaths, SweepPaths
from launcher.rundir.state import read_state
from launcher.rundir.store import read_json, read_last_jsonl
from launcher.rundir.sweepdir import SweepInfo, read_info, read_specs
from launcher.show.text import fmt_value

RESULTS_FORMAT = "launch-results/1"
SEED_KEY = "seed"
JOB_FIELDS = ("state", "seed", "test_accuracy", "test_loss", "epochs_done", "wall_time_s", "device")


@dataclass(frozen=True)
class JobRow:
    """One job's outcome: its swept values, state, and numbers from its result."""

    job_id: str
    params: dict  # the values this job sets, as the plan records them
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


def read_job_row(job: JobPaths, params: dict, spec: dict, keys: Sequence[str]) -> JobRow:
    """Return one job's row from its state, result, metrics and spec."""
    state = read_state(job).state
    result = read_json(job.result_json)
    if not isinstance(result, dict) or result.get("status") != RESULT_FINISHED:
        # a half-written or crashed run's numbers must not enter the mean
        result = {}
    seed = result.get("seed", params.get(SEED_KEY, spec.get(SEED_KEY)))
    last = read_last_jsonl(job.metrics_jsonl) or {}
    epochs_done = result.get("epochs_done")
    if epochs_done is None:
        epochs_done = last.get("epoch")
    epochs = last.get("epochs", spec.get("epochs"))
    values = {k: params[k] if k in params else spec_value(spec, k) for k in keys}
    return JobRow(
        job_id=job.job_id, params=dict(params), values=values, state=state, seed=seed,
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
    config_keys = tuple(k for k in keys if k != SEED_KEY)
    return ResultsTable(paths.sweep_id, info.name, keys, config_keys, tuple(jobs),
                        group_configs(jobs))


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
