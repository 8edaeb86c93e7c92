"""The run directory's layout: the one place that names the files under `runs/`.

    runs/<sweep-id>/          SweepPaths
        sweep.yaml            the sweep file as resolved (defaults filled, overrides applied)
        sweep.json            the plan: every job's id and swept values, the resources
        specs.jsonl           every job's resolved spec, one line each
        supervisor.json       the local supervisor's pid and host (and the error it stopped on)
        supervisor.log        what it did, one timestamped line per event
        cancel                present: `launch cancel` asked to stop the whole sweep
        slurm.json, slurm/    the Slurm submission and its logs
        jobs/<job-id>/        JobPaths: spec.json, state.json, stdout.log, cancel, and what the
                              job itself writes: its result, metrics, progress and
                              checkpoints, under the names launcher/contract.py gives them

Plain files, not a database, because Slurm jobs on other nodes write them over NFS. The two
records are small slotted classes, not NamedTuples or dataclasses: `launch status` builds
them first thing, and defining a NamedTuple with properties costs it a millisecond.
"""

from __future__ import annotations

import os
from pathlib import Path

from launcher import contract

RUNS_DIR_ENV = "LAUNCH_RUNS_DIR"
# What the run directory's own names are made of, as regex character ranges: a sweep's name
# (its id is the name, "-", the time: config/ids.py) and a job id (its swept values made
# safe, "-", a hash), so that no name is a path, an option or a shell's delight.
NAME_CHARS = "A-Za-z0-9._-"
JOB_ID_CHARS = "A-Za-z0-9._=-"


def runs_dir() -> Path:
    """Return the runs root: $LAUNCH_RUNS_DIR, or ./runs."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs").absolute()


class _Folder:
    """A folder of the run directory, compared and hashed by its path."""

    __slots__ = ()

    def __init__(self, path: Path) -> None:
        object.__setattr__(self, self.__slots__[0], Path(path))

    def _path(self) -> Path:
        return getattr(self, self.__slots__[0])

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._path() == self._path()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._path()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._path())!r})"


class JobPaths(_Folder):
    """The files of one job of a sweep; `dir` is its folder, named by its id."""

    __slots__ = ("dir",)

    @property
    def job_id(self) -> str:
        return self.dir.name

    @property
    def sweep(self) -> SweepPaths:
        """Return the paths of the sweep this job belongs to."""
        return SweepPaths(self.dir.parent.parent)

    @property
    def spec_json(self) -> Path:
        """The job's resolved spec, written when it first runs (built-in jobs only)."""
        return self.dir / "spec.json"

    @property
    def state_json(self) -> Path:
        """The job's state record (launcher/rundir/state.py), written by its executor."""
        return self.dir / "state.json"

    @property
    def stdout_log(self) -> Path:
        """Everything the job printed, every run appended."""
        return self.dir / "stdout.log"

    @property
    def cancel_mark(self) -> Path:
        """Present: `launch cancel` asked to stop this job."""
        return self.dir / "cancel"

    @property
    def result_json(self) -> Path:
        return self.dir / contract.RESULT_FILE

    @property
    def metrics_jsonl(self) -> Path:
        return self.dir / contract.METRICS_FILE

    @property
    def checkpoint_pt(self) -> Path:
        return self.dir / contract.CHECKPOINT_FILE

    @property
    def checkpoint_previous(self) -> Path:
        return self.dir / contract.CHECKPOINT_PREVIOUS_FILE

    @property
    def progress_json(self) -> Path:
        """Where the built-in job's epoch in progress stands (docs/design.md: the job contract)."""
        return self.dir / contract.PROGRESS_FILE


class SweepPaths(_Folder):
    """The files of one sweep; `root` is its folder, named by its id."""

    __slots__ = ("root",)

    @classmethod
    def of(cls, sweep_id: str, runs: Path | None = None) -> SweepPaths:
        """Return the paths of sweep_id under runs (default: runs_dir())."""
        return cls((runs or runs_dir()) / sweep_id)

    @property
    def sweep_id(self) -> str:
        return self.root.name

    @property
    def runs(self) -> Path:
        """The runs root this sweep lives in."""
        return self.root.parent

    def job(self, job_id: str) -> JobPaths:
        """Return the paths of one job of this sweep."""
        return JobPaths(self.root / "jobs" / job_id)

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def sweep_yaml(self) -> Path:
        return self.root / "sweep.yaml"

    @property
    def sweep_json(self) -> Path:
        return self.root / "sweep.json"

    @property
    def specs_jsonl(self) -> Path:
        return self.root / "specs.jsonl"

    @property
    def supervisor_json(self) -> Path:
        return self.root / "supervisor.json"

    @property
    def supervisor_log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def supervisor_lock(self) -> Path:
        """flocked by the supervisor for its whole life: one supervisor per sweep."""
        return self.root / "supervisor.lock"

    @property
    def cancel_mark(self) -> Path:
        """Present: `launch cancel` asked to stop every job of the sweep."""
        return self.root / "cancel"

    @property
    def slurm_json(self) -> Path:
        """How the sweep went to Slurm: the arrays, job id -> Slurm task id, the script."""
        return self.root / "slurm.json"

    @property
    def slurm_dir(self) -> Path:
        """submitit's folder (pickles, results) and the array tasks' logs."""
        return self.root / "slurm"

    @property
    def slurm_jobs_txt(self) -> Path:
        """`launch sbatch`: line i+1 is the job id of array index i."""
        return self.slurm_dir / "jobs.txt"

    @property
    def slurm_script(self) -> Path:
        """`launch sbatch`: a copy of the array script."""
        return self.slurm_dir / "sweep.sbatch"

    def slurm_log(self, pattern: str, stream: str = "out") -> Path:
        """Return where array tasks log; pattern is in Slurm's terms, e.g. "%A_%a" (--output)."""
        return self.slurm_dir / f"{pattern}.{stream}"
