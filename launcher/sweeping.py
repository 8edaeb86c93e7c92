"""The sweep commands: start, resume and cancel a sweep, and hand it to Slurm.

The supervisor (supervisor.py) does the running; this module plans, writes the run
directory, starts the supervisor detached from the terminal, and follows it.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

from launcher import procs, rundir
from launcher.errors import UserError

SUPERVISOR_START_S = 10.0


def load_plan(file: str, overrides: list[str]):
    """Return the loaded sweep and its planned jobs."""
    from launcher import plan, sweepfile

    sweep = sweepfile.load_sweep(file, overrides)
    return sweep, plan.plan_jobs(sweep)


def job_files(plans) -> list[tuple[str, dict, str]]:
    """Return (job id, swept values, spec.json text) per job; commands go in resolved."""
    import json

    out = []
    for p in plans:
        if p.command is None:
            text = p.spec_json
        else:
            text = json.dumps({**p.spec, "command": list(p.command)}, sort_keys=True)
        out.append((p.job_id, dict(p.params), text))
    return out


def create_run_dir(sweep, plans, executor: str) -> Path:
    """Return the new sweep folder, with the plan and every job's spec written."""
    from launcher import plan

    sweep_id = plan.make_sweep_id(sweep.name, time.time())
    meta = {
        "name": sweep.name,
        "executor": executor,
        "grid_keys": sorted({k for p in plans for k in p.params}),
        "resources": dataclasses.asdict(sweep.resources),
        "slurm": dataclasses.asdict(sweep.slurm),
        "max_retries": sweep.max_retries,
        "timeout_min": sweep.timeout_min,
        "cwd": os.getcwd(),
        "source": str(Path(sweep.source_path).absolute()) if sweep.source_path else None,
    }
    return rundir.create_sweep(sweep_id, plan.resolved_yaml(sweep), meta, job_files(plans))


def start_sweep(
    file: str, overrides: list[str], executor: str | None, dry_run: bool, detach: bool
) -> int:
    """Plan a sweep and run it: print the plan, submit to Slurm, or supervise it here."""
    from launcher import placement, plan

    sweep, plans = load_plan(file, overrides)
    executor = executor or sweep.executor
    sweep = dataclasses.replace(sweep, executor=executor)
    if dry_run:
        print(plan.render_plan(sweep, plans))
        return 0
    if executor == "slurm":
        from launcher import slurm

        path = create_run_dir(sweep, plans, "slurm")
        try:
            job_ids = slurm.submit_sweep(sweep, plans, path)
        except BaseException:
            # Nothing was queued: a run directory left behind would show pending forever.
            import shutil

            shutil.rmtree(path, ignore_errors=True)
            raise
        print(path.name)
        print(f"submitted {plural(len(plans), 'job')} as Slurm job {', '.join(job_ids)}; "
              f"`launch status {path.name}` shows them", file=sys.stderr)
        return 0
    note = placement.check_devices(sweep.resources)
    if note:
        print(f"launch: {note}", file=sys.stderr)
    path = create_run_dir(sweep, plans, "local")
    warn_about_logout()
    spawn_supervisor(path)
    return after_start(path.name, len(plans), detach)


def warn_about_logout() -> None:
    """Say so where logind would kill the sweep at logout (launcher/logind.py)."""
    from launcher import logind

    note = logind.logout_warning(rundir.current_user())
    if note:
        print(f"launch: warning: {note}", file=sys.stderr)


def after_start(sweep_id: str, njobs: int, detach: bool) -> int:
    """Print the sweep id and return, or follow the sweep until it ends."""
    if detach:
        print(sweep_id)
        print(f"started {plural(njobs, 'job')}; `launch status {sweep_id}` shows them, "
              f"`launch logs {sweep_id} -f` follows", file=sys.stderr)
        return 0
    from launcher import follow

    return follow.follow_sweep(sweep_id)


def spawn_supervisor(path: Path) -> None:
    """Start the sweep's supervisor in its own session, detached from this terminal."""
    info_path = path / "supervisor.json"
    before = rundir.read_json(info_path)
    with open(path / "supervisor.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launcher.supervisor", str(path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    deadline = time.time() + SUPERVISOR_START_S
    while time.time() < deadline:
        info = rundir.read_json(info_path)
        if info and info != before and info.get("pid") == proc.pid:
            return
        if proc.poll() is not None:
            tail = (path / "supervisor.log").read_text()[-2000:]
            raise UserError(f"the supervisor of {path.name} exited at once:\n{tail}")
        time.sleep(0.02)
    raise UserError(f"the supervisor of {path.name} did not start; see {path}/supervisor.log")


RESUMABLE = ("failed", "cancelled", "timeout", "waiting", "preempted")


def resume_sweep(target: str, detach: bool) -> int:
    """Rerun what failed, was cancelled or never ran; finished jobs are never run again."""
    sweep_id = rundir.resolve_sweep_id(target)
    path = rundir.sweep_dir(sweep_id)
    info = rundir.read_sweep_info(sweep_id)
    if info.get("executor") == "slurm":
        from launcher import slurm

        return slurm.resume_sweep(path)
    if rundir.supervisor_alive(path):
        pid = rundir.read_json(path / "supervisor.json")["pid"]
        raise UserError(f"sweep {sweep_id} is running (supervisor pid {pid}); nothing to resume")
    rundir.clear_cancel_requests(path, [j["id"] for j in info["jobs"]])
    todo = 0
    for job in info["jobs"]:
        st = rundir.read_job_state(sweep_id, job["id"])
        if st["state"] in RESUMABLE:
            rundir.write_job_state(sweep_id, job["id"], {**st, "state": "pending", "reason": None})
        if st["state"] != "finished":
            todo += 1
    if not todo:
        print(f"nothing to resume: all {len(info['jobs'])} jobs of {sweep_id} finished")
        return 0
    warn_about_logout()
    spawn_supervisor(path)
    return after_start(sweep_id, todo, detach)


def plural(n: int, word: str) -> str:
    """Return "1 job", "2 jobs": n and the word, with an s unless n is 1."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def state_counts(states) -> str:
    """Return how many of states are in each state, e.g. "3 finished, 1 failed"."""
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def nothing_to_cancel(sweep_id: str, only: str | None, before: dict[str, str]) -> str:
    """Return what `launch cancel` says when every job it names has ended already."""
    if only:
        return f"nothing to cancel: job {only} of {sweep_id} has ended ({before[only]})"
    n = len(before)
    every = "the only job" if n == 1 else f"all {n} jobs"
    return (f"nothing to cancel: {every} of {sweep_id} "
            f"{'has' if n == 1 else 'have'} ended ({state_counts(before.values())})")


def cancel_summary(sweep_id: str, only: str | None, before: dict[str, str],
                   after: dict[str, str]) -> str:
    """Return what `launch cancel` says it did, from the job states before and after it.

    A job that ended some other way meanwhile (it finished during the grace) is said so.
    """
    live = [j for j, s in before.items() if s not in rundir.ENDED_STATES]
    stopped = [j for j in live if after[j] == "cancelled"]
    still = [j for j in live if after[j] not in rundir.ENDED_STATES]
    other = [after[j] for j in live if j not in stopped and j not in still]
    if only:
        if still:
            return (f"cancelling job {only} of {sweep_id} (it was {before[only]}); it is still "
                    f"stopping (`launch status {sweep_id}` shows it)")
        if other:
            return f"job {only} of {sweep_id} ended {other[0]} before it could be cancelled"
        return f"cancelled job {only} of {sweep_id} (it was {before[only]})"
    running = sum(before[j] == "running" for j in stopped)
    parts = []
    if running:
        parts.append(f"{running} {'was' if running == 1 else 'were'} running")
    if len(stopped) > running:
        queued = len(stopped) - running
        parts.append(f"{queued} {'was' if queued == 1 else 'were'} queued")
    text = f"cancelled {plural(len(stopped), 'job')} of {sweep_id}"
    text += f" ({', '.join(parts)})" if parts else ""
    ended = [s for j, s in before.items() if j not in live]
    if ended:
        text += f"; {len(ended)} had ended already ({state_counts(ended)})"
    if other:
        own = "its" if len(other) == 1 else "their"
        text += f"; {len(other)} ended on {own} own meanwhile ({state_counts(other)})"
    if still:
        text += f"; {len(still)} still stopping (`launch status {sweep_id}` shows them)"
    return text


def cancel(target: str, grace_s: float) -> int:
    """Cancel a sweep or one job: SIGTERM to its processes, SIGKILL after grace_s."""
    sweep_id, only = rundir.split_target(target)
    path = rundir.sweep_dir(sweep_id)
    info = rundir.read_sweep_info(sweep_id)
    job_ids = [only] if only else [j["id"] for j in info["jobs"]]
    before = {j: rundir.read_job_state(sweep_id, j)["state"] for j in job_ids}
    if all(s in rundir.ENDED_STATES for s in before.values()):
        # An ended state is final (a retry goes back to pending first): no mark, no signal.
        print(nothing_to_cancel(sweep_id, only, before))
        return 0
    if info.get("executor") == "slurm":
        from launcher import slurm

        return slurm.cancel(path, job_ids if only else None)
    rundir.request_cancel(path, only, grace_s)
    if rundir.supervisor_alive(path):
        # The supervisor sees the request within a second, signals and records the ends.
        wait_for_ended(sweep_id, job_ids, grace_s + 10)
    else:
        found = procs.job_processes(sweep_id, only)
        procs.stop_processes([p for ps in found.values() for p in ps], grace_s)
        for job_id in job_ids:
            st = rundir.read_job_state(sweep_id, job_id)
            if st["state"] not in rundir.ENDED_STATES:
                rundir.write_job_state(sweep_id, job_id, {**st, "state": "cancelled",
                                                          "ended": time.time()})
    after = {j: rundir.read_job_state(sweep_id, j)["state"] for j in job_ids}
    print(cancel_summary(sweep_id, only, before, after))
    return 0


def wait_for_ended(sweep_id: str, job_ids: list[str], timeout_s: float) -> None:
    """Wait until every job has ended, at most timeout_s (cancel_summary names the rest)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        states = [rundir.read_job_state(sweep_id, j)["state"] for j in job_ids]
        if all(s in rundir.ENDED_STATES for s in states):
            return
        time.sleep(0.1)


def write_sbatch_script(file: str, overrides: list[str], output: str) -> int:
    """Write a standalone Slurm array script and the run directory it fills."""
    from launcher import sbatch

    out = Path(output).absolute()
    if not out.parent.is_dir():
        raise UserError(f"cannot write {output}: folder {out.parent} does not exist")
    sweep, plans = load_plan(file, overrides)
    path = create_run_dir(sweep, plans, "slurm")
    try:
        # slurm.json records the script, so that status can say it waits for `sbatch` to run
        text = sbatch.write_sbatch(sweep, plans, path, script=out)
        out.write_text(text)
    except BaseException:
        import shutil  # a run dir without its script would show pending forever

        shutil.rmtree(path, ignore_errors=True)
        raise
    print(f"wrote {output} for sweep {path.name} ({len(plans)} jobs); submit: sbatch {output}")
    return 0
