"""The jobs section of `launch status` and `launch follow`: each sweep's title and its jobs.

Pure functions of the sweeps' views (and the GPU snapshot, to name a job's GPUs as status
numbers them), so the golden files of tests/launcher/test_status.py pin their output.
"""

from __future__ import annotations

from collections.abc import Sequence

from launcher.contract import format_duration as duration
from launcher.machine.nvml import Snapshot
from launcher.rundir.state import ENDED_STATES
from launcher.show.text import fmt_value, percent, value_slug
from launcher.show.views import LOST, SHOWN_STATES, JobView, SweepView

SHOWN_PER_STATE = {"finished": 10, "pending": 5}  # per sweep; the newest finished, next pending
ENDED_SWEEPS_SHOWN = 3


def _gpu_labels(snapshot: Snapshot | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for gpu in snapshot.gpus if snapshot else ():
        if gpu.uuid:
            labels[gpu.uuid] = str(gpu.index)
        for m in gpu.mig_devices:
            if m.uuid:
                labels[m.uuid] = f"{gpu.index}:{m.index}"
    return labels


def _job_gpu(job: JobView, labels: dict[str, str]) -> str:
    if job.gpus and all(u in labels for u in job.gpus):
        return ",".join(labels[u] for u in job.gpus)
    return ",".join(map(str, job.gpu_indices)) or "-"


def short_id(text: str, width: int) -> str:
    """Return text cut to at most width characters, from the middle."""
    # Job ids end in a hash that tells them apart; cut from the middle, keep the end.
    if len(text) <= width:
        return text
    if width < 2:
        return text[: max(width, 0)]
    tail = min(10, width - 1)
    return text[: width - tail - 1] + "~" + text[-tail:]


def _job_rows(view: SweepView, labels: dict[str, str], full_list: bool) -> list[str]:
    shown, hidden = list(view.jobs), {}
    if not full_list:  # a big sweep's many finished and pending jobs are counted, not listed
        for state, keep in SHOWN_PER_STATE.items():
            these = [j for j in shown if j.state == state]
            if len(these) > keep:
                hidden[state] = len(these) - keep
                drop = {id(j) for j in (these[:-keep] if state == "finished" else these[keep:])}
                shown = [j for j in shown if id(j) not in drop]
    width = min(44, max([len(j.job_id) for j in shown] + [3]))
    gpu = {id(j): _job_gpu(j, labels) for j in shown}
    gpu_w = max([5, *map(len, gpu.values())])
    values = _value_columns(shown, width)
    epochs = {id(j): epoch_cell(j) for j in shown}
    epoch_w = max([6, *map(len, epochs.values())])
    # Two spaces after STATE: the longest states (cancelled, preempted) fill its 9 columns.
    rows = [f"  {'JOB':<{width}}  {values[0]}{'STATE':<9}  {'GPU':<{gpu_w}} "
            f"{'EPOCH':>{epoch_w}} {'VAL_ACC':>8} {'ELAPSED':>8} {'ETA':>8}"]
    for j in shown:
        row = (f"  {short_id(j.job_id, width):<{width}}  {values[1](j)}{j.state:<9}  "
               f"{gpu[id(j)]:<{gpu_w}} {epochs[id(j)]:>{epoch_w}} {percent(j.val_accuracy):>8} "
               f"{duration(j.elapsed_s):>8} {duration(j.eta_s):>8}")
        why = j.reason or ("queued" if j.state == "pending" else "")
        # Slurm's word (PENDING with its reason, RUNNING on which node) is worth a column
        # in every state; the local executor explains only jobs that are not running.
        explained = ("pending", "waiting", "oom", "failed", "timeout", "preempted", LOST)
        if why and (j.state in explained or view.executor == "slurm"):
            row += f"  {why}"
        rows.append(row.rstrip())
    rows += [f"  ... {n} more {state}" for state, n in hidden.items()]
    return rows


def _value_columns(jobs: Sequence[JobView], width: int):
    """Return (header, row function) of the swept values' columns: shown only when an id
    is cut to fit (or left values out), so that jobs still read apart by their values."""
    told = all(len(j.job_id) <= width and all(value_slug(v) in j.job_id
                                              for v in j.params.values()) for j in jobs)
    keys = list(dict.fromkeys(k for j in jobs for k in j.params))
    if told or not keys:
        return "", lambda job: ""
    cells = {id(j): [fmt_value(j.params.get(k)) for k in keys] for j in jobs}
    widths = [max([len(k), *(len(cells[id(j)][i]) for j in jobs)]) for i, k in enumerate(keys)]
    header = "".join(f"{k.upper():<{w}}  " for k, w in zip(keys, widths, strict=True))
    return header, lambda job: "".join(f"{c:<{w}}  " for c, w in zip(cells[id(job)], widths,
                                                                     strict=True))


def epoch_cell(job: JobView) -> str:
    """Return a job's EPOCH cell: "3/22" epochs done, or "4/22 41%" within the fourth."""
    if job.epochs and job.epoch_fraction is not None:
        return f"{(job.epoch or 0) + 1}/{job.epochs} {int(100 * job.epoch_fraction)}%"
    started = job.epoch is not None or job.state not in ("pending", "waiting")
    return f"{job.epoch or 0}/{job.epochs}" if job.epochs and started else "-"


def _sweep_title(view: SweepView) -> str:
    if view.supervisor == "unreadable":
        return f"{view.sweep_id}  cannot be shown: {view.error}"
    if view.supervisor == "unsubmitted":  # a script waiting for its user, not a queue
        return f"{view.sweep_id}  slurm  {view.error}: {len(view.jobs)} jobs"
    counts = view.counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in SHOWN_STATES if s in counts)
    dead = f"SUPERVISOR DEAD (launch sweep --resume {view.sweep_id})"
    if view.error:  # it stopped on an error the user must fix first: resuming would not help
        dead = f"SUPERVISOR STOPPED: {view.error}"
    supervisor = {"running": "supervisor running", "ended": "ended", "none": "", "dead": dead}
    words = [view.sweep_id, view.executor, supervisor.get(view.supervisor, view.supervisor),
             summary]
    return "  ".join(w for w in words if w)


def _active(view: SweepView) -> bool:
    return view.supervisor != "unsubmitted" and any(j.state not in ENDED_STATES
                                                   for j in view.jobs)


def render_sweeps(sweeps: Sequence[SweepView], snapshot: Snapshot | None,
                  one_sweep: bool = False) -> list[str]:
    """Return the jobs section: active sweeps with their jobs, the newest ended ones briefly."""
    if not sweeps:
        return ["no sweeps of yours, here or in your index (`launch sweep FILE` starts one)"]
    labels = _gpu_labels(snapshot)
    lines: list[str] = []
    recent = {id(v) for v in [v for v in sweeps if not _active(v)][-ENDED_SWEEPS_SHOWN:]}
    for view in sweeps:
        if view.supervisor == "unreadable":
            lines += ["", _sweep_title(view)]
        elif one_sweep or _active(view):
            lines += ["", _sweep_title(view), *_job_rows(view, labels, one_sweep)]
        elif id(view) in recent:
            lines += ["", _sweep_title(view)]
    return lines[1:]
