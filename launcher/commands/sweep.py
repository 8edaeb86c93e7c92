"""`launch sweep`: plan a sweep file and run it here or submit it to Slurm; `--resume` one.

The supervisor (launcher/local/supervisor.py) does the running; this module plans, writes
the run directory, starts the supervisor detached from the terminal, and follows it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from launcher.errors import UserError
from launcher.rundir import state as js
from launcher.rundir.layout import SweepPaths
from launcher.rundir.names import resolve_sweep
from launcher.rundir.state import read_state, write_state
from launcher.rundir.sweepdir import (
    JobEntry,
    clear_cancel_requests,
    create_sweep,
    new_info,
    read_info,
    read_supervisor,
    supervisor_alive,
)
from launcher.show.text import plural


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

    info = new_info(
        plan.make_sweep_id(sweep.name), sweep.name, executor,
        [JobEntry(p.job_id, dict(p.params)) for p in plans],
        grid_keys=tuple(sorted({k for p in plans for k in p.params})),
        resources=sweep.resources.to_json(), slurm=sweep.slurm.to_json(),
        max_retries=sweep.max_retries, timeout_min=sweep.timeout_min, cwd=os.getcwd(),
        source=str(Path(sweep.source_path).absolute()) if sweep.source_path else None)
    return create_sweep(info, plan.resolved_yaml(sweep), [spec_text(p) for p in plans])


def start_sweep(
    file: str, overrides: list[str], executor: str | None, dry_run: bool, detach: bool
) -> int:
    """Plan a sweep and run it: print the plan, submit to Slurm, or supervise it here."""
    from launcher.config import plan

    sweep, plans = load_plan(file, overrides, executor)
    executor = sweep.executor
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
            raise
        print(paths.sweep_id)
        print(f"submitted {plural(len(plans), 'job')} as Slurm job {', '.join(job_ids)}; "
              f"`launch status {paths.sweep_id}` shows them", file=sys.stderr)
        return 0
    check_machine(sweep.resources)
    paths = create_run_dir(sweep, plans, "local")
    return supervise(paths, len(plans), detach)


def check_machine(resources) -> None:
    """Make the checks a local start makes of this machine: GPUs there, or a note why not."""
    import dataclasses
    from datetime import datetime

    from launcher.config import rules as house_rules
    from launcher.machine import placement
    from launcher.machine.users import current_user

    needs = resources.needs()
    placement.check_cpu_budget(needs)
    # No job starts under a broken rules file; one that can never start is said now.
    rules, user = house_rules.read_rules(), current_user()
    never = house_rules.never_fits(rules, user, needs.gpus, needs.cpus)
    if never:
        raise UserError(never)
    reserved = house_rules.in_force(rules, user, datetime.now()).reserved
    if reserved:
        needs = needs._replace(policy=dataclasses.replace(needs.policy, reserved=reserved))
    note = placement.check_devices(needs)
    if note:
        print(f"launch: {note}", file=sys.stderr)


def supervise(paths: SweepPaths, njobs: int, detach: bool) -> int:
    """Start the sweep's supervisor here, then follow the sweep or return at once."""
    from launcher.local.spawn import spawn_supervisor

    warn_about_logout()
    spawn_supervisor(paths)
    if detach:
        print(paths.sweep_id)
        print(f"started {plural(njobs, 'job')}; `launch status {paths.sweep_id}` shows them, "
              f"`launch logs {paths.sweep_id} -f` follows", file=sys.stderr)
        return 0
    from launcher.show import follow

    return follow.follow_sweep(paths)


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


def resume_sweep(target: str, detach: bool, restart: list[str] | None = None) -> int:
    """Rerun what failed, was cancelled or never ran; finished jobs are never run again
    (unless named in restart, which also begins them again from the start)."""
    paths = resolve_sweep(target)
    info = read_info(paths)
    if restart:
        if supervisor_alive(paths):
            raise UserError(f"sweep {paths.sweep_id} is running: cancel the job first "
                            "(launch cancel SWEEP/JOB), then --resume --restart it")
        restart_jobs(paths, restart, info.job_ids)
    if info.executor == "slurm":
        from launcher.slurm import submit

        return submit.resume_sweep(paths)
    if supervisor_alive(paths):
        pid = read_supervisor(paths).pid
        raise UserError(f"sweep {paths.sweep_id} is running (supervisor pid {pid}); "
                        "nothing to resume")
    from launcher.config.sweepfile import Resources

    # The checks a fresh start makes: a machine that lost its driver since must not start
    # a supervisor that stops on it at once.
    check_machine(Resources.from_json(info.resources))
    clear_cancel_requests(paths, info.job_ids)
    todo = 0
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
    if not todo:
        print(f"nothing to resume: all {len(info.jobs)} jobs of {paths.sweep_id} finished")
        return 0
    return supervise(paths, todo, detach)
