"""Overrides on `launch sweep --resume`: how a sweep runs may change, never what it computes.

A finished job is never run again, and a job id is the hash of its spec: an override that
changed a spec would leave finished jobs of the old spec beside rerun jobs of a new one under
the old ids. So only the keys that say how jobs run (retries, time limits, resources, the
Slurm request) may change on resume; they are checked by the sweep file's own rules and
written into the sweep's plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from launcher.config.overrides import apply_overrides, parse_override
from launcher.config.sweepfile import (
    TOP_KEYS,
    TOP_RULES,
    _check_resources,
    _check_slurm,
)
from launcher.config.values import check
from launcher.config.yamlsource import CMDLINE, SourceMap
from launcher.errors import UserError

RESUME_KEYS = ("max_retries", "oom_retries", "timeout_min", "resources", "slurm")


def resume_changes(recorded: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return the plan's fields as overrides leave them: max_retries, oom_retries,
    timeout_min, resources, slurm; UserError naming every override that would change what a
    job computes.

    recorded holds those five fields as the sweep's plan keeps them.
    """
    refused = [text for text in overrides
               if parse_override(text)[0].partition(".")[0] not in RESUME_KEYS]
    if refused:
        names = ", ".join(parse_override(text)[0] for text in refused)
        raise UserError(f"--resume cannot change {names}: that changes what a job computes, "
                        "and finished jobs are not run again. Start a new sweep with it "
                        f"(launch sweep FILE {' '.join(refused)}); on resume only "
                        "max_retries, oom_retries, timeout_min, resources.* and slurm.* may change")
    raw: dict[str, Any] = {key: _plain(recorded.get(key)) for key in RESUME_KEYS}
    lines: dict[tuple, int | None] = {}
    apply_overrides(raw, lines, overrides, TOP_KEYS)
    src = SourceMap(CMDLINE, lines)
    resources = _check_resources(src, raw["resources"])
    return {
        **{key: check(src, (key,), raw[key], rule) for key, rule in TOP_RULES.items()},
        "resources": resources.to_json(),
        "slurm": _check_slurm(src, raw["slurm"], resources).to_json(),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, tuple):
        return list(value)
    return value
