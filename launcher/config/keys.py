"""Every key a sweep file may hold, its default and what it allows: `launch keys`.

The defaults come from the records themselves (sweepfile.py's dataclasses, jobs/spec.py's
schema); the words for what each section key allows are kept here, and a test checks that
they name exactly the keys the sweep file's rules check.
"""

from __future__ import annotations

import dataclasses

from launcher.config.axes import SEED_FROM_ENV
from launcher.config.sweepfile import Resources, SlurmConfig

TOP = {
    "name": ("a plain name: letters, digits, '.', '_', '-'", "the file's name"),
    "executor": ("local | slurm", "local"),
    "job": ("one job: a built-in model's spec (job.* below), or a command template", None),
    "grid": ("KEY: [values, ...] with dotted keys into the job: every combination", "{}"),
    "points": ("a list of mappings, each a variant laid over the job (x every grid "
               "combination)", "none"),
    "seeds": ("N (seeds 0..N-1) or a list of integers >= 0: every job once per seed", "1"),
    "resources": ("a mapping: what one job needs and how the machine is shared", None),
    "max_retries": ("an integer >= 0: reruns of a failed job before it counts as failed",
                    "0"),
    "timeout_min": ("a number > 0 or null: minutes a job may run before it is stopped",
                    "null"),
    "slurm": ("a mapping: what each array task asks Slurm for", None),
}
COMMAND_JOB = {
    "command": "the argv of your own program (a list, or one string split like a shell); "
               "{key} placeholders take the job's values, {seed} its seed",
    SEED_FROM_ENV: "true: the program takes its seed from $LAUNCH_SEED, so a command "
                   "without {seed} may still run several seeds (default false)",
    "KEY": "any other key: a value the placeholders use, swept by grid and points",
}
RESOURCES = {
    "gpus_per_job": "an integer >= 0; 0 runs jobs on the CPU",
    "jobs_per_gpu": "an integer >= 1; > 1 packs small jobs onto one GPU",
    "cpus_per_job": "an integer >= 1, at most cpu_budget: DataLoader workers + threads",
    "cpu_budget": "an integer >= 1, at most the machine's CPUs: shared by every job here",
    "gpu_memory_mib": "an integer >= 1 or null: what one job needs (with jobs_per_gpu > 1)",
    "include_gpus": "a list of GPU indices or UUIDs, or null for all",
    "exclude_gpus": "a list of GPU indices or UUIDs never to use",
    "leave_free": "an integer >= 0: GPUs to leave idle for colleagues",
    "prefer": "most_free_memory | lowest_index",
    "max_memory_used_mib": "an integer >= 0 or null: a GPU using more is busy",
    "max_utilization_percent": "a number 0..100 or null (10): a GPU this busy is busy",
    "device": "auto | cpu | gpu: auto runs on the CPU where there is no GPU, gpu refuses",
}
SLURM = {
    "partition": "a name without spaces, or null",
    "time_min": "an integer >= 1: the time limit of each task",
    "gpus_per_node": "an integer >= 0, asked as GRES gpu:N",
    "cpus_per_task": "an integer >= 1; the job gets cpus_per_task - 1 DataLoader workers",
    "mem_gb": "a number > 0 or null",
    "account": "a name without spaces, or null",
    "qos": "a name without spaces, or null",
    "constraint": "a name without spaces, or null",
    "array_parallelism": "an integer >= 1 or null: most tasks running at once",
    "sbatch_lines": "a list of '#SBATCH --option' lines, verbatim",
    "setup": "a list of shell lines run before the job, after `set -euo pipefail`",
}
SLURM_DEFAULTS = {"gpus_per_node": "resources.gpus_per_job",
                  "cpus_per_task": "resources.cpus_per_job"}
RESOURCE_DEFAULTS = {"cpu_budget": "half the CPUs this process may use",
                     "cpus_per_job": "2, or the budget if smaller"}


def _section(name: str, record: type, allows: dict[str, str], special: dict[str, str]
             ) -> list[str]:
    from jobs.spec import _json as text  # values written as jobs' own help writes them

    defaults = {f.name: f.default for f in dataclasses.fields(record)}
    lines = []
    for key, words in allows.items():
        value = defaults.get(key)
        default = special.get(key) or text(list(value) if isinstance(value, tuple) else value)
        lines.append(f"{name}.{key}: {words} (default {default})")
    return lines


def key_lines() -> list[str]:
    """Return one line per key: the sweep file's, then a command job's, then a built-in job's."""
    from jobs.spec import schema_lines

    lines = ["A sweep file (YAML); command-line overrides use the same dotted keys.", ""]
    for key, (words, default) in TOP.items():
        lines.append(f"{key}: {words}" + (f" (default {default})" if default else ""))
    lines += ["", *_section("resources", Resources, RESOURCES, RESOURCE_DEFAULTS),
              "", *_section("slurm", SlurmConfig, SLURM, SLURM_DEFAULTS),
              "", "A command job (job: {command: [...], KEY: value}):"]
    lines += [f"job.{key}: {words}" for key, words in COMMAND_JOB.items()]
    lines += ["", "A built-in job (python -m jobs):"]
    lines += [f"job.{line}" for line in schema_lines()]
    return lines
