"""Sweep files: the config dataclasses, and `load_sweep` that checks a file into them.

`load_sweep` is the one way in: it reads the YAML (`launcher.yamlsource`), applies command-line
overrides (`launcher.overrides`), checks the job, grid and points (`launcher.axes`) and every
other section here. Every problem becomes a `SweepFileError` that names the file, the line,
the dotted key and what is allowed. Each job's values are checked by
`launcher.plan.plan_jobs` (through `jobs.spec` for built-in models).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.config.axes import check_axes, check_command_overrides
from launcher.config.overrides import apply_overrides
from launcher.config.values import (
    check,
    gpu_list,
    integer,
    line_list,
    number,
    one_of,
    optional,
    section,
    slurm_token,
    word_or,
)
from launcher.config.yamlsource import CMDLINE, SourceMap, SweepFileError, read_yaml
from launcher.machine.cpus import default_cpu_budget
from launcher.machine.feasible import Needs
from launcher.machine.gpus import GpuPolicy
from launcher.machine.leasedir import SLOTS_PER_GPU
from launcher.machine.memory import DEFAULT_MARGIN
from launcher.rundir.layout import NAME_CHARS


@dataclass(frozen=True)
class Resources:
    """The `resources:` section: what one job needs and how the machine is shared.

    device: `auto` gives jobs GPUs where the machine has any and runs them on the CPU where
    it has none (no driver); `cpu` never gives GPUs; `gpu` requires them and is an error on
    a machine without. `gpus_per_job: 0` makes CPU jobs whatever the device.
    """

    cpu_budget: int                     # CPUs all jobs of this tool share (default: half)
    gpus_per_job: int = 1
    jobs_per_gpu: int | str = 1         # > 1 packs small jobs onto one GPU; auto: as they fit
    cpus_per_job: int = 2               # DataLoader workers + threads (default: <= budget)
    gpu_memory_mib: int | None = None   # what one job needs free; None: learned (its peak)
    gpu_memory_margin: float = DEFAULT_MARGIN  # a learned need is the peak plus this fraction
    include_gpus: tuple[int | str, ...] | None = None  # indices or UUIDs; None: all
    exclude_gpus: tuple[int | str, ...] = ()
    leave_free: int = 0                 # GPUs to leave idle for other people
    prefer: str = "most_free_memory"    # or lowest_index
    max_memory_used_mib: int | None = None      # busier GPUs are not free; None: policy's
    max_utilization_percent: float | None = None
    device: str = "auto"                # auto | cpu | gpu

    @property
    def gpus_needed(self) -> int:
        """Return the GPUs one job holds: 0 for CPU jobs (`gpus_per_job: 0` or `device: cpu`)."""
        return 0 if self.device == "cpu" else self.gpus_per_job

    def needs(self) -> Needs:
        """Return what each job needs of the machine, in the placement's terms."""
        util = self.max_utilization_percent
        auto = self.jobs_per_gpu == "auto"
        policy = GpuPolicy(
            include=tuple(str(g) for g in self.include_gpus or ()),
            exclude=tuple(str(g) for g in self.exclude_gpus),
            leave_free=self.leave_free,
            # auto: as many as the slot files allow, while their needs fit (gpus.py)
            jobs_per_gpu=SLOTS_PER_GPU if auto else int(self.jobs_per_gpu),
            pack_by_memory=auto,
            job_memory_mib=self.gpu_memory_mib,
            max_memory_used_mib=self.max_memory_used_mib,
            max_utilization_percent=10 if util is None else util,
            prefer_most_free_memory=self.prefer == "most_free_memory",
        )
        return Needs(gpus=self.gpus_needed, cpus=self.cpus_per_job, cpu_budget=self.cpu_budget,
                     device=self.device, policy=policy, memory_margin=self.gpu_memory_margin)

    def to_json(self) -> dict[str, Any]:
        """Return the record as the sweep's plan keeps it."""
        return _json_ready(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Resources:
        """Return the record the sweep's plan keeps (to_json); its defaults were applied then."""
        values = _known_fields(cls, raw)
        values.setdefault("cpu_budget", default_cpu_budget())  # a plan from before it was recorded
        return cls(**values)


@dataclass(frozen=True)
class SlurmConfig:
    """The `slurm:` section: what each array task (one job) asks Slurm for."""

    gpus_per_node: int                  # default: resources.gpus_per_job (0 for device cpu)
    cpus_per_task: int                  # default: resources.cpus_per_job
    partition: str | None = None
    time_min: int = 60
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int | None = None  # most tasks running at once; None: no limit
    sbatch_lines: tuple[str, ...] = ()  # extra "#SBATCH ..." lines, verbatim
    setup: tuple[str, ...] = ()         # shell lines run before the job (module loads)

    def to_json(self) -> dict[str, Any]:
        """Return the record as the sweep's plan keeps it."""
        return _json_ready(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SlurmConfig:
        """Return the record the sweep's plan keeps (to_json)."""
        values = _known_fields(cls, raw)
        values.setdefault("gpus_per_node", 0)
        values.setdefault("cpus_per_task", 1)
        return cls(**values)


def _json_ready(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _known_fields(cls: type, raw: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in names}


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file. `grid` includes the `seeds` axis as `seed`. Do not mutate."""

    name: str
    executor: str
    job: dict[str, Any]
    grid: dict[str, list[Any]]
    points: tuple[dict[str, Any], ...]
    resources: Resources
    slurm: SlurmConfig
    max_retries: int
    timeout_min: float | None
    source_path: str
    source_text: str
    overrides: tuple[str, ...] = ()
    notify: Notify | None = None
    oom_retries: int = 2  # runs again after GPU out-of-memory, beside max_retries
    locations: SourceMap = field(default=SourceMap("", {}), compare=False, repr=False)

    @property
    def is_command(self) -> bool:
        """Return True for a command-template job, False for a built-in model."""
        return "command" in self.job


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> Sweep:
    """Return the validated Sweep of a sweep file with overrides applied; writes nothing."""
    raw, lines, text = read_yaml(path)
    src = SourceMap(str(path), lines)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise src.error((), "a sweep file is a mapping of keys", TOP_KEYS, key="(top level)")
    for text in overrides:
        top = text.partition("=")[0].strip().partition(".")[0]
        if "=" in text and top not in TOP_KEYS:
            raise SweepFileError(CMDLINE, None, top, _unknown(top, raw), TOP_KEYS)
    typed = apply_overrides(raw, lines, overrides, TOP_KEYS)
    for key in raw:
        if key not in TOP_KEYS:
            raise src.error((key,), _unknown(key, raw), TOP_KEYS)
    aliases = {("grid", "seed"): ("seeds",)} if "seeds" in raw else {}
    src = SourceMap(str(path), lines, aliases, typed)
    job, grid, points = check_axes(src, raw)
    check_command_overrides(src, job)
    resources = _check_resources(src, raw.get("resources"))
    return Sweep(
        name=check(src, ("name",), raw.get("name", _plain_name(Path(path).stem)), _name),
        executor=check(src, ("executor",), raw.get("executor", "local"),
                        one_of("local", "slurm")),
        job=job, grid=grid, points=points, resources=resources,
        slurm=_check_slurm(src, raw.get("slurm"), resources),
        notify=_check_notify(src, raw.get("notify")),
        max_retries=check(src, ("max_retries",), raw.get("max_retries", 0),
                          TOP_RULES["max_retries"]),
        oom_retries=check(src, ("oom_retries",), raw.get("oom_retries", 2),
                          TOP_RULES["oom_retries"]),
        timeout_min=check(src, ("timeout_min",), raw.get("timeout_min"),
                          TOP_RULES["timeout_min"]),
        source_path=str(path), source_text=text, overrides=tuple(overrides), locations=src,
    )


def _plain_name(stem: str) -> str:
    """Return a file's name made a plain sweep name: what the user did not write is not
    refused, only cleaned."""
    return re.sub(f"[^{NAME_CHARS}]+", "-", stem).strip("._-") or "sweep"


def _unknown(key: str, raw: dict) -> str:
    """Return "unknown key", with where it belongs when it is a key of a section: `lr` of a
    job that has one is `job.lr`, `gpus_per_job` is `resources.gpus_per_job`."""
    job = raw.get("job")
    where = None
    if isinstance(job, dict) and "command" in job:
        where = f"job.{key}" if key in job else None
    else:
        from jobs.spec import SPEC_SCHEMA  # only on this error: status never pays for it

        where = f"job.{key}" if key in SPEC_SCHEMA else next(
            (f"job.{name}.{key}" for name, f in SPEC_SCHEMA.items()
             if f.kind == "section" and key in f.fields), None)
    for name, rules in (("resources", RESOURCE_RULES), ("slurm", SLURM_RULES)):
        where = where or (f"{name}.{key}" if key in rules else None)
    return f"unknown key; did you mean {where}?" if where else "unknown key"


def _name(value: Any) -> tuple[str, tuple] | None:
    # The name becomes the sweep's folder and its Slurm job name: a path or a shell's
    # delight must be refused, not silently rewritten into something else.
    if isinstance(value, str) and re.fullmatch(f"[A-Za-z0-9][{NAME_CHARS}]*", value):
        return None
    return ("must be a plain name of letters, digits, '.', '_' and '-' (starting with a "
            f"letter or digit), got {value!r}", ())


# Upper bounds are far past any machine's, and keep a typo from meaning a trillion.
RESOURCE_RULES = {
    "gpus_per_job": integer(0, 64), "jobs_per_gpu": word_or("auto", integer(1, 256)),
    "cpu_budget": integer(1, 65536),
    "cpus_per_job": integer(1, 65536), "gpu_memory_mib": optional(integer(1, 10**8)),
    "gpu_memory_margin": number(-1e-9, 4),
    "include_gpus": optional(gpu_list), "exclude_gpus": gpu_list, "leave_free": integer(0, 64),
    "prefer": one_of("most_free_memory", "lowest_index"),
    "max_memory_used_mib": optional(integer(0, 10**8)),
    "max_utilization_percent": optional(number(-1e-9, 100)),
    "device": one_of("auto", "cpu", "gpu"),
}
SLURM_RULES = {
    "partition": optional(slurm_token), "time_min": integer(1, 10**7),
    "gpus_per_node": integer(0, 64),
    "cpus_per_task": integer(1, 65536), "mem_gb": optional(number(0, 10**6)),
    "account": optional(slurm_token),
    "qos": optional(slurm_token), "constraint": optional(slurm_token),
    "array_parallelism": optional(integer(1, 10**6)), "sbatch_lines": line_list("#SBATCH "),
    "setup": line_list(""),
}
# The top-level numbers, also checked when `launch sweep --resume` changes them (resume.py).
TOP_RULES = {"max_retries": integer(0, 1000), "oom_retries": integer(0, 100),
             "timeout_min": optional(number(0, 10**8))}
TOP_KEYS = ("name", "executor", "job", "grid", "points", "seeds", "resources", "max_retries",
            "oom_retries", "timeout_min", "slurm", "notify")


def _check_resources(src: SourceMap, raw: Any) -> Resources:
    budget = raw.get("cpu_budget") if isinstance(raw, dict) else None
    budget = budget if isinstance(budget, int) and budget > 0 else default_cpu_budget()
    # Two CPUs per job unless the budget is smaller: a 2-core laptop still runs the demo.
    values = section(src, "resources", raw, RESOURCE_RULES,
                     {"cpu_budget": budget, "cpus_per_job": min(2, budget)})
    res = Resources(**values)
    if res.cpus_per_job > res.cpu_budget:
        raise src.error(("resources", "cpus_per_job"), f"{res.cpus_per_job} CPUs per job can "
                        f"never start within cpu_budget {res.cpu_budget}")
    if res.jobs_per_gpu != 1 and res.gpus_per_job != 1:
        raise src.error(("resources", "jobs_per_gpu"), "sharing a GPU between jobs needs "
                        f"gpus_per_job: 1, got {res.gpus_per_job}")
    if res.device == "gpu" and res.gpus_per_job == 0:
        raise src.error(("resources", "device"), "device: gpu needs gpus_per_job >= 1")
    return res


def _check_slurm(src: SourceMap, raw: Any, res: Resources) -> SlurmConfig:
    defaults = {"gpus_per_node": res.gpus_needed, "cpus_per_task": res.cpus_per_job}
    return SlurmConfig(**section(src, "slurm", raw, SLURM_RULES, defaults))


@dataclass(frozen=True)
class Notify:
    """The `notify:` section, sent by launcher/local/notify.py: the sweep ended, a job failed.

    A webhook given as `${NAME}` is read from the environment when it is sent, so that a
    secret URL stays out of the run directory."""

    command: tuple[str, ...] = ()       # argv run when it happens, never through a shell
    webhook: str | None = None          # gets a JSON summary POSTed (Slack, ntfy)
    topic: str | None = None            # ntfy's topic, for a webhook at the server's root
    on: tuple[str, ...] = ("end",)      # end | failure
    timeout_s: float = 10.0             # each notification's limit

    def to_json(self) -> dict[str, Any]:
        """Return the record as the sweep's plan keeps it."""
        return _json_ready(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Notify:
        """Return the record the sweep's plan keeps (to_json)."""
        return cls(**_known_fields(cls, raw))


NOTIFY_EVENTS = ("end", "failure")


def _argv(value: Any) -> tuple[str, tuple] | None:
    ok = isinstance(value, list) and value and line_list("")(value) is None and all(value)
    return None if ok else (f"must be a non-empty list of arguments, got {value!r}", ())


def _url(value: Any) -> tuple[str, tuple] | None:
    if isinstance(value, str) and re.fullmatch(r"(https?://[^\s]+|\$\{[A-Za-z_]\w*\})", value):
        return None
    return f"must be an http(s):// URL or ${{NAME}} of one in the environment, got {value!r}", ()


def _events(value: Any) -> tuple[str, tuple] | None:
    ok = isinstance(value, list) and value and all(v in NOTIFY_EVENTS for v in value)
    return None if ok else (f"must be a non-empty list of events, got {value!r}", NOTIFY_EVENTS)


NOTIFY_RULES = {"command": _argv, "webhook": optional(_url), "topic": optional(slurm_token),
                "on": _events, "timeout_s": number(0, 600)}


def _check_notify(src: SourceMap, raw: Any) -> Notify | None:
    if raw is None:
        return None
    notify = Notify(**section(src, "notify", raw, NOTIFY_RULES, {}))
    if not notify.command and not notify.webhook:
        raise src.error(("notify",), "says whom to tell: a command, a webhook or both",
                        ("command", "webhook"))
    return notify

