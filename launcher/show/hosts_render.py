"""What `launch status --hosts` prints: a summary line per host, then each host's own view.

Pure functions of the hosts' reports (launcher/show/hosts_view.py). A host's block is what
plain `launch status` prints there (launcher/show/status_render.py), under a header naming
the host; a host seen only through nvidia-smi says so in its header and its summary line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from launcher.machine.nvml import gib
from launcher.show.hosts_view import SOURCE_SMI, HostReport, HostSummary, records, summarize
from launcher.show.status_render import (
    gpu_lines,
    render_full,
    render_status,
    reserved_in,
    status_json,
)

HEADERS = ("HOST", "FREE", "FREE MEMORY", "OTHERS' PROCS", "YOUR JOBS", "FREE BY MODEL")
JOBS_WORDS = "running/waiting/failed"
RIGHT = (1, 2, 3)  # the columns of numbers, lined up on the right


def _jobs(summary: HostSummary) -> str:
    if summary.jobs is None:
        return "?"
    return "/".join(map(str, summary.jobs))


def _row(report: HostReport, summary: HostSummary | None) -> list[str]:
    if summary is None:
        return [report.host, f"unreachable: {report.error}"]
    models = ", ".join(f"{free}/{total} {model}" for model, free, total in summary.by_model)
    if report.status and report.status.get("nvml_error"):
        models = report.status["nvml_error"]
    row = [report.host, f"{summary.free}/{summary.total}", gib(summary.free_memory_bytes),
           str(summary.others_processes), _jobs(summary), models or "no GPUs"]
    if report.source == SOURCE_SMI:
        row[-1] += "  (from nvidia-smi)"
    return row


def _line(row: Sequence[str], widths: Sequence[int], numbers: bool) -> str:
    if len(row) < len(HEADERS):  # a host that did not answer: its name, then why
        return "  ".join([row[0].ljust(widths[0]), *row[1:]]).rstrip()
    cells = [c if i == len(row) - 1 else c.rjust(widths[i]) if numbers and i in RIGHT
             else c.ljust(widths[i]) for i, c in enumerate(row)]
    return "  ".join(cells).rstrip()


def summary_lines(reports: Sequence[HostReport]) -> list[str]:
    """Return the summary table: a header, then one line per host in the order given."""
    header = [*HEADERS[:4], f"{HEADERS[4]} ({JOBS_WORDS})", HEADERS[5]]
    rows = [_row(r, summarize(r)) for r in reports]
    widths = [max(len(r[i]) for r in [header, *rows] if len(r) == len(HEADERS))
              for i in range(len(HEADERS))]
    widths[0] = max(len(r[0]) for r in [header, *rows])
    return [_line(header, widths, False), *(_line(r, widths, True) for r in rows)]


def host_header(report: HostReport) -> str:
    """Return the line that opens a host's block: its name, and where its view comes from."""
    if report.source == SOURCE_SMI:
        return f"=== {report.host}: nvidia-smi's view ({report.fallback_reason}) ==="
    return f"=== {report.host} ==="


def host_block(report: HostReport, full: bool = False,
               unprotected: str | None = None) -> list[str]:
    """Return a host's own lines: what plain `launch status` (or --full) prints on it.

    `unprotected` is the line plain status adds where the lease directory is not protected.
    """
    status = report.status or {}
    found = records(status)
    now, error, host = status.get("time") or 0.0, status.get("nvml_error"), report.host
    if report.source == SOURCE_SMI:
        body = gpu_lines(found.snapshot, found.leases, now, error, host)
        body.append("sweeps: not known (no launch there to ask)")
    else:
        rules = status.get("house_rules")
        summary = rules.get("summary") if isinstance(rules, dict) else None
        notes = [unprotected] if status.get("leases_protected") is False else []
        notes += [summary] if isinstance(summary, str) else []
        shown = {"cpu_use": found.cpu_use, "note": "\n".join(filter(None, notes)) or None}
        args = (found.snapshot, found.leases, found.sweeps, now, error, status.get("host") or host)
        body = (render_full(*args, **shown) if full else render_status(
            *args, **shown, reserved=reserved_in(rules)))
        body = body.splitlines()
    return [host_header(report), *body]


def render_hosts(reports: Sequence[HostReport], full: bool = False,
                 unprotected: str | None = None) -> str:
    """Return the whole view: the summary table, then the block of every host that answered."""
    lines = summary_lines(reports)
    for report in reports:
        if report.status is not None:
            lines += ["", *host_block(report, full, unprotected)]
    return "\n".join(lines) + "\n"


def host_json(report: HostReport, now: float) -> dict[str, Any]:
    """Return one host as JSON: the keys of its `launch status --json`, plus who and why.

    `host` is the name it was asked by and `hostname` what it calls itself; `error` says why
    it did not answer (its other keys are then empty); `source` is "launch" or "nvidia-smi".
    """
    status = report.status or status_json(None, (), (), now, None, report.host)
    summary = summarize(report)
    return {**status, "host": report.host, "hostname": status.get("host"),
            "error": report.error, "source": report.source,
            "fallback_reason": report.fallback_reason,
            "summary": summary._asdict() if summary else None}


def hosts_json(reports: Sequence[HostReport], now: float) -> list[dict[str, Any]]:
    """Return every host as JSON, one object per host in the order given."""
    return [host_json(r, now) for r in reports]
