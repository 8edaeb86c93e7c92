"""Every key a sweep file may hold, its default and what it allows: `launch keys`.

What a key allows is read from the sweep file's own rules (sweepfile.py), by the messages
they give for a value they refuse, and its default from the records (sweepfile.py's
dataclasses, jobs/spec.py's schema), so neither can drift from what is checked. What a key
does is said here, and a test checks that these words cover exactly the keys the rules check.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from launcher.config.axes import SEED_FROM_ENV
from launcher.config.sweepfile import (
    NOTIFY_RULES,
    RESOURCE_RULES,
    SLURM_RULES,
    TOP_RULES,
    Notify,
    Resources,
    SlurmConfig,
)

TOP = {
    "name": ("a plain name: letters, digits, '.', '_', '-'", "the file's name"),
    "executor": ("local | slurm", "local"),
    "job": ("one job: a built-in model's spec (job.* below), or a command template", None),
    "grid": ("KEY: [values, ...] with dotted keys into the job: every combination", "{}"),
    "points": ("a list of mappings, each a variant laid over the job (x every grid "
               "combination)", "none"),
    "seeds": ("N (seeds 0..N-1) or a list of integers >= 0: every job once per seed", "1"),
    "resources": ("a mapping: what one job needs and how the machine is shared", None),
    "max_retries": ("reruns of a failed job before it counts as failed", "0"),
    "oom_retries": ("reruns of a job that died of GPU out-of-memory, with its need raised, "
                    "beside max_retries", "2"),
    "timeout_min": ("minutes a job may run before it is stopped", "null: no limit"),
    "slurm": ("a mapping: what each array task asks Slurm for", None),
    "notify": ("a mapping: whom to tell when the sweep ends or a job fails", "none"),
}
COMMAND_JOB = {
    "command": "the argv of your own program (a list, or one string split like a shell); "
               "{key} placeholders take the job's values, {seed} its seed",
    SEED_FROM_ENV: "true: the program takes its seed from $LAUNCH_SEED, so a command "
                   "without {seed} may still run several seeds (default false)",
    "KEY": "any other key: a value the placeholders use, swept by grid and points",
}
RESOURCES = {
    "gpus_per_job": "GPUs each job holds; 0 runs jobs on the CPU",
    "jobs_per_gpu": "> 1 packs small jobs onto one GPU; auto: as many as their memory needs fit",
    "cpus_per_job": "DataLoader workers + threads of one job, within cpu_budget",
    "cpu_budget": "CPUs shared by every job of this tool here, at most the machine's",
    "gpu_memory_mib": "the free GPU memory one job needs (null: learned from its "
                      "configuration's peak)",
    "gpu_memory_margin": "a learned need is the peak plus this fraction (0.1: 10%)",
    "include_gpus": "the only GPUs to use; null: all",
    "exclude_gpus": "GPUs never to use",
    "leave_free": "GPUs to leave idle for colleagues",
    "prefer": "which free GPU first",
    "max_memory_used_mib": "a GPU using more is busy (null: max(512 MiB, 2%))",
    "max_utilization_percent": "a GPU this busy is busy (null: 10)",
    "device": "auto runs on the CPU where there is no GPU, gpu refuses to",
}
SLURM = {
    "partition": "the partition",
    "time_min": "the time limit of each task",
    "gpus_per_node": "asked as GRES gpu:N",
    "cpus_per_task": "the job gets cpus_per_task - 1 DataLoader workers",
    "mem_gb": "memory of each task",
    "account": "the account",
    "qos": "the QOS",
    "constraint": "node features",
    "array_parallelism": "most tasks running at once",
    "sbatch_lines": "more sbatch options, verbatim",
    "setup": "shell lines run before the job, after `set -euo pipefail`",
}
NOTIFY = {
    "command": "the argv run when it happens, never through a shell; {message}, {sweep_id}, "
               "and more placeholders",
    "webhook": "a URL (or ${NAME} of one in the environment) that gets a JSON summary "
               "POSTed: Slack, ntfy",
    "topic": "ntfy's topic, for a webhook at the server's root",
    "on": "end: when the sweep ends; failure: also when a job fails",
    "timeout_s": "each notification's time limit",
}
SLURM_DEFAULTS = {"gpus_per_node": "resources.gpus_per_job",
                  "cpus_per_task": "resources.cpus_per_job"}
RESOURCE_DEFAULTS = {"cpu_budget": "half the CPUs this process may use",
                     "cpus_per_job": "2, or the budget if smaller"}


def _refusal(rule: Any, value: Any) -> tuple[str, tuple] | None:
    problem = rule(value)
    return None if problem is None else (problem[0].removeprefix("must be ").split(", got")[0],
                                         problem[1])


def allows(rule: Any) -> str:
    """Return what a value rule of sweepfile.py allows, from what it says when it refuses."""
    text, choices = _refusal(rule, object()) or ("anything", ())
    if choices:
        text = " | ".join(choices)
    elif text in ("an integer", "a number"):
        ranged = _refusal(rule, -(10**18))
        text += f" {ranged[0]}" if ranged else ""
    return text + (", or null" if rule(None) is None else "")


def _section(name: str, record: type, rules: dict, words: dict[str, str],
             special: dict[str, str]) -> list[str]:
    from jobs.spec import _json as text  # values written as jobs' own help writes them

    defaults = {f.name: f.default for f in dataclasses.fields(record)}
    lines = []
    for key, rule in rules.items():
        value = defaults.get(key)
        default = special.get(key) or text(list(value) if isinstance(value, tuple) else value)
        lines.append(f"{name}.{key}: {allows(rule)} (default {default}); {words[key]}")
    return lines


def key_lines() -> list[str]:
    """Return one line per key: the sweep file's, then a command job's, then a built-in job's."""
    from jobs.spec import schema_lines

    lines = ["A sweep file (YAML); command-line overrides use the same dotted keys.", ""]
    for key, (words, default) in TOP.items():
        if key in TOP_RULES:
            words = f"{allows(TOP_RULES[key])}; {words}"
        lines.append(f"{key}: {words}" + (f" (default {default})" if default else ""))
    lines += ["", *_section("resources", Resources, RESOURCE_RULES, RESOURCES,
                            RESOURCE_DEFAULTS),
              "", *_section("slurm", SlurmConfig, SLURM_RULES, SLURM, SLURM_DEFAULTS),
              "", *_section("notify", Notify, NOTIFY_RULES, NOTIFY, {}),
              "", "A command job (job: {command: [...], KEY: value}):"]
    lines += [f"job.{key}: {words}" for key, words in COMMAND_JOB.items()]
    lines += ["", "A built-in job (python -m jobs):"]
    lines += [f"job.{line}" for line in schema_lines()]
    return lines
