"""`launch sweep`: plan a sweep file and run it here or submit it to Slurm; `--resume` one.

The supervisor (launcher/local/supervisor.py) does the running; this module plans, writes
the run directory, starts the supervisor detached from the terminal, and follows it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path

from launcher.errors import UserError
from launcher.rundir import index
from launcher.rundir import state as js
from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import read_state, write_state
from launcher.rundir.sweepdir import (
    JobEntry,
    clear_cancel_requests,
    create_sweep,
    new_info,
    read_info,
    read_supervisor,
    supervisor_alive,
    update_plan,
)
from launcher.show.text import counted, plural


def load_plan(file: str, overrides: list[str], executor: str | None = None):
    """Return the loaded sweep (run by executor, else the file's) and its planned jobs."""
    from launcher.config import plan, sweepfile

    sweep = sweepfile.load_sweep(file, overrides)
    sweep = dataclasses.replace(sweep, executor=executor or sweep.executor)
    return sweep, plan.plan_jobs(sweep)


def spec_text(p) -> str:
    """Return the spec a job runs, as JSON text: commands go in with their argv resolved."""
    if p.command is None:
        return p.spec_json
    return json.dumps({**p.spec, "command": list(p.command)}, sort_keys=True)


def create_run_dir(sweep, plans, executor: str) -> SweepPaths:
    """Return the new sweep folder, with the plan and every job's spec written."""
    from launcher.config import plan
    from launcher.config.ids import make_sweep_id

    info = new_info(
        make_sweep_id(sweep.name), sweep.name, executor,
        [JobEntry(p.job_id, dict(p.params)) for p in plans],
        grid_keys=tuple(sorted({k for p in plans for k in p.params})),
        resources=sweep.resources.to_json(), slurm=sweep.slurm.to_json(),
        max_retries=sweep.max_retries, oom_retries=sweep.oom_retries,
        timeout_min=sweep.timeout_min, cwd=os.getcwd(),
        source=str(Path(sweep.source_path).absolute()) if sweep.source_path else None,
        notify=sweep.notify.to_json() if sweep.notify else {})
    if sweep.notify and executor == "slurm":
        from launcher.local.notify import SLURM_NOTE

        print(f"launch: warning: {SLURM_NOTE}", file=sys.stderr)
    paths = create_sweep(info, plan.resolved_yaml(sweep), [spec_text(p) for p in plans])
    index.record(paths, info.created)  # found from any folder (launcher/rundir/index.py)
    return paths


def start_sweep(
    file: str, overrides: list[str], executor: str | None, dry_run: bool, detach: bool
) -> int:
    """Plan a sweep and run it: print the plan, submit to Slurm, or supervise it here."""
    from launcher.config import plan

    sweep, plans = load_plan(file, overrides, executor)
    executor = sweep.executor
    # The same checks with --dry-run as before a real start: a dry run that passes a sweep
    # the machine can never run would only move the error to later.
    check_programs(plans, where_jobs_run="here" if executor == "local" else "slurm")
    if executor == "local":
        check_machine(sweep.resources)
    if dry_run:
        print(plan.render_plan(sweep, plans))
        return 0
    if executor == "slurm":
        from launcher.slurm import submit

        paths = create_run_dir(sweep, plans, "slurm")
        try:
            job_ids = submit.submit_sweep(sweep, plans, paths)
        except BaseException:
            # Nothing was queued: a run directory left behind would show pending forever.
            import shutil

            shutil.rmtree(paths.root, ignore_errors=True)
            index.forget({str(paths.root)})
            raise
        print(paths.sweep_id)
        print(f"submitted {plural(len(plans), 'job')} as Slurm job {', '.join(job_ids)}; "
              f"`launch status {paths.sweep_id}` shows them", file=sys.stderr)
        return 0
    paths = create_run_dir(sweep, plans, "local")
    return supervise(paths, len(plans), detach)


def check_machine(resources) -> None:
    """Make the checks a local start makes of this machine: GPUs there, or a note why not;
    a sweep whose jobs could never start here is an error."""
    import dataclasses
    from datetime import datetime

    from launcher.config import rules as house_rules
    from launcher.machine import feasible
    from launcher.machine.users import current_user

    needs = resources.needs()
    feasible.check_cpu_budget(needs)
    # No job starts under a broken rules file; one that can never start is said now.
    rules, user = house_rules.read_rules(), current_user()
    never = house_rules.never_fits(rules, user, needs.gpus, needs.cpus)
    if never:
        raise UserError(never)
    reserved = house_rules.in_force(rules, user, datetime.now()).reserved
    if reserved:
        needs = needs._replace(policy=dataclasses.replace(needs.policy, reserved=reserved))
    note = feasible.check_devices(needs)
    if note:
        print(f"launch: {note}", file=sys.stderr)
    for warning in feasible.machine_warnings(needs) if not note else ():
        print(f"launch: warning: {warning}", file=sys.stderr)


def check_programs(plans, where_jobs_run: str) -> None:
    """Raise when a command job's program is not there to run (here: an error; on Slurm,
    whose nodes may differ, a warning): `pythn` must not fail only once the job starts."""
    import shutil

    cwd = Path.cwd()
    for program in dict.fromkeys(p.command[0] for p in plans if p.command):
        if "/" in program:
            path = cwd / Path(program).expanduser()
            found = path.is_file() and os.access(path, os.X_OK)
            why = f"{path} is not an executable file"
        else:
            found = shutil.which(program) is not None
            why = f"no program {program!r} on PATH"
        if found:
            continue
        text = f"job.command: {why}; a job would fail at its start"
        if where_jobs_run == "here":
            raise UserError(text)
        print(f"launch: warning: {text} here (the Slurm nodes may have it)", file=sys.stderr)


def supervise(paths: SweepPaths, njobs: int, detach: bool,
              finished_before: set[str] | frozenset = frozenset()) -> int:
    """Start the sweep's supervisor here, then follow the sweep or return at once.

    finished_before names the jobs that had finished before this start (a resume), which the
    follower counts instead of listing.
    """
    from launcher.local.spawn import spawn_supervisor

    warn_about_logout()
    spawn_supervisor(paths)
    if detach:
        print(paths.sweep_id)
        print(f"started {plural(njobs, 'job')}; `launch status {paths.sweep_id}` shows them, "
              f"`launch logs {paths.sweep_id} -f` follows", file=sys.stderr)
        return 0
    from launcher.show import follow

    return follow.follow_sweep(paths, finished_before=finished_before)


def warn_about_logout() -> None:
    """Say so where logind would kill the sweep at logout (launcher/local/logind.py)."""
    from launcher.local import logind
    from launcher.machine.users import current_user

    note = logind.logout_warning(current_user())
    if note:
        print(f"launch: warning: {note}", file=sys.stderr)


def restart_jobs(paths: SweepPaths, names: list[str], job_ids: list[str]) -> None:
    """Make the named jobs begin again: their checkpoints, metrics and result go."""
    from launcher.rundir.names import pick_job

    for name in names:
        job = paths.job(pick_job(paths.sweep_id, name, job_ids))
        for path in (job.checkpoint_pt, job.checkpoint_previous, job.metrics_jsonl,
                     job.result_json):
            path.unlink(missing_ok=True)
        write_state(job, read_state(job)._replace(state=js.PENDING, reason="restarted"))
        print(f"restarting {job.job_id} from its beginning", file=sys.stderr)


def resume_sweep(target: str | None, overrides: list[str], detach: bool,
                 dry_run: bool = False, restart: list[str] | None = None) -> int:
    """Rerun what failed, was cancelled or never ran; finished jobs are never run again
    (unless named in restart, which also begins them again from the start).

    target None is the user's newest sweep. overrides may change how jobs run, never what
    they compute (launcher/config/resume.py); with dry_run nothing is written or started.
    """
    from launcher.commands.picking import pick

    paths = pick(target).paths
    info = read_info(paths)
    changes = {}
    if overrides:
        from launcher.config.resume import resume_changes

        changes = resume_changes(info._asdict(), overrides)
    if dry_run:
        print(resume_plan(paths, info, changes, overrides, restart or []))
        return 0
    if restart:
        if supervisor_alive(paths):
            raise UserError(f"sweep {paths.sweep_id} is running: cancel the job first "
                            "(launch cancel SWEEP/JOB), then --resume --restart it")
        restart_jobs(paths, restart, info.job_ids)
    if info.executor == "local" and supervisor_alive(paths):
        pid = read_supervisor(paths).pid
        raise UserError(f"sweep {paths.sweep_id} is running (supervisor pid {pid}); "
                        "nothing to resume")
    if changes:
        update_plan(paths, changes, note=f"resumed with {shlex.join(overrides)}")
        info = read_info(paths)
    if info.executor == "slurm":
        from launcher.slurm import submit

        return submit.resume_sweep(paths)
    from launcher.config.sweepfile import Resources

    # The checks a fresh start makes: a machine that lost its driver since must not start
    # a supervisor that stops on it at once.
    check_machine(Resources.from_json(info.resources))
    clear_cancel_requests(paths, info.job_ids)
    todo, finished = 0, set()
    for job_id in info.job_ids:
        job = paths.job(job_id)
        st = read_state(job)
        # A job whose supervisor died while stopping what it left: the new supervisor stops
        # the rest and ends it as its main process did; a failure runs again like any other.
        if st.state == js.STOPPING and js.end_of_run(st.exit_code, st.signal, None,
                                                       0).state in js.RESUMABLE:
            st = st._replace(state=js.FAILED)
        if st.state in js.RESUMABLE:
            write_state(job, st._replace(state=js.PENDING, reason=None))
        if st.state != js.FINISHED:
            todo += 1
        else:
            finished.add(job_id)
    if not todo:
        print(f"nothing to resume: all {len(info.jobs)} jobs of {paths.sweep_id} finished")
        return 0
    return supervise(paths, todo, detach, finished_before=finished)


def resume_plan(paths: SweepPaths, info, changes: dict, overrides: list[str],
                restart: list[str]) -> str:
    """Return what a resume would do, for --dry-run: the jobs it reruns, what it changes."""
    from launcher.rundir.names import pick_job

    states = {job_id: read_state(paths.job(job_id)).state for job_id in info.job_ids}
    for name in restart:
        states[pick_job(paths.sweep_id, name, info.job_ids)] = "restarted from its beginning"
    todo = [j for j, s in states.items() if s != js.FINISHED]
    kept = len(states) - len(todo)
    lines = [f"a resume of {paths.sweep_id} would rerun {plural(len(todo), 'job')}"
             + (f" ({counted(states[j] for j in todo)})" if todo else "")
             + f"; {kept} finished stay as they are"]
    width = max([len(j) for j in todo] + [0])
    lines += [f"  {j:<{width}}  {states[j]}" for j in todo]
    if info.executor == "slurm":
        lines.append("jobs still in Slurm's queue are left there, not submitted again")
    old = info._asdict()
    for text in overrides:  # what each override makes of its key, and what it was
        key = text.partition("=")[0].strip()
        top, _, sub = key.partition(".")
        new, was = changes.get(top), old.get(top)
        if sub:
            new, was = (new or {}).get(sub), (was or {}).get(sub)
        lines.append(f"with {key}={new} (was {was})")
    lines.append("dry run: nothing written, nothing started")
    return "\n".join(lines)
